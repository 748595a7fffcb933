"""rl/scoring.py: shards are scored on a background thread as they arrive, in order, errors surface."""

import threading
from types import SimpleNamespace

import pytest

from rl.scoring import ShardScorer


class BlockingPool:
    """The RewardPool interface (score: inputs -> scored samples); each call waits until released."""

    def __init__(self):
        self.entered, self.release, self.calls = threading.Event(), threading.Event(), []

    def score(self, inputs):
        self.calls.append([i.response for i in inputs])
        self.entered.set()
        assert self.release.wait(10)
        if any(i.response == "boom" for i in inputs):
            raise RuntimeError("reward pool failed")
        return [SimpleNamespace(total=float(len(i.response)), components={}) for i in inputs]


def record(text):
    return SimpleNamespace(task="toy", question="q", response_text=text, gold="1", image=None, prompt_id="p",
                           reward=None, reward_components=None)


def test_a_shard_is_scored_while_the_next_is_still_generating():
    pool = BlockingPool()
    scorer = ShardScorer(pool)
    first, second = [record("a"), record("bb")], [record("ccc")]
    scorer.submit(first)
    assert pool.entered.wait(10), "the first shard's scoring did not start before the second shard arrived"
    scorer.submit(second)
    pool.release.set()
    rewards = scorer.finish(second + first)  # any order: rewards follow the records given
    assert list(rewards) == [3.0, 1.0, 2.0]
    assert pool.calls == [["a", "bb"], ["ccc"]]  # one pool call per shard, in arrival order


def test_a_scoring_error_is_raised_by_finish():
    pool = BlockingPool()
    pool.release.set()
    scorer = ShardScorer(pool)
    scorer.submit([record("boom")])
    with pytest.raises(RuntimeError, match="reward pool failed"):
        scorer.finish([])
