"""A pool of worker processes that run reward calls under a hard, parent-enforced deadline.

Why processes and not threads or signals: ``signal.alarm`` only works on the main thread (it raises in
Ray async actors, thread pools and web servers), and neither an alarm nor ``future.result(timeout)`` can
stop C-level work such as a GMP power or a runaway regex. Here the parent waits on the worker's pipe
with a deadline and, when it passes, kills the worker (SIGKILL) and starts a fresh one; that works from
any thread. Each worker also runs under an address-space limit so a huge allocation fails inside it.

Protocol: the parent writes length-prefixed pickles (its own data) to the worker's stdin; the worker
answers one JSON line per call on a private copy of its stdout (fd 1 is pointed at stderr so a plugin's
print() cannot corrupt the channel). The parent never unpickles anything a worker produced.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from rewards.api import RewardInput, RewardResult

DEFAULT_MEM_LIMIT_MB = 3072
MAX_TASKS_PER_WORKER = 5000  # recycle workers now and then: parse caches and plugin leaks stay bounded


@dataclass
class Call:
    spec: dict  # RewardSpec.to_dict()
    inp: RewardInput
    timeout_s: float


class _Worker:
    def __init__(self, mem_limit_mb: int, preload: tuple[str, ...]):
        env = dict(os.environ)
        env["UNIGRPO_SANDBOX_MEM_MB"] = str(mem_limit_mb)
        env["UNIGRPO_SANDBOX_PRELOAD"] = ",".join(preload)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "rewards._sandbox_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, env=env, close_fds=True)
        self.buf = b""
        self.tasks = 0
        os.set_blocking(self.proc.stdout.fileno(), False)

    def send(self, call: Call) -> None:
        data = pickle.dumps((call.spec, call.inp, list(sys.path)), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()
        self.tasks += 1

    def read_line(self) -> bytes | None:
        """Drain what is available; return one complete line, b"" on EOF, None if not yet complete."""
        while b"\n" not in self.buf:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return None
            if not chunk:
                return b""
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _parse_reply(line: bytes) -> RewardResult:
    try:
        d = json.loads(line)
        return RewardResult(float(d["value"]), str(d["status"]), str(d.get("detail", ""))[:500])
    except Exception:
        return RewardResult(0.0, "error", "malformed reply from sandbox worker")


class SandboxPool:
    """``run(calls)`` scores every call; never raises because of what a reward does."""

    def __init__(self, num_procs: int = 1, mem_limit_mb: int = DEFAULT_MEM_LIMIT_MB,
                 preload: tuple[str, ...] = ("rewards.math_reward", "rewards.math_equiv")):
        self.num_procs = max(1, int(num_procs))
        self.mem_limit_mb = mem_limit_mb
        self.preload = preload
        self._workers: list[_Worker | None] = [None] * self.num_procs
        self._lock = threading.Lock()
        self.restarts = 0

    def _get(self, i: int) -> _Worker:
        w = self._workers[i]
        if w is None or w.proc.poll() is not None or w.tasks >= MAX_TASKS_PER_WORKER:
            if w is not None:
                w.kill()
            w = self._workers[i] = _Worker(self.mem_limit_mb, self.preload)
        return w

    def _replace(self, i: int) -> None:
        w = self._workers[i]
        if w is not None:
            w.kill()
        self._workers[i] = None
        self.restarts += 1

    def warm_up(self) -> None:
        for i in range(self.num_procs):
            self._get(i)

    def run(self, calls: list[Call]) -> list[RewardResult]:
        with self._lock:
            return self._run(calls)

    def _run(self, calls: list[Call]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(calls)
        pending = list(range(len(calls)))[::-1]
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (call index, deadline)
        while pending or busy:
            for slot in range(self.num_procs):
                if slot in busy or not pending:
                    continue
                idx = pending.pop()
                try:
                    w = self._get(slot)
                    w.send(calls[idx])
                except Exception as exc:  # broken pipe: the worker died between calls
                    self._replace(slot)
                    results[idx] = RewardResult(0.0, "error", f"sandbox worker unavailable: {type(exc).__name__}")
                    continue
                busy[slot] = (idx, time.monotonic() + calls[idx].timeout_s)
            if not busy:
                continue
            now = time.monotonic()
            wait_s = max(0.0, min(d for _, d in busy.values()) - now)
            fds = {self._workers[s].proc.stdout.fileno(): s for s in busy}
            try:
                ready, _, _ = select.select(list(fds), [], [], wait_s)
            except (OSError, ValueError):
                ready = list(fds)
            for fd in ready:
                slot = fds[fd]
                idx, _ = busy[slot]
                line = self._workers[slot].read_line()
                if line is None:
                    continue
                del busy[slot]
                if line == b"":  # EOF: the worker died (memory limit, os._exit, segfault, ...)
                    code = self._workers[slot].proc.poll()
                    self._replace(slot)
                    results[idx] = RewardResult(0.0, "error", f"sandbox worker died (exit code {code})")
                else:
                    results[idx] = _parse_reply(line)
            now = time.monotonic()
            for slot, (idx, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[slot]
                    self._replace(slot)  # the only way to stop C-level work for sure
                    results[idx] = RewardResult(0.0, "timeout", f"exceeded {calls[idx].timeout_s:g}s; worker killed")
        return [r if r is not None else RewardResult(0.0, "error", "lost") for r in results]

    def close(self) -> None:
        with self._lock:
            for i, w in enumerate(self._workers):
                if w is not None:
                    w.kill()
                self._workers[i] = None

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            for w in self._workers:
                if w is not None:
                    w.kill()
        except Exception:
            pass
