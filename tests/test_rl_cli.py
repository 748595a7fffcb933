"""The `unigrpo` command as scripts see it: subcommands, exit codes, graceful stop on SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


def test_rewards_check_is_wired(tmp_path, capsys):
    dump = tmp_path / "dump.jsonl"
    dump.write_text(
        json.dumps({"task": "math", "prompt": "1+1?", "response": "<think>easy</think> \\boxed{2}", "gold": "2"})
        + "\nnot json at all\n"
        + json.dumps({"task": "math", "prompt": "1+1?", "response": "it is 3", "gold": "2"}) + "\n"
    )
    code = cli_main(["rewards", "check", "--input", str(dump), "--config", str(ROOT / "configs" / "tiny.yaml")])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(out) == 3
    assert out[0]["components"]["math"]["value"] == 1.0 and out[2]["components"]["math"]["value"] == 0.0
    assert "error" in out[1]


@pytest.mark.slow  # two `unigrpo train` processes
def test_sigterm_checkpoints_exits_130_and_resumes(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, "-m", "rl.cli", "train", "configs/tiny.yaml", f"run.dir={tmp_path}", "run.name=sig", "run.steps=500",
           "run.max_wall_s=null", "run.checkpoint_every=1000", "run.plot=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    steps_done = len(metrics.read_text().splitlines())
    latest = (tmp_path / "sig" / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{steps_done}"  # checkpointed at the step it stopped after

    resume = [sys.executable, "-m", "rl.cli", "train", "--resume", str(tmp_path / "sig"),
              f"run.steps={steps_done + 1}"]
    done = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps_done + 2))
