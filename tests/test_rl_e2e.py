"""The distributed loop end to end on CPU: real Ray rollout, reward and DeepSpeed learner actors."""

import json
import time
from pathlib import Path

import pytest

from rl.builders import reward_specs
from rl.cli import main as cli_main
from rl.config import load_config
from rl.driver import Driver

ROOT = Path(__file__).resolve().parent.parent
FAST = [
    "rollout.text.gen_length=8", "rollout.text.steps=4", "rollout.text.block_length=8",
    "data.prompts_per_step=4", "rollout.group_size=4", "run.plot=false",
]
TIMING_KEYS = ("time/", "throughput/", "span/", "learner/compute_s", "learner/old_ref_logprob_s")  # span/*: when phases ran


def run(tmp_path, name, overrides, steps=None, resume=False):
    cfg = load_config(None, FAST + [f"run.dir={tmp_path}", f"run.name={name}", *overrides])
    driver = Driver(cfg, resume=resume, console=False)
    try:
        driver.setup()
        summary = driver.train()
    finally:
        driver.shutdown()
    return driver, summary


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def comparable(m):
    return {k: v for k, v in m.items() if not k.startswith(TIMING_KEYS)}


def test_three_steps_two_learner_ranks(ray_cluster, tmp_path):
    # math and format without weights: both take the reward's own default, as `rewards check` does
    driver, summary = run(tmp_path, "e2e", ["run.steps=3", "learner.num_ranks=2", "run.checkpoint_every=3",
                                            "rewards.functions=[{name: math}, {name: format}]"])
    run_dir = tmp_path / "e2e"
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["rollouts"] == 16 for r in rows) and rows[-1]["policy_version"] == 3
    assert all("learner/loss" in r for r in rows)
    table = driver.store.read_all()  # the whole run, as the dashboard and replay read it
    assert table.num_rows == 48 and sorted(set(table.column("step").to_pylist())) == [1, 2, 3]
    records = driver.store.read_step(3)
    assert len(records) == 16 and {r["policy_version"] for r in records} == {2}
    assert sorted((r["group"], r["group_index"]) for r in records) == [(g, i) for g in range(4) for i in range(4)]
    assert (run_dir / "checkpoints" / "step_3").is_dir() and (run_dir / "config.yaml").is_file()
    assert {"steps", "wall_s", "reward_first10", "reward_last10"} <= set(json.loads((run_dir / "summary.json").read_text()))
    assert [s.weight for s in reward_specs(driver.cfg)] == [2.0, 0.5]

    # `unigrpo rewards check` with the run's own config scores the stored rollouts exactly as training did
    rows = table.to_pylist()
    dump, scored = tmp_path / "dump.jsonl", tmp_path / "scored.jsonl"
    dump.write_text("".join(json.dumps({"task": r["task"], "prompt": r["question"], "response": r["response_text"],
                                        "gold": r["gold"]}) + "\n" for r in rows))
    assert cli_main(["rewards", "check", "--input", str(dump), "--config", str(run_dir / "config.yaml"),
                     "--output", str(scored)]) == 0
    checked = [json.loads(line) for line in scored.read_text().splitlines()]
    assert [c["total"] for c in checked] == [r["reward"] for r in rows]
    assert [{k: v["value"] for k, v in c["components"].items()} for c in checked] == [
        {k: v["value"] for k, v in json.loads(r["reward_components"]).items()} for r in rows]


def whole_and_resumed(tmp_path, common) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl of 3 steps in one run ("whole") and of 2 steps + a resumed third ("split")."""
    run(tmp_path, "whole", common + ["run.checkpoint_every=1", "run.steps=3"])
    run(tmp_path, "split", common + ["run.checkpoint_every=1", "run.steps=2"])
    resumed = load_config(tmp_path / "split" / "config.yaml", ["run.steps=3"])
    driver = Driver(resumed, run_dir=tmp_path / "split", resume=True, console=False)
    try:
        driver.setup()
        assert driver.step == 2
        driver.train()
    finally:
        driver.shutdown()
    return metrics(tmp_path / "whole"), metrics(tmp_path / "split")


@pytest.mark.slow  # three drivers
def test_resume_continues_exactly(ray_cluster, tmp_path):
    whole, split = whole_and_resumed(tmp_path, ["learner.num_ranks=1"])
    assert [r["step"] for r in split] == [1, 2, 3]
    assert comparable(split[2]) == comparable(whole[2])


def test_killed_rollout_actor_is_recovered_without_losing_groups(ray_cluster, tmp_path):
    cfg = load_config(None, FAST + [f"run.dir={tmp_path}", "run.name=kill", "run.steps=3"])
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        driver.publisher.publish()
        driver.run_step()
        ray_cluster.kill(driver.rollout.workers[0], no_restart=False)
        m = driver.run_step()
        driver.flush_store()
        records = driver.store.read_step(2)
        assert m["restarts/rollout"] == 1 and m["rollouts"] == 16
        assert sorted((r["group"], r["group_index"]) for r in records) == [(g, i) for g in range(4) for i in range(4)]
        # the restarted actor was given the current weights before it generated again
        assert {r["policy_version"] for r in records} == {1}
    finally:
        driver.shutdown()


def test_hanging_reward_does_not_stall_the_step(ray_cluster, tmp_path):
    rewards = ("rewards.functions=[{name: math, weight: 2.0}, "
               "{name: sleepy, path: 'tests.plugins.e2e_rewards:sleepy', timeout_s: 1.0}]")
    t0 = time.time()
    _, summary = run(tmp_path, "hang", [rewards, "run.steps=1", "data.prompts_per_step=1"])
    rows = metrics(tmp_path / "hang")
    assert rows[0]["reward/sleepy/timeout"] == 4
    # 4 hung calls (one group: enough, each costs ~1 s), each cut at 1 s (plus a replacement worker's
    # start-up where the warm spares cannot keep up on a loaded machine; start-up is outside the deadline),
    # never 4 x 3600 s
    assert rows[0]["time/reward_s"] < 60
    assert time.time() - t0 < 240


def test_broadcast_weight_transport(ray_cluster, tmp_path):
    """Weights travel over the torch.distributed (gloo) group instead of the object store."""
    driver, _ = run(tmp_path, "bcast", ["run.steps=2", "run.weight_transport=broadcast"])
    assert {r["policy_version"] for r in driver.store.read_step(2)} == {1}
    rows = metrics(tmp_path / "bcast")
    assert rows[1]["policy_version"] == 2
    assert [r["publish/transport"] for r in rows] == ["broadcast", "broadcast"]
    assert rows[1]["publish/bytes"] > 0 and rows[1]["publish/receivers"] == 1


def test_lost_learner_rank_restarts_the_group_from_the_last_checkpoint(ray_cluster, tmp_path, capsys):
    """A learner rank killed between steps: the next update fails, the driver replaces the whole learner
    group in its placement group, restores step 1's checkpoint and finishes; visible in metrics and console."""
    cfg = load_config(None, FAST + [f"run.dir={tmp_path}", "run.name=lrn", "run.steps=3", "run.checkpoint_every=1",
                                    "run.max_restarts=1"])
    driver = Driver(cfg, console=True)
    try:
        driver.setup()
        driver.publisher.publish()
        driver.run_step()
        driver.checkpoint()
        old = driver.learner.actors[0]
        ray_cluster.kill(old)  # no restart: the rank is gone, as with its node
        driver.train()
        rows = metrics(tmp_path / "lrn")
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert rows[-1]["restarts/learner"] == 1 and rows[-1]["policy_version"] == 3
        assert driver.learner.actors[0] != old
        assert "learner rank lost" in capsys.readouterr().out
    finally:
        driver.shutdown()


def test_a_group_the_cluster_cannot_hold_fails_fast_naming_asked_and_available(ray_cluster):
    from policy.placement import PlacementError, bundles, reserve

    t0 = time.time()
    with pytest.raises(PlacementError) as err:
        reserve("learner", bundles(2, 1, 1), "PACK", timeout_s=60)  # GPUs on a CPU-only cluster
    msg = str(err.value)
    assert time.time() - t0 < 10  # never satisfiable: no waiting for the timeout
    assert "learner: cannot reserve 2 x {'CPU': 1, 'GPU': 1} (PACK)" in msg and "'CPU': 8.0" in msg and "node 0" in msg
    with pytest.raises(PlacementError, match="rollout: cannot reserve 9 x .*STRICT_SPREAD"):
        reserve("rollout", bundles(9, 1), "STRICT_SPREAD", timeout_s=60)  # one node, nine bundles apart
