"""A start that fails or is stopped leaves nothing behind (docs/reliability.md):

  * SIGTERM while Ray and the actors start: exit 130 with one line, no C++ stack dump, every process of
    the run gone, no run directory, and the next start takes the same name;
  * SIGKILL of a training driver: within 30 s no process it started (Ray's parts, the actors) remains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _start(tmp_path, *overrides) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "rl.cli", "train", "configs/tiny.yaml", f"run.dir={tmp_path}",
                             "run.name=t", *overrides], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return out


def test_sigterm_while_starting_stops_everything_and_keeps_nothing(tmp_path):
    proc = _start(tmp_path)
    # Ray is up and the actors are starting: the driver has children (gcs, raylet, workers)
    assert _wait_for(lambda: len(_descendants(proc.pid)) >= 3, 120), proc.communicate(timeout=60)
    seen = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "SIGTERM received" not in err and "Traceback" not in err, err[-3000:]
    assert "unigrpo: interrupted while starting" in err, err[-3000:]
    assert not (tmp_path / "t").exists(), list(tmp_path.iterdir())
    assert _wait_for(lambda: not _alive(seen), 30), _alive(seen)


def test_nothing_of_a_killed_driver_outlives_it_by_30_s(tmp_path):
    proc = _start(tmp_path, "run.steps=200")
    assert _wait_for(lambda: (tmp_path / "t" / "metrics.jsonl").is_file(), 240), proc.stderr.read()[-3000:]
    seen = _descendants(proc.pid)
    assert len(seen) >= 3, [p.cmdline() for p in seen]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _wait_for(lambda: not _alive(seen), 30), _alive(seen)
