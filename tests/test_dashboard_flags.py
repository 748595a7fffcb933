"""Garbled-output flags and sampler cost, written beside the rollout store (rl/dashboard/flags.py)."""

from rl.store import RolloutStore
from rollout.record import RolloutRecord


def _rec(i: int, text: str, ids: list[int]) -> RolloutRecord:
    return RolloutRecord(
        prompt_id=f"p{i}", group_index=i, task="math", policy_version=0, prompt_ids=[1, 2],
        prompt_mask=[1, 1], response_ids=ids, response_text=text, num_forwards=7,
        unmask_step=[0, 3, 1], timings={"gen_s": 0.25},
    )


def test_flags_written_per_step_and_truncated(tmp_path):
    store = RolloutStore(tmp_path)
    clean = _rec(0, "the answer is 4 because two plus two is four", [5, 9, 11])
    looped = _rec(1, "go go go go go go go go go go", [5, 5, 5])
    broken = _rec(2, "4\ufffd\ufffd\x00\x01 ok", [3, 70000, 8])
    store.append(1, [clean, looped, broken])
    rows = {r["prompt_id"]: r for r in store.read_flags(1)}
    assert [rows[p]["flagged"] for p in ("p0", "p1", "p2")] == [False, True, True]
    assert rows["p0"]["repetition"] == 0.0 and rows["p1"]["repetition"] > 0.5
    assert rows["p2"]["nonprintable"] > 0.05 and rows["p2"]["max_token_id"] == 70000
    assert rows["p0"]["num_forwards"] == 7 and rows["p0"]["tokens"] == 3
    assert rows["p0"]["last_unmask_step"] == 3 and rows["p0"]["gen_s"] == 0.25
    assert store.read_all().num_rows == 3  # the rollout dataset does not pick up the flag files
    store.append(2, [clean])
    store.truncate_after(1)
    assert not (store.flags_root / "step=2").exists() and (store.flags_root / "step=1").exists()


def test_flags_per_step_served(tmp_path):
    """The flagged share per step, from the store's flag files through /api/run/<id>/flags."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from rl.dashboard.runs import RunRegistry
    from rl.dashboard.server import build_app

    run = tmp_path / "run1"
    store = RolloutStore(run)
    store.append(1, [_rec(0, "a fine answer here", [1]), _rec(1, "x x x x x x x x", [2])])
    store.append(2, [_rec(0, "a fine answer here", [1])])
    (run / "metrics.jsonl").write_text("")
    registry = RunRegistry([run])
    (run_id,) = registry.runs

    async def fetch():
        async with TestClient(TestServer(build_app(registry, hosts=frozenset({"127.0.0.1"})))) as client:
            resp = await client.get(f"/api/run/{run_id}/flags", headers={"Host": "127.0.0.1"})
            return resp.status, await resp.json()

    status, body = asyncio.run(fetch())
    assert status == 200
    assert [(s["step"], s["rollouts"], s["flagged_share"]) for s in body["steps"]] == [(1, 2, 0.5), (2, 1, 0.0)]
    assert body["steps"][0]["nfe"] == 7
