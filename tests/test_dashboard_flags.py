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


def test_cut_and_odd_token_ids_need_the_layout(tmp_path):
    """Text: cut = no EOS among the ids, odd = ids before the EOS outside the text vocabulary or [MASK];
    image: odd = ids outside the image-token range. Without the layout neither is known (null)."""
    from rl.dashboard.flags import TokenRanges, per_step

    ranges = TokenRanges(eos_id=2, mask_id=99, text_end=100, image_lo=100, image_hi=116)
    ended = _rec(0, "the answer is 4", [5, 9, 2, 2])            # EOS at 2: length 2, fine
    cut = _rec(1, "the answer is", [5, 9, 11, 12])              # no EOS: ran into the length limit
    odd = _rec(2, "the answer", [5, 99, 100, 2])                # [MASK] and an image id in a text answer
    late = _rec(3, "fine", [5, 2, 500, 99])                     # ids after the EOS are padding: not odd
    image_ok = _rec(4, "", [100, 115, 107])
    image_odd = _rec(5, "", [100, 7, 116])
    for r in (image_ok, image_odd):
        r.task = "t2i"
    store = RolloutStore(tmp_path, ranges=ranges)
    store.append(1, [ended, cut, odd, late, image_ok, image_odd])
    rows = {r["prompt_id"]: r for r in store.read_flags(1)}
    got = {p: (rows[p]["length"], rows[p]["cut"], rows[p]["odd_ids"], rows[p]["flagged"]) for p in rows}
    assert got == {"p0": (2, False, 0, False), "p1": (4, True, 0, True), "p2": (3, False, 2, True),
                   "p3": (1, False, 0, False), "p4": (3, False, 0, False), "p5": (3, False, 2, True)}
    (step,) = per_step(tmp_path)
    assert step["flagged_share"] == 3 / 6 and step["cut_share"] == 1 / 6 and step["odd_ids_share"] == 2 / 6
    RolloutStore(tmp_path / "old").append(1, [cut, odd])       # no layout: unknown, and nothing flagged
    assert [(r["cut"], r["odd_ids"], r["flagged"]) for r in RolloutStore(tmp_path / "old").read_flags(1)] == \
        [(None, None, False), (None, None, False)]


def test_token_ranges_from_a_policy_directory(tmp_path):
    from policy.config import MMadaConfig
    from policy.tiny import build_tiny_policy
    from policy.vocab import VocabLayout
    from rl.builders import token_ranges

    path = build_tiny_policy(tmp_path / "tiny", codebook_size=16, seed=0)
    ranges = token_ranges(path)
    layout = VocabLayout.from_model_config(MMadaConfig.from_pretrained(path))
    assert (ranges.eos_id, ranges.text_end, ranges.image_lo, ranges.image_hi) == (
        layout.eos_id, layout.text_vocab_size, layout.image_offset, layout.image_offset + 16)


def test_flag_worker_and_version_filters_on_the_index(tmp_path):
    """The rollouts API keeps flagged / unflagged rows, one reason, one worker, one version; rows carry
    their flags and sampler cost; each step's stats count the flagged rollouts (the overview's chart)."""
    from dashboard_runs import make_run

    from rl.dashboard.runs import RunRegistry

    run = make_run(tmp_path / "f", steps=3)       # per step: response (0, 1) cut, (1, 0) an odd id
    (old := tmp_path / "old").mkdir()
    RolloutStore(old).append(1, [_rec(0, "a fine answer", [1, 2])])
    (old / "rollouts_flags").rename(old / "gone")  # a store written before the flag files
    reg = RunRegistry([run, old])
    for r in reg.runs.values():
        r.refresh()
    idx = reg.get("f").rollouts

    def rows(**f):
        page = idx.rollouts(f, "step", True, 0, 200)
        return page["total"], {(x["step"], x["group"], x["gi"]) for x in page["rows"]}, page["rows"]

    total, cut, listed = rows(flag="cut")
    assert total == 3 and {(g, i) for _, g, i in cut} == {(0, 1)} and all(x["flags"] == ["cut"] for x in listed)
    assert {(g, i) for _, g, i in rows(flag="odd_ids")[1]} == {(1, 0)}
    assert rows(flag="any")[0] == 6 and rows(flag="none")[0] == 18 and rows(flag="repetition")[0] == 0
    assert rows(worker="rollout-1")[0] == 12 and all((g + i) % 2 == 1 for _, g, i in rows(worker="rollout-1")[1])
    assert rows(version=1, worker="rollout-0", flag="any")[0] == 0  # both flagged responses ran on rollout-1
    total, keys, listed = rows(version=1, worker="rollout-1", flag="cut")
    assert total == 1 and keys == {(2, 0, 1)}
    x = listed[0]
    assert (x["worker"], x["nfe"], x["length"], x["last_unmask"]) == ("rollout-1", 8, 8, 7)
    assert abs(x["gen_s"] - 0.1) < 1e-6
    assert rows(length_max=6)[0] == 21  # EOS after 6 ids, except the cut response (8)
    stats = idx.step_stats(100)
    assert [(s["flags_known"], s["flagged"], s["flag_cut"], s["flag_odd_ids"]) for s in stats] == [(8, 2, 1, 1)] * 3
    assert idx.summary()["workers"] == ["rollout-0", "rollout-1"]
    before = reg.get("old").rollouts
    assert before.rollouts({"flag": "any"}, "step", True, 0, 5)["total"] == 0   # unknown: neither flagged
    assert before.rollouts({"flag": "none"}, "step", True, 0, 5)["total"] == 0  # nor known clean
    row = before.rollouts({}, "step", True, 0, 5)["rows"][0]
    assert row["flags"] is None and row["worker"] is None and row["nfe"] == 7 and row["length"] == 2


def test_group_view_marks_tokens_that_differ_from_the_groups_most_common():
    from rl.dashboard.rollouts import _unpadded, token_diff

    rows = [[5, 6, 7], [5, 6, 7], [5, 8, 9], [4, 6]]  # the last one ended early: not counted at position 2
    assert token_diff(rows) == [[False, False, False], [False, False, False], [False, True, True], [True, False]]
    assert token_diff([[1], [2]]) == [[False], [True]]  # a tie: the smaller id is the reference
    assert _unpadded([3, 4, 0, 0, 0]) == [3, 4, 0] and _unpadded([3, 4]) == [3, 4] and _unpadded([0, 0]) == [0]
