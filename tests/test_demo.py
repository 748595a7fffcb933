"""The demos learn: checked end to end in a fresh process, as a user runs them."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_learns_to_add_on_held_out_questions(tmp_path):
    """`make demo` (configs/demo.yaml): from chance to most held-out sums right, within 5 minutes on 2 cores.
    A quiet machine measures more (README); these bounds leave room for a loaded CI machine, which stops the
    run earlier by steps (run.max_wall_s) but still evaluates its last step."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "train", f"run.dir={tmp_path}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - t0 < 300
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    accuracy = summary["eval"]["eval/accuracy"]  # greedy, on the 168 held-out questions
    assert accuracy["first"] <= 0.3, accuracy  # after the warm start: chance is 1/7
    assert accuracy["last"] >= 0.6 and accuracy["last"] - accuracy["first"] >= 0.4, accuracy
    assert summary["reward_last10"] >= 3 * summary["reward_first10"], summary
    assert (tmp_path / "demo" / "reward_curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_multimodal_demo_learns_every_task(tmp_path):
    """configs/tiny_multimodal.yaml: every task's reward at least doubles within 5 minutes, from a warm start
    that taught only the parts of each task (tests/test_warm_start.py)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "train", "configs/tiny_multimodal.yaml",
                           f"run.dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - t0 < 300
    summary = json.loads((tmp_path / "tiny-multimodal" / "summary.json").read_text())
    for task in ("text", "mmu", "t2i"):
        assert summary[f"reward_first10/{task}"] > 0, (task, summary)
        assert summary[f"reward_last10/{task}"] >= 2 * summary[f"reward_first10/{task}"], (task, summary)
    # beyond the format: mmu is chosen right more often than a guess among 4 (2.0 x 1/4), text than among 9
    assert summary["reward_last10/mmu"] >= 1.0 and summary["reward_last10/text"] >= 2.0 / 9 * 2, summary
