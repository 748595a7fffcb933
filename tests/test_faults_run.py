"""Fault injection, whole runs on CPU (real Ray rollout, reward and DeepSpeed learner actors):

  * a rollout worker killed by PID while idle, between its generate and the weight publish;
  * the driver crashing in the middle of a checkpoint write, then the disk filling up;
  * resuming after both when the newest checkpoint lost a file: from the one before that verifies;
  * then an unexpected exception inside a step with run.max_restarts > 0: the driver restarts itself
    from its last checkpoint and the run completes, every step exactly once;
  * NaN/inf updates K times in a row (advantages scaled to 3e38): each skipped and counted, then the
    run stops with a clear message and exit 1, never a success.
"""

import json
import os
import time
from pathlib import Path

import pytest

import rl.checkpoints
import rl.driver
from rl.checkpoints import CheckpointSpaceError
from rl.cli import main as cli_main
from rl.config import load_config
from rl.driver import Driver

FAST = ["rollout.text.gen_length=8", "rollout.text.steps=4", "rollout.text.block_length=8",
        "data.prompts_per_step=4", "rollout.group_size=4", "run.plot=false"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _driver(tmp_path, name, *overrides, resume=False):
    cfg = load_config(None, FAST + [f"run.dir={tmp_path}", f"run.name={name}", *overrides])
    driver = Driver(cfg, resume=resume, console=False)
    driver.setup()
    return driver


def _steps(run_dir):
    return [json.loads(line)["step"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _kill_by_pid(ray, actor) -> int:
    pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
    os.kill(pid, 9)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not die")


def test_idle_kill_crash_mid_checkpoint_full_disk_resume_fallback_and_driver_restart(ray_cluster, tmp_path, monkeypatch):
    run_dir, ckpts = tmp_path / "crash", tmp_path / "crash" / "checkpoints"
    d = _driver(tmp_path, "crash", "run.steps=4", "run.checkpoint_every=1")
    try:
        d.publisher.publish()
        # 1. a rollout worker dies while idle, after generating and before the weights are published
        update = d.learner.update
        killed = []

        def update_then_kill(batch):
            stats = update(batch)
            killed.append(_kill_by_pid(ray_cluster, d.rollout.workers[0]))
            return stats

        monkeypatch.setattr(d.learner, "update", update_then_kill)
        d.run_step()  # the publish meets the dead (restarting) actor: tolerated
        monkeypatch.undo()
        assert killed
        d.checkpoint()
        m = d.run_step()  # the worker is back, with the current weights, before it generates
        d.flush_store()
        assert m["rollouts"] == 16 and m["restarts/rollout"] >= 1
        assert {r["policy_version"] for r in d.store.read_step(2)} == {1}
        d.checkpoint()
        assert (ckpts / "latest").read_text() == "step_2"

        # 2. the driver crashes in the middle of checkpoint 3 (after the learner wrote its part)
        d.run_step()
        save = d.learner.save_checkpoint

        def save_then_crash(directory, extra_state=None):
            save(directory, extra_state)
            raise RuntimeError("driver crashed mid-checkpoint")

        monkeypatch.setattr(d.learner, "save_checkpoint", save_then_crash)
        with pytest.raises(RuntimeError, match="mid-checkpoint"):
            d.checkpoint()
        monkeypatch.undo()
        assert (ckpts / "latest").read_text() == "step_2"
        assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_1", "step_2"]

        # 3. the disk is full at the next checkpoint: refused before writing, with the device named
        monkeypatch.setattr(rl.checkpoints, "free_bytes", lambda path: 10 * 1024**2)
        with pytest.raises(CheckpointSpaceError, match=f"no space left on .* for run dir {run_dir} \\(need ~"):
            d.checkpoint()
        monkeypatch.undo()
        assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_1", "step_2"]
    finally:
        d.shutdown()

    # step_2 loses a file: resume verifies it and falls back to step_1. Then an unplanned exception in
    # step 3: the driver restarts itself from its last checkpoint (step_2, written again) and finishes.
    (ckpts / "step_2" / "driver_state.json").write_text("{}")
    r = _driver(tmp_path, "crash", "run.steps=4", "run.checkpoint_every=1", "run.max_restarts=1", resume=True)
    try:
        assert r.step == 1
        score, calls = r.reward_pool.score, []

        def score_fails_once_in_step_3(inputs):
            calls.append(1)
            if len(calls) == 2:
                raise ConnectionError("injected: a remote call failed in a way nobody planned for")
            return score(inputs)

        monkeypatch.setattr(r.reward_pool, "score", score_fails_once_in_step_3)
        summary = r.train()
    finally:
        r.shutdown()
    assert summary["steps"] == 4 and _steps(run_dir) == [1, 2, 3, 4]  # every step once, none lost
    assert summary["restarts"]["driver"] == 1 and len(calls) == 4


def test_non_finite_updates_are_skipped_then_the_run_stops(ray_cluster, tmp_path, monkeypatch, capsys):
    normalise = rl.driver.group_normalise

    def poisoned(*args, **kwargs):  # finite advantages whose gradient norm overflows to inf
        adv = normalise(*args, **kwargs)
        adv.values[:] = [3e38 if i % 2 else -3e38 for i in range(len(adv.values))]
        adv.keep[:] = True
        return adv

    monkeypatch.setattr(rl.driver, "group_normalise", poisoned)
    code = cli_main(["train", *FAST, f"run.dir={tmp_path}", "run.name=nan", "run.steps=10",
                     "run.checkpoint_every=1", "learner.max_skipped_updates=2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "2 updates in a row were skipped" in err and "NaN/inf" in err
    rows = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["learner/skipped_steps"] for r in rows] == [2, 2]  # mu = 2 optimizer steps, both skipped
    assert not (tmp_path / "nan" / "summary.json").exists()  # never reported as a finished run
