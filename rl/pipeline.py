"""Where each step's scored records come from: generated in the step (synchronous), or one step ahead while
the learner updates (asynchronous, `rollout.max_staleness: K >= 1`; docs/async.md).

    pipeline = RolloutPipeline(cfg, dataset, rollout, reward_pool, publisher)
    batch = pipeline.take(step)       records + rewards of step `step` (and the time spent waiting for them)
    pipeline.ahead(step + 1)          K >= 1: publish the current weights, start step + 1's generation on a
                                      background thread; the caller then updates the learner meanwhile
    pipeline.settle()                 wait for the batch in flight (before an evaluation or a restart)

Synchronous (K = 0): `take` draws the prompts, generates and scores them (each shard scored as it arrives,
rl/scoring.py) and `ahead` does nothing: the loop is the one it always was, bit for bit.

Asynchronous (K >= 1), step t:
    records_t  <- the batch started in step t - 1 (sampled with the weights published then: version t - 2
                  while the learner holds t - 1: one version stale), or generated now at the first step
    ahead:     publish version t - 1 to the (idle) workers, start generating step t + 1's batch with it
    update t   runs on the learner while step t + 1's batch generates and is scored
One batch is in flight at a time, so a record is at most one version stale; `max_staleness` bounds what is
trained on (a record more than K versions behind the learner is dropped and counted, never used). Only the
background thread touches the rollout group while a batch is in flight; the driver waits for it (`settle`)
before anything else uses the workers. The data cursor a checkpoint saves is the one before the batch in
flight was drawn, so a resumed run draws those prompts again (and samples them with its current weights).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rl.scoring import ShardScorer


@dataclass
class ScoredBatch:
    records: list
    rewards: np.ndarray
    generate_s: float  # wall time generating (sync), or waiting for the batch in flight (async)
    reward_s: float  # scoring left after the last shard arrived
    gen_timings: dict  # the rollout group's model compute of this batch
    spans: dict  # perf_counter (start, end): "generate", and "reward" (first shard's arrival to the last score)


class RolloutPipeline:
    def __init__(self, cfg, dataset, rollout, reward_pool, publisher) -> None:
        self.cfg, self.dataset = cfg, dataset
        self.rollout, self.reward_pool, self.publisher = rollout, reward_pool, publisher
        self.max_staleness = cfg.rollout.max_staleness
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unigrpo-rollouts") \
            if self.max_staleness else None
        self._in_flight: Future | None = None
        self._cursor_before: dict | None = None  # the data cursor before the batch in flight was drawn

    @property
    def asynchronous(self) -> bool:
        return self._thread is not None

    def _generate(self, step: int, prompts) -> ScoredBatch:
        from rl.driver import step_seed

        scorer = ShardScorer(self.reward_pool)  # each shard scored as soon as it arrives
        first_shard: list[float] = []

        def on_shard(*shard):
            first_shard[:] = first_shard or [time.perf_counter()]
            return scorer.submit(*shard)

        try:
            t0 = time.perf_counter()
            records = self.rollout.generate(prompts, self.cfg.rollout.group_size, seed=step_seed(self.cfg.run.seed, step),
                                            on_shard=on_shard)
            t1 = time.perf_counter()
            rewards = scorer.finish(records)
            t2 = time.perf_counter()
            spans = {"generate": (t0, t1), "reward": (first_shard[0] if first_shard else t1, t2)}
            return ScoredBatch(records, rewards, t1 - t0, t2 - t1, dict(self.rollout.last_timings), spans)
        finally:
            scorer.close()

    def take(self, step: int) -> ScoredBatch:
        if self._in_flight is None:
            return self._generate(step, self.dataset.next_batch(self.cfg.data.prompts_per_step))
        t0 = time.perf_counter()
        future, self._in_flight, self._cursor_before = self._in_flight, None, None
        batch = future.result()  # a generation or scoring error is raised here, in the step that needs it
        batch.generate_s = time.perf_counter() - t0  # the step waited this long for it
        return batch

    def ahead(self, step: int) -> dict:
        """Asynchronous: publish the current weights if the workers lack them and start step `step`'s batch.
        Returns the publication's metrics ({} when nothing was published)."""
        if not self.asynchronous or step > self.cfg.run.steps:
            return {}
        published = self.publish_if_behind()
        self._cursor_before = self.dataset.state_dict()
        prompts = self.dataset.next_batch(self.cfg.data.prompts_per_step)
        self._in_flight = self._thread.submit(self._generate, step, prompts)
        return published

    def publish_if_behind(self) -> dict:
        """Publish when the workers hold an older version than the learner (never while a batch is in flight)."""
        self.settle()
        if self.rollout.version == self.publisher.version:
            return {}
        return self.publisher.publish()

    def settle(self) -> None:
        """Wait for the batch in flight (kept for the next `take`); its errors surface at `take`."""
        if self._in_flight is not None:
            try:
                self._in_flight.result()
            except Exception:  # noqa: BLE001 - raised again by take()
                pass

    def data_state(self) -> dict:
        """The data cursor to checkpoint: before the batch in flight, whose prompts are drawn again on resume."""
        return self._cursor_before if self._cursor_before is not None else self.dataset.state_dict()

    def discard(self) -> None:
        """Drop the batch in flight (a restart from a checkpoint)."""
        self.settle()
        self._in_flight, self._cursor_before = None, None

    def close(self) -> None:
        self.discard()
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)


def split_stale(records: list, learner_version: int, max_staleness: int) -> tuple[list[int], dict[str, int]]:
    """Indices of the records fresh enough to train on (at most `max_staleness` versions behind the learner;
    with K = 0 every record is kept: the synchronous loop samples with the current weights by construction),
    and per-lag counts {"async/lag_0": n, ...} plus "async/dropped"."""
    lags = [learner_version - r.policy_version for r in records]
    keep = [i for i, lag in enumerate(lags) if max_staleness == 0 or lag <= max_staleness]
    counts = {f"async/lag_{lag}": lags.count(lag) for lag in sorted(set(lags))}
    return keep, {**counts, "async/dropped": len(records) - len(keep)}
