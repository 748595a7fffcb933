"""Ray actors for rewards. Rule actors own a SandboxPool (the hard per-call timeout lives there, so it
works although actor methods do not run on a main thread with signals); model actors hold model
rewards (CLIP) on their device and score batches in-process. Both are synchronous actors; `alive` runs in its own
concurrency group, so it answers while a long call runs (rewards/pool.py tells slow from frozen with it)."""

from __future__ import annotations

import time
import uuid

import ray

from rewards.api import RewardInput, RewardSpec
from rewards.engine import score_model_reward
from rewards.registry import load_reward
from rewards.sandbox import Call, SandboxPool

# `alive` answers from its own thread while a long call runs: a slow actor is told apart from a frozen one
HEALTH = {"health": 1}


@ray.remote(concurrency_groups=HEALTH)
class RuleRewardActor:
    def __init__(self, num_procs: int = 1, mem_limit_mb: int = 3072):
        self.pool = SandboxPool(num_procs, mem_limit_mb)
        self.pool.warm_up()
        self.busy_s = 0.0  # time spent scoring (for the orchestration-overhead benchmark)
        self.incarnation = uuid.uuid4().hex  # new after every restart by Ray (crash, lost node)

    def ready(self) -> bool:
        return True

    @ray.method(concurrency_group="health")
    def alive(self) -> bool:
        """Answers while `run` is busy (its own thread): the pool's liveness probe for a long call."""
        return True

    def run(self, calls: list[tuple[dict, RewardInput, float]]) -> tuple[list[tuple[float, str, str]], tuple[str, float]]:
        """(value, status, detail) per call, and busy_seconds() after it (no second round trip for it)."""
        t0 = time.perf_counter()
        res = self.pool.run([Call(s, x, t) for s, x, t in calls])
        self.busy_s += time.perf_counter() - t0
        return [(r.value, r.status, r.detail) for r in res], self.busy_seconds()

    def busy_seconds(self) -> tuple[str, float]:
        """(incarnation, seconds spent scoring since this incarnation started)."""
        return self.incarnation, self.busy_s

    def pid(self) -> int:
        import os

        return os.getpid()

    def shutdown(self) -> None:
        self.pool.close()


@ray.remote(concurrency_groups=HEALTH)
class ModelRewardActor:
    def __init__(self, specs: list[dict], device: str = "cpu", clip_model_path: str | None = None):
        self.models, self.errors = {}, {}
        self.busy_s = 0.0
        self.incarnation = uuid.uuid4().hex
        for d in specs:
            spec = RewardSpec(**d)
            try:
                self.models[spec.name] = load_reward(
                    spec, extra_init={"model_path": clip_model_path, "device": device})
            except Exception as exc:  # reported per sample, the actor stays usable for other rewards
                self.errors[spec.name] = f"{type(exc).__name__}: {str(exc)[:300]}"

    def ready(self) -> bool:
        return True

    @ray.method(concurrency_group="health")
    def alive(self) -> bool:
        return True

    def busy_seconds(self) -> tuple[str, float]:
        """(incarnation, seconds spent scoring since this incarnation started)."""
        return self.incarnation, self.busy_s

    def score(self, name: str, batch: list[RewardInput]) -> tuple[list[tuple[float, str, str]], tuple[str, float]]:
        """(value, status, detail) per input, and busy_seconds() after it."""
        t0 = time.perf_counter()
        try:
            rows = self._score(name, batch)
        finally:
            self.busy_s += time.perf_counter() - t0
        return rows, self.busy_seconds()

    def _score(self, name: str, batch: list[RewardInput]) -> list[tuple[float, str, str]]:
        res = score_model_reward(self.models.get(name), self.errors.get(name), batch)
        return [(r.value, r.status, r.detail) for r in res]
