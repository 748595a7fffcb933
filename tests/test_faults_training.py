"""Fault injection, training: a non-finite loss / gradient norm is skipped (counted), the weights stay
as they were, and the next healthy update is applied. The NaN is injected from outside the learner as
advantages so large (3e38, finite) that the gradient norm overflows to inf in fp32.
(The driver stopping after K skipped updates in a row: tests/test_faults_run.py.)"""


import numpy as np
import pytest
import ray

from policy.tiny import build_tiny_policy
from policy.weight_sync import numpy_to_tensor
from trainer.batch import TrainBatch
from trainer.learner_group import LearnerConfig, LearnerGroup, UniGRPOConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _weights(group):
    payload = ray.get(group.publish_object_store())
    return {k: numpy_to_tensor(v, payload["dtypes"][k]).float().numpy() for k, v in payload["state"].items()}


def _batch(advantage: float) -> TrainBatch:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 90, size=(4, 16))
    resp = np.zeros(ids.shape, bool)
    resp[:, 8:] = True
    return TrainBatch(ids, resp, np.array([1.0, -1.0, 1.0, -1.0], np.float32) * advantage)


@pytest.mark.parametrize("zero_stage", [2, 0])
def test_non_finite_update_is_skipped_and_the_next_one_applies(ray_cluster, tmp_path, zero_stage):
    policy = build_tiny_policy(tmp_path / "policy", seed=0, d_model=32, n_heads=4)
    cfg = LearnerConfig(lr=1e-2, micro_batch_tokens=64, zero_stage=zero_stage)
    group = LearnerGroup.create(1, str(policy), cfg, UniGRPOConfig(mu=2, seed=0))
    try:
        before = _weights(group)
        bad = group.update(_batch(3e38))
        assert bad["skipped_steps"] == 2  # both of mu = 2 optimizer steps
        assert not np.isfinite(bad["grad_norm"]) or not np.isfinite(bad["loss"])
        after_bad = _weights(group)
        for k in before:
            np.testing.assert_array_equal(after_bad[k], before[k], err_msg=k)
        good = group.update(_batch(1.0))
        assert good["skipped_steps"] == 0 and np.isfinite(good["loss"]) and np.isfinite(good["grad_norm"])
        after_good = _weights(group)
        assert max(np.abs(after_good[k] - before[k]).max() for k in before) > 1e-4
        assert all(np.isfinite(v).all() for v in after_good.values())
    finally:
        group.shutdown()
