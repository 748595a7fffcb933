"""A pool of worker processes that run reward calls under a hard, parent-enforced deadline.

Why processes and not threads or signals: ``signal.alarm`` only works on the main thread (it raises in
Ray async actors, thread pools and web servers), and neither an alarm nor ``future.result(timeout)`` can
stop C-level work such as a GMP power or a runaway regex. Here the parent waits on the worker's pipe
with a deadline and, when it passes, kills the worker (SIGKILL) and puts a warm spare in its place;
that works from any thread. Each worker also runs under an address-space limit so a huge allocation
fails inside it.

Deadlines cover the call only: a worker announces itself ready after its interpreter and the preloaded
modules (sympy, the LaTeX parser: about a second) are up, and a reward's first call in a worker gets
a fresh deadline once the reward is imported. Replacement workers are started ahead of need (spares),
so the call after a timeout does not wait for a cold start either.

Protocol: the parent writes length-prefixed pickles (its own data) to the worker's stdin; the worker
answers JSON lines on a private copy of its stdout: one ``{"ready"}`` at start, ``{"loaded"}`` when a
reward was imported, and one result per call. Its fd 1 and fd 2 (a plugin's print()) go to a pipe that
the parent drains and caps per call (``MAX_OUTPUT_BYTES``), so a plugin printing 100 MB cannot corrupt
the channel or fill a log. The parent never unpickles anything a worker produced.
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
MAX_OUTPUT_BYTES = 8192  # of a call's stdout/stderr forwarded to our stderr; the rest is counted, dropped
STARTUP_TIMEOUT_S = 120.0  # interpreter + preloaded modules on a loaded machine
MAX_START_FAILURES = 3  # workers that die before they are ready, in a row: the environment is broken
DEFAULT_PRELOAD = ("rewards.math_reward", "rewards.math_equiv")
# warm workers kept ahead of need: back-to-back timeouts are served at about max(timeout, start-up / spares)
DEFAULT_SPARES = 2


@dataclass
class Call:
    spec: dict  # RewardSpec.to_dict()
    inp: RewardInput | None
    timeout_s: float
    op: str = "score"  # "score" one input, or "probe": import and validate the reward, reply its kind


class _Worker:
    def __init__(self, mem_limit_mb: int, preload: tuple[str, ...]):
        env = dict(os.environ)
        env["UNIGRPO_SANDBOX_MEM_MB"] = str(mem_limit_mb)
        env["UNIGRPO_SANDBOX_PRELOAD"] = ",".join(preload)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "rewards._sandbox_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)
        self.started = time.monotonic()
        self.ready = False
        self.buf = b""
        self.tasks = 0
        self.output = bytearray()  # the current call's captured output, at most MAX_OUTPUT_BYTES
        self.dropped = 0
        for f in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(f.fileno(), False)

    def send(self, call: Call) -> None:
        data = pickle.dumps((call.op, call.spec, call.inp, list(sys.path)), protocol=pickle.HIGHEST_PROTOCOL)
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

    def drain_output(self) -> None:
        """Read what the worker printed; keep the first MAX_OUTPUT_BYTES of this call, count the rest."""
        while True:
            try:
                chunk = os.read(self.proc.stderr.fileno(), 1 << 20)
            except (BlockingIOError, OSError, ValueError):
                return
            if not chunk:
                return
            room = MAX_OUTPUT_BYTES - len(self.output)
            self.output += chunk[:max(room, 0)]
            self.dropped += max(0, len(chunk) - max(room, 0))

    def take_output(self) -> tuple[bytes, int]:
        self.drain_output()
        out, dropped = bytes(self.output), self.dropped
        self.output, self.dropped = bytearray(), 0
        return out, dropped

    def exit_code(self) -> int | None:
        """After EOF on its channel: the exit status (the process may need a moment to be reaped)."""
        try:
            return self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
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


def _message(line: bytes) -> str | None:
    """'ready' / 'loaded' for the worker's control lines, None for a result."""
    if line.startswith(b'{"ready"'):
        return "ready"
    if line.startswith(b'{"loaded"'):
        return "loaded"
    return None


class SandboxPool:
    """``run(calls)`` scores every call; never raises because of what a reward does."""

    def __init__(self, num_procs: int = 1, mem_limit_mb: int = DEFAULT_MEM_LIMIT_MB,
                 preload: tuple[str, ...] = DEFAULT_PRELOAD, spares: int = DEFAULT_SPARES, log=None):
        self.num_procs = max(1, int(num_procs))
        self.mem_limit_mb = mem_limit_mb
        self.preload = preload
        self.num_spares = max(0, int(spares))
        self.log = log  # where captured plugin output goes (default: our stderr at the time of writing)
        self._workers: list[_Worker | None] = [None] * self.num_procs
        self._spares: list[_Worker] = []
        self._lock = threading.Lock()
        self.restarts = 0
        self.start_failures = 0

    def _new_worker(self) -> _Worker:
        """A spare that has been warming up, or a fresh one; the spares are topped up either way."""
        w = self._spares.pop(0) if self._spares else _Worker(self.mem_limit_mb, self.preload)
        while len(self._spares) < self.num_spares:
            self._spares.append(_Worker(self.mem_limit_mb, self.preload))
        return w

    def _get(self, i: int) -> _Worker:
        w = self._workers[i]
        if w is None or w.proc.poll() is not None or w.tasks >= MAX_TASKS_PER_WORKER:
            if w is not None:
                w.kill()
            w = self._workers[i] = self._new_worker()
        return w

    def _replace(self, i: int) -> None:
        w = self._workers[i]
        if w is not None:
            w.kill()
        self._workers[i] = None
        self.restarts += 1

    def warm_up(self) -> None:
        """Start every worker (and the spares) and wait until the workers are ready."""
        with self._lock:
            workers = [self._get(i) for i in range(self.num_procs)]
            for w in workers:
                while not w.ready and time.monotonic() < w.started + STARTUP_TIMEOUT_S:
                    select.select([w.proc.stdout], [], [], 1.0)
                    line = w.read_line()
                    if line == b"":
                        break  # died while starting: replaced (and reported) on first use
                    w.ready = line is not None and _message(line) == "ready"
                    w.drain_output()

    def run(self, calls: list[Call]) -> list[RewardResult]:
        with self._lock:
            return self._run(calls)

    def _forward_output(self, w: _Worker, call: Call | None) -> None:
        out, dropped = w.take_output()
        if not out and not dropped:
            return
        who = f"reward {call.spec.get('name')!r}" if call is not None else "sandbox worker"
        text = out.decode("utf-8", "replace")
        if dropped:
            text += f"\n[... {dropped} more bytes of output dropped (cap {MAX_OUTPUT_BYTES} per call)]"
        log = self.log or sys.stderr
        try:
            log.write("".join(f"[{who}] {line}\n" for line in text.splitlines()))
            log.flush()
        except (OSError, ValueError):
            pass

    def _start_failed(self, slot: int, why: str) -> RewardResult | None:
        """A worker died or hung before it was ready; after a few in a row, calls fail instead."""
        w = self._workers[slot]
        detail = ""
        if w is not None:
            out, _ = w.take_output()
            detail = out.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            detail = detail[0][:200]
        self._replace(slot)
        self.start_failures += 1
        if self.start_failures >= MAX_START_FAILURES:
            return RewardResult(0.0, "error", f"sandbox worker cannot start ({why}) {detail}".strip())
        return None

    def _run(self, calls: list[Call]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(calls)
        pending = list(range(len(calls)))[::-1]
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (call index, deadline)
        starting: set[int] = set()  # slots whose worker is not ready yet
        while pending or busy or starting:
            for slot in range(self.num_procs):
                if slot in busy or slot in starting or not pending:
                    continue
                w = self._get(slot)
                if not w.ready:
                    starting.add(slot)
                    continue
                idx = pending.pop()
                try:
                    w.send(calls[idx])
                except Exception as exc:  # broken pipe: the worker died between calls
                    self._replace(slot)
                    results[idx] = RewardResult(0.0, "error", f"sandbox worker unavailable: {type(exc).__name__}")
                    continue
                busy[slot] = (idx, time.monotonic() + calls[idx].timeout_s)
            if not busy and not starting:
                continue
            now = time.monotonic()
            deadlines = [d for _, d in busy.values()]
            deadlines += [self._workers[s].started + STARTUP_TIMEOUT_S for s in starting]
            wait_s = max(0.0, min(deadlines) - now)
            fds = {}
            for s in busy.keys() | starting:
                w = self._workers[s]
                fds[w.proc.stdout.fileno()] = s
                fds[w.proc.stderr.fileno()] = s
            try:
                ready, _, _ = select.select(list(fds), [], [], wait_s)
            except (OSError, ValueError):
                ready = list(fds)
            for slot in {fds[fd] for fd in ready}:
                w = self._workers[slot]
                w.drain_output()
                while slot in busy or slot in starting:
                    line = w.read_line()
                    if line is None:
                        break
                    if slot in starting:
                        if line and _message(line) == "ready":
                            w.ready, self.start_failures = True, 0
                            self._forward_output(w, None)
                        else:  # EOF or garbage before "ready": the worker could not start
                            failed = self._start_failed(slot, f"exit code {w.exit_code()}")
                            if failed is not None:
                                while pending:
                                    results[pending.pop()] = failed
                        starting.discard(slot)
                        break
                    idx, _ = busy[slot]
                    if line and _message(line) == "loaded":  # the import is done: now the call's own time
                        busy[slot] = (idx, time.monotonic() + calls[idx].timeout_s)
                        continue
                    del busy[slot]
                    self._forward_output(w, calls[idx])
                    if line == b"":  # EOF: the worker died (memory limit, os._exit, segfault, ...)
                        code = w.exit_code()
                        self._replace(slot)
                        results[idx] = RewardResult(0.0, "error", f"sandbox worker died (exit code {code})")
                    else:
                        results[idx] = _parse_reply(line)
            now = time.monotonic()
            for slot, (idx, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[slot]
                    self._forward_output(self._workers[slot], calls[idx])
                    self._replace(slot)  # the only way to stop C-level work for sure
                    results[idx] = RewardResult(0.0, "timeout", f"exceeded {calls[idx].timeout_s:g}s; worker killed")
            for slot in list(starting):
                if now >= self._workers[slot].started + STARTUP_TIMEOUT_S:
                    starting.discard(slot)
                    failed = self._start_failed(slot, f"not ready after {STARTUP_TIMEOUT_S:g}s")
                    if failed is not None:
                        while pending:
                            results[pending.pop()] = failed
        return [r if r is not None else RewardResult(0.0, "error", "lost") for r in results]

    def close(self) -> None:
        with self._lock:
            for i, w in enumerate(self._workers):
                if w is not None:
                    w.kill()
                self._workers[i] = None
            while self._spares:
                self._spares.pop().kill()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            for w in [*self._workers, *self._spares]:
                if w is not None:
                    w.kill()
        except Exception:
            pass
