"""Nothing of a run outlives its driver: a small watcher process that ends what the driver started.

A driver killed with SIGKILL runs no cleanup. Ray's raylet and GCS then exit, but some of its parts
(`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) were measured still running minutes later. So
`unigrpo train` starts this watcher in its own session:

    python -m rl.reaper DRIVER_PID

Every second it notes the driver's descendants (Ray's processes, the actors, the sandbox workers); once
the driver is gone it sends SIGTERM to every noted process still running, and SIGKILL to those that do
not exit within a few seconds. A process is identified by (pid, start time), so a reused pid is never
touched. It then exits. After a normal exit Ray has already stopped its processes and there is nothing
left to end. (tests/test_faults_startup.py checks that nothing remains 30 s after a SIGKILL.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 1.0
GRACE_S = 5.0


def watch(driver_pid: int) -> None:
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    me = os.getpid()
    noted: dict[tuple[int, float], psutil.Process] = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        try:
            for p in driver.children(recursive=True):
                if p.pid != me:
                    noted.setdefault((p.pid, p.create_time()), p)
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    left = [p for p in noted.values() if _running(p)]
    for p in left:
        _signal(p, "terminate")
    _, alive = psutil.wait_procs(left, timeout=GRACE_S)
    for p in alive:
        _signal(p, "kill")


def _running(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # is_running checks the start time
    except psutil.Error:
        return False


def _signal(p, how: str) -> None:
    import psutil

    try:
        getattr(p, how)()
    except psutil.Error:
        pass


def start_reaper() -> subprocess.Popen:
    """Start the watcher for this process, in its own session (a signal to the driver's group spares it)."""
    return subprocess.Popen([sys.executable, "-m", "rl.reaper", str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
