"""Rollout records -> rewards, through the reward pool (rewards/pool.py: separate Ray actors).

    rewards = score_records(pool, records)          fills record.reward / reward_components; returns them

    scorer = ShardScorer(pool)                      scoring while generation goes on:
    records = rollout.generate(..., on_shard=scorer.submit)   each shard scored as soon as it arrives
    rewards = scorer.finish(records)                waits for the last shard's scores

Each shard is scored by one call of the pool, on one background thread, in the order the shards arrive,
so the reward actors work while the other shards (rollout workers, or colocated learner ranks) still
generate, and the driver never calls the pool from two threads at once. Rewards do not depend on how the
batch was cut: each record's reward is a function of that record alone (rewards/engine.py).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


def score_records(pool, records) -> np.ndarray:
    """Score rollout records with the reward pool; fills reward and reward_components."""
    from rewards.api import RewardInput

    inputs = [RewardInput(task=r.task, prompt=r.question, response=r.response_text, gold=r.gold,
                          image=r.image, metadata={"prompt_id": r.prompt_id}) for r in records]
    for r, s in zip(records, pool.score(inputs)):
        r.reward = float(s.total)
        r.reward_components = {k: v.to_dict() for k, v in s.components.items()}  # detail: for the dashboard
    return np.array([r.reward for r in records])


class ShardScorer:
    """Scores shards on one background thread as the rollout group hands them over."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unigrpo-rewards")
        self._scored: list[Future] = []

    def submit(self, records: list) -> None:
        self._scored.append(self._thread.submit(score_records, self.pool, records))

    def finish(self, records: list) -> np.ndarray:
        """Every submitted shard scored (a scoring error is raised here); the rewards of `records`, in order."""
        try:
            for done in self._scored:
                done.result()
        finally:
            self.close()
        return np.array([r.reward for r in records])

    def close(self) -> None:
        """Let the scoring in flight finish (each reward call is bounded by its deadline); no new work."""
        self._thread.shutdown(wait=True, cancel_futures=True)
