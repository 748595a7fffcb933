"""How a run survives: checkpoints of the learner and the driver, and restarts from the last good one.

    checkpoints = RunCheckpoints(run_dir, margin_gb, estimate_bytes)
    path  = checkpoints.save(step, learner, driver_state)   atomic, verified (rl/checkpoints.py)
    checkpoints.prune(path, keep, metrics_log)               the newest `keep` and the best held-out one stay
    ckpt  = checkpoints.latest()                             newest that verifies, or None
    state = checkpoints.load(ckpt, learner)                  learner state back, driver state returned

    budget = RestartBudget(run.max_restarts)
    budget.spend(err, ckpt)    counts a restart (learner lost, or any other error in a step), or raises

The driver (rl/driver.py) calls these from its loop; what each fault costs is in docs/reliability.md.
SIGINT/SIGTERM never interrupt a phase: `GracefulStop` sets a flag, the loop checkpoints and exits 130.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from rl.checkpoints import CheckpointStore

DRIVER_STATE = "driver_state.json"  # step, run id and data cursor, beside the learner's files
BEST_METRIC = "eval/accuracy"  # the held-out score whose best checkpoint pruning keeps (rl/evaluation.py)


class LearnerLost(RuntimeError):
    """A learner rank died: the step cannot finish; the group restarts from the last checkpoint."""


class TrainingDiverged(RuntimeError):
    """Too many updates in a row had a NaN/inf loss or gradient norm (each was skipped, not applied)."""


@contextmanager
def learner_calls():
    """A lost learner actor surfaces as LearnerLost (the one fault that needs a new learner group)."""
    import ray

    try:
        yield
    except ray.exceptions.RayActorError as err:
        raise LearnerLost(str(err).splitlines()[0]) from err


class RunCheckpoints:
    """A run's checkpoints: `checkpoints/step_N/` holds the learner's files and DRIVER_STATE."""

    def __init__(self, run_dir: Path, margin_gb: float, estimate_bytes: int) -> None:
        self.store = CheckpointStore(run_dir, margin_gb)
        self.estimate_bytes = estimate_bytes  # before the first checkpoint: from the policy's parameters

    def path(self, step: int) -> Path:
        return self.store.path(step)

    def save(self, step: int, learner, driver_state: dict) -> Path:
        """Written into a temporary folder and published by a rename: a crash or a full disk in the middle
        leaves the previous checkpoint, and `latest`, as they were."""
        with self.store.writing(step, self.estimate_bytes) as tmp:
            with learner_calls():
                learner.save_checkpoint(str(tmp))
            (tmp / DRIVER_STATE).write_text(json.dumps(driver_state))
        return self.path(step)

    def out_of_space(self, err: BaseException, step: int):
        """The one-line CheckpointSpaceError for a disk that filled up during the run (rl/checkpoints.py)."""
        return self.store.out_of_space(err, step)

    def prune(self, newest: Path, keep: int | None, metrics) -> list[Path]:
        """After `newest` verifies: the newest `keep` checkpoints stay (run.keep_checkpoints; None: all), and
        so does the best held-out one (`best_evaluated` over the eval rows of `metrics`, a MetricsLog); the
        others are removed."""
        if keep is None:
            return []
        best = self.best_evaluated(metrics.read(having=BEST_METRIC))
        return self.store.prune(newest, keep, {best} if best is not None else frozenset())

    def best_evaluated(self, metrics_rows: list[dict]) -> Path | None:
        """The checkpoint whose step had the best held-out BEST_METRIC in metrics.jsonl (ties: the later
        step); None when no checkpointed step was evaluated."""
        scored = [(row[BEST_METRIC], row["step"]) for row in metrics_rows
                  if isinstance(row.get(BEST_METRIC), int | float) and math.isfinite(row[BEST_METRIC])
                  and self.path(row["step"]).is_dir()]
        return self.path(max(scored)[1]) if scored else None

    def has_valid(self, step: int) -> bool:
        ckpt = self.path(step)
        return ckpt.exists() and self.store.verify(ckpt) is None

    def latest(self, required: bool = False) -> Path | None:
        """The newest checkpoint that verifies (`latest` first, then older ones)."""
        ckpt = self.store.latest_valid()
        if ckpt is None and required:
            raise FileNotFoundError(f"{self.store.root.parent}: no usable checkpoint to resume from")
        return ckpt

    def load(self, ckpt: Path, learner) -> dict:
        """The learner's engine, optimizer, RNG and version back from `ckpt`; returns the driver state."""
        learner.load_checkpoint(str(ckpt))
        return json.loads((ckpt / DRIVER_STATE).read_text())


class RestartBudget:
    """run.max_restarts restarts from the last checkpoint, shared by lost learner ranks and other errors."""

    def __init__(self, max_restarts: int) -> None:
        self.max_restarts = max_restarts
        self.learner = 0  # a learner rank was lost: a new learner group
        self.driver = 0  # any other unexpected error in a step

    def spend(self, err: Exception, ckpt: Path | None, step: int) -> str:
        """Count one restart after `err` in `step`; the line to print. Raises when none is left."""
        used = self.learner + self.driver
        lost = isinstance(err, LearnerLost)
        if used >= self.max_restarts:
            what = "learner lost" if lost else f"{type(err).__name__} in a step"
            raise RuntimeError(f"{what} again after {used} restarts (run.max_restarts="
                               f"{self.max_restarts}): {err}") from err
        origin = ckpt.name if ckpt else "the initial policy"
        if lost:
            self.learner += 1
            return (f"learner rank lost ({err}); restart {used + 1}/{self.max_restarts}: "
                    f"new learner group from {origin}")
        self.driver += 1
        return (f"unigrpo: {type(err).__name__} in step {step}: {err}; restart {used + 1}/"
                f"{self.max_restarts} from {origin}")


class GracefulStop:
    """SIGINT/SIGTERM set a flag; the loop finishes the current phase, checkpoints and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. the driver runs inside a test thread)
                pass

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nreceived signal {signum}: stopping after the current phase and checkpointing",
              file=sys.stdout, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
