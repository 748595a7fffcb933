"""A step that makes no update says so (issue #23 §6): when every group has equal rewards (and
advantages.drop_zero_variance_groups drops them) no batch reaches the learner; the console says
`no update: all 8 groups have equal rewards` instead of `loss +nan kl nan`, and metrics.jsonl holds no NaN.
The one end-to-end run (configs/tiny.yaml, 3 steps) also checks run.keep_checkpoints on real checkpoints."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rl.advantages import group_normalise
from rl.metrics import console_line, step_metrics

ROOT = Path(__file__).resolve().parent.parent


def _no_nan(value) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def _step(rewards, drop, stats):
    groups = np.repeat(np.arange(len(rewards) // 2), 2)
    records = [SimpleNamespace(response_text="7", task="math", group=int(g),
                               reward_components={"math": {"value": float(r), "status": "ok"}})
               for r, g in zip(rewards, groups)]
    adv = group_normalise(np.asarray(rewards, float), groups, drop_zero_variance=drop)
    phases = {"generate": 0.5, "reward": 0.1, "update": 0.0, "publish": 0.01}
    m = step_metrics(records, np.asarray(rewards, float), adv, stats, phases, {"publish/version": 3})
    return {**m, "time/step_s": 0.7}


def test_a_step_without_an_update_says_so_and_logs_no_nan():
    m = _step([1.0] * 16, drop=True, stats={})  # 8 groups, every one with equal rewards: nothing to learn from
    assert all(_no_nan(v) for v in m.values()), {k: v for k, v in m.items() if not _no_nan(v)}
    assert m["time/update_compute_s"] == 0.0 and not any(k.startswith("learner/") for k in m)
    line = console_line(4, 10, m)
    assert "no update: all 8 groups have equal rewards" in line and "nan" not in line, line
    updated = _step([1.0, 0.0] * 8, drop=True, stats={"loss": 0.25, "kl": 0.0, "clip_frac": 0.1, "compute_s": 0.2})
    line = console_line(5, 10, updated)
    assert "loss +0.2500  kl 0.0000  clip 0.10" in line and "no update" not in line, line


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_whose_groups_all_tie_makes_no_update_and_keeps_its_newest_checkpoints(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rl.cli", "train", "configs/tiny.yaml", f"run.dir={tmp_path}", "run.name=flat",
         "run.steps=3", "run.checkpoint_every=1", "run.keep_checkpoints=2", "run.plot=false", "run.max_wall_s=null",
         "advantages.drop_zero_variance_groups=true", "rewards.functions=[{name: math, weight: 0.0}]"],
        cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("no update: all 8 groups have equal rewards") == 3, proc.stdout
    assert "nan" not in proc.stdout
    run_dir = tmp_path / "flat"

    def strict(name):
        raise ValueError(f"{name} in metrics.jsonl")

    rows = [json.loads(line, parse_constant=strict) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["adv/zero_variance_groups"] == 8 for r in rows)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step_2", "step_3"]
