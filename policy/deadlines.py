"""Deadlines learned from the run's own timings, for every wait on an actor (docs/reliability.md).

A frozen actor (a stopped process, a hung driver, a wedged collective) does not die, so Ray never
reports it; without a deadline a wait on it lasts as long as gRPC keepalives allow (7-8 minutes). Every
group (rollout, rewards, learner) therefore waits through one `Watchdog`:

    watchdog = Watchdog(DeadlinePolicy(factor=10, floor_s=30))
    watchdog.start(ref, "generate", "rollout worker 1")   when a call is submitted
    ready, overdue = watchdog.poll(pending_refs)           at most ~1 s per poll
    watchdog.done(ref)                                     a call that answered: its time is learned

A call kind's deadline is `factor` x the median of its recent durations, never below `floor_s`; before
the kind has any history (loading, first forwards, compilation) it is `first_s`; `override_s` fixes it.
A call past `warn_factor` x its median (and `warn_floor_s`) is said out loud once, with who, which step
and the usual time; an overdue call is returned to its group, which handles it as it handles a dead
actor (kill, restart or replace, re-run the work). A slow but alive actor (3x its median) stays well
inside the default factor of 10.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WINDOW = 20  # durations remembered per call kind


@dataclass(frozen=True)
class DeadlinePolicy:
    factor: float = 10.0  # overdue after factor x the recent median ...
    floor_s: float = 30.0  # ... but never sooner than this
    first_s: float = 300.0  # a call kind with no history yet (model loading, warm-up, compilation)
    override_s: float | None = None  # one fixed deadline for every call
    warn_factor: float = 3.0  # say who is late after this many medians ...
    warn_floor_s: float = 10.0  # ... and at least this long


@dataclass
class _Call:
    kind: str
    who: str
    started: float
    since: float  # what the deadline counts from: the start, or the last time the actor proved alive
    warned: bool = False


@dataclass
class Watchdog:
    policy: DeadlinePolicy = field(default_factory=DeadlinePolicy)
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    step: int = 0  # the driver's current step, for the lines it prints
    _times: dict[str, deque] = field(default_factory=dict)
    _calls: dict[Any, _Call] = field(default_factory=dict)
    late: list[dict] = field(default_factory=list)  # late / overdue events since the driver last took them
    # the driver scores shards on a thread while it waits on generation: both sides use this watchdog
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # ---- what a call kind usually takes ----------------------------------------------------------------
    def usual(self, kind: str) -> float | None:
        with self._lock:
            times = self._times.get(kind)
            return statistics.median(times) if times else None

    def deadline(self, kind: str) -> float:
        if self.policy.override_s is not None:
            return self.policy.override_s
        usual = self.usual(kind)
        return self.policy.first_s if usual is None else max(self.policy.floor_s, self.policy.factor * usual)

    def warn_after(self, kind: str) -> float:
        usual = self.usual(kind)
        if usual is None:
            return max(self.policy.warn_floor_s, self.deadline(kind) / 3)
        return max(self.policy.warn_floor_s, self.policy.warn_factor * usual)

    def learn(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._times.setdefault(kind, deque(maxlen=WINDOW)).append(seconds)

    # ---- calls in flight ---------------------------------------------------------------------------------
    def start(self, ref, kind: str, who: str) -> None:
        now = time.monotonic()
        self._calls[ref] = _Call(kind, who, now, now)

    def done(self, ref) -> None:
        """The call answered: learn its duration."""
        call = self._calls.pop(ref, None)
        if call is not None:
            self.learn(call.kind, time.monotonic() - call.started)

    def forget(self, ref) -> None:
        """The call failed or was abandoned: nothing to learn from it."""
        self._calls.pop(ref, None)

    def extend(self, ref) -> None:
        """The actor answered a liveness probe: it is slow, not frozen; its deadline counts from now."""
        call = self._calls.get(ref)
        if call is not None:
            call.since = time.monotonic()

    def poll(self, refs: list, timeout_s: float = 1.0) -> tuple[list, list]:
        """Wait up to `timeout_s` for one of `refs`; returns (ready refs, overdue refs). Says who is late."""
        import ray

        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout_s) if refs else ([], [])
        now, overdue = time.monotonic(), []
        for ref in refs:
            call = self._calls.get(ref)
            if ref in ready or call is None:
                continue
            waited = now - call.started
            if now - call.since > self.deadline(call.kind):
                overdue.append(ref)
                self._note(call, waited, "overdue")
            elif waited > self.warn_after(call.kind) and not call.warned:
                call.warned = True
                self._note(call, waited, "late")
        return ready, overdue

    def _note(self, call: _Call, waited: float, what: str) -> None:
        usual = self.usual(call.kind)
        usual_text = f"usual {usual:.2g} s" if usual is not None else "no answer yet this run"
        if what == "late":
            line = (f"{call.who}: no answer for step {self.step} after {waited:.0f} s ({usual_text}); "
                    f"overdue at {self.deadline(call.kind):.0f} s")
        else:
            line = (f"{call.who}: no answer for step {self.step} after {waited:.0f} s ({usual_text}): past its "
                    f"{self.deadline(call.kind):.0f} s deadline")
        self.say(line)
        with self._lock:
            self.late.append({"step": self.step, "who": call.who, "kind": call.kind, "waited_s": round(waited, 1),
                              "usual_s": usual, "event": what})

    def take_events(self) -> list[dict]:
        with self._lock:
            events, self.late = self.late, []
        return events
