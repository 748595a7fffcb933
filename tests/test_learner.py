"""The learner as real Ray actors holding real DeepSpeed ranks (gloo on CPU), on a tiny policy.

One module-scoped Ray; three groups: 1 rank (ZeRO-2), 2 ranks (ZeRO-2), 2 ranks (ZeRO-3). The
ZeRO-3 group then serves the weight-transport and checkpoint tests.
"""


import numpy as np
import pytest
import ray
import torch

from policy.loading import load_policy
from policy.tiny import build_tiny_policy
from policy.weight_sync import BroadcastReceiver, load_state_into, numpy_to_tensor
from trainer.batch import TrainBatch
from trainer.engine import lr_multiplier
from trainer.learner_group import LearnerConfig, LearnerGroup, UniGRPOConfig
from trainer.unigrpo import masked_token_logprobs, masks_for_update

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# every parameter of the tiny model is partitioned under ZeRO-3 (the default threshold keeps small ones whole)
Z3 = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("policy"), seed=0, d_model=32, n_heads=4)


def make_batch(layout, n=6, prompt=8, response=12, seed=0) -> TrainBatch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 90, size=(n, prompt + response))
    ids[:2, :3] = layout.pad_id  # two left-padded prompts
    attn = np.ones_like(ids)
    attn[:2, :3] = 0
    is_image = np.zeros(n, bool)
    is_image[-2:] = True
    ids[-2:, prompt:] = layout.image_offset + rng.integers(0, layout.codebook_size, size=(2, response))
    resp = np.zeros(ids.shape, bool)
    resp[:, prompt:] = True
    return TrainBatch(ids, resp, rng.normal(size=n), is_image=is_image, attention_mask=attn)


def flat_weights(payload) -> dict[str, np.ndarray]:
    return {k: numpy_to_tensor(v, payload["dtypes"][k]).float().numpy() for k, v in payload["state"].items()}


LCFG = dict(lr=1e-3, micro_batch_tokens=40, lr_schedule="cosine", warmup_steps=1, total_steps=10)
UCFG = UniGRPOConfig(mu=2, beta=0.05, seed=3)


@pytest.fixture(scope="module")
def runs(ray_cluster, policy_dir):
    """The same global batch through 1 rank (ZeRO-2), 2 ranks (ZeRO-2) and 2 ranks (ZeRO-3)."""
    layout = load_policy(policy_dir).layout
    batch = make_batch(layout)
    out = {"layout": layout, "batch": batch}
    for name, ranks, cfg in [
        ("z2x1", 1, LearnerConfig(deepspeed_config="configs/deepspeed/zero2.json", **LCFG)),
        ("z2x2", 2, LearnerConfig(deepspeed_config="configs/deepspeed/zero2.json", **LCFG)),
        ("z3x2", 2, LearnerConfig(deepspeed_config="configs/deepspeed/zero3.json", deepspeed_overrides=Z3, **LCFG)),
    ]:
        group = LearnerGroup.create(ranks, str(policy_dir), cfg, UCFG)
        out[name + "_before"] = flat_weights(ray.get(group.publish_object_store()))
        out[name + "_stats"] = group.update(batch)
        out[name] = flat_weights(ray.get(group.publish_object_store()))
        out[name + "_group"] = group
        if name == "z2x2":
            group.shutdown()
    yield out
    out["z2x1_group"].shutdown()
    out["z3x2_group"].shutdown()


def test_two_ranks_zero2_and_zero3_match_one_rank(runs):
    ref = runs["z2x1"]
    moved = max(np.abs(ref[k] - runs["z2x1_before"][k]).max() for k in ref)
    assert moved > 1e-4  # the update changed the weights
    for name in ("z2x2", "z3x2"):
        assert set(runs[name]) == set(ref)
        for k in ref:
            # Adam's first steps are ~lr * sign(g): fp32 reduction-order noise in a gradient near zero can
            # move one weight by ~1e-6; every weight moves by up to lr = 1e-3
            np.testing.assert_allclose(runs[name][k], ref[k], rtol=0, atol=1e-5, err_msg=f"{name} {k}")
        for key in ("loss", "policy_loss", "kl", "ratio_mean", "entropy", "grad_norm"):
            assert runs[name + "_stats"][key] == pytest.approx(runs["z2x1_stats"][key], rel=1e-4, abs=1e-7), key


def test_update_statistics(runs):
    s = runs["z2x1_stats"]
    for key in ("loss", "policy_loss", "kl", "clip_frac_low", "clip_frac_high", "ratio_mean", "ratio_max",
                "entropy", "mask_ratio_mean", "mask_ratio_min", "mask_ratio_max", "grad_norm", "lr"):
        assert np.isfinite(s[key]), key
    assert s["micro_batches"] == 3  # 6 rows of 20 tokens, 40 tokens per micro-batch
    assert s["kl"] >= 0 and s["ratio_max"] >= 1.0 and s["grad_norm"] > 0
    assert 0 < s["mask_ratio_min"] <= s["mask_ratio_mean"] <= s["mask_ratio_max"] <= 1
    assert s["lr"] == pytest.approx(1e-3)  # the last of mu = 2 steps: warmup 1 step, then cosine at 0


def test_lr_schedules():
    cos = LearnerConfig(lr_schedule="cosine", warmup_steps=2, total_steps=12, min_lr_ratio=0.1)
    assert [lr_multiplier(s, cos) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_multiplier(7, cos) == pytest.approx(0.55)  # half-way through the decay
    assert lr_multiplier(12, cos) == pytest.approx(0.1) and lr_multiplier(50, cos) == pytest.approx(0.1)
    const = LearnerConfig(warmup_steps=4)
    assert [lr_multiplier(s, const) for s in (0, 3, 100)] == [0.25, 1.0, 1.0]


def test_policy_gradient_direction(runs, policy_dir):
    """A positive advantage on response a and a negative one on b: log p(a) rises and log p(b) falls,
    measured with masks the update never saw."""
    layout = runs["layout"]
    group = LearnerGroup.create(1, str(policy_dir), LearnerConfig(lr=1e-2, micro_batch_tokens=64),
                                UniGRPOConfig(mu=2, seed=1))
    rng = np.random.default_rng(11)
    prompt = rng.integers(5, 90, size=8)
    a, b = rng.integers(5, 45, size=10), rng.integers(45, 90, size=10)  # disjoint tokens
    ids = np.stack([np.concatenate([prompt, a]), np.concatenate([prompt, b])] * 2)
    resp = np.zeros(ids.shape, bool)
    resp[:, 8:] = True
    batch = TrainBatch(ids, resp, np.array([1.0, -1.0, 1.0, -1.0]))

    model = load_policy(policy_dir).model

    def mean_logp(payload) -> np.ndarray:
        load_state_into(model, ray.get(payload))
        _, masked = masks_for_update(np.tile(resp[:2], (16, 1)), UniGRPOConfig(mu=4, seed=999), 0)
        x = torch.from_numpy(np.tile(ids[:2], (16, 1)))  # rows a, b, a, b, ...
        out = []
        with torch.no_grad():
            for m in masked:
                m = torch.from_numpy(m)
                lp, _ = masked_token_logprobs(model, x, m, torch.zeros(len(x), dtype=torch.bool), layout.mask_id,
                                              layout.image_slice)
                rows = m.nonzero()[:, 0]
                out.append([lp[(rows % 2) == r].mean().item() for r in (0, 1)])
        return np.mean(out, 0)

    before = mean_logp(group.publish_object_store())
    for _ in range(2):
        group.update(batch)
    after = mean_logp(group.publish_object_store())
    group.shutdown()
    assert after[0] > before[0] + 1e-3, (before, after)
    assert after[1] < before[1] - 1e-3, (before, after)


def test_both_weight_transports_deliver_identical_tensors(runs, policy_dir):
    group = runs["z3x2_group"]
    payload = ray.get(group.publish_object_store(version=41))
    assert payload["version"] == 41
    assert {k: v.shape for k, v in payload["state"].items()} == {
        k: tuple(v.shape) for k, v in load_policy(policy_dir).model.state_dict().items()}

    host, port, ready = group.init_broadcast(world_size=2)
    receiver = BroadcastReceiver(host, port, rank=1, world_size=2)
    ray.get(ready)
    done = group.broadcast_weights(version=42)
    version, state = receiver.receive_state()
    ray.get(done)
    assert version == 42 and set(state) == set(payload["state"])
    for k, t in state.items():
        assert t.dtype == torch.float32
        assert np.array_equal(t.numpy(), payload["state"][k]), k

    # and into a model, through both receiver helpers
    m1, m2 = load_policy(policy_dir).model, load_policy(policy_dir).model
    done = group.broadcast_weights(version=43)
    assert receiver.receive(m1) == 43
    ray.get(done)
    assert load_state_into(m2, payload) == 41
    for (k, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(p1, p2), k


def test_checkpoint_round_trip_is_exact(runs, tmp_path):
    group, layout = runs["z3x2_group"], runs["layout"]
    batch = make_batch(layout, seed=5)
    saved_weights = flat_weights(ray.get(group.publish_object_store()))
    version = group.policy_version
    group.save_checkpoint(tmp_path / "ckpt", extra_state={"step": 7, "cursor": [1, 2]})

    stats_a = group.update(batch)
    weights_a = flat_weights(ray.get(group.publish_object_store()))
    group.update(batch)  # move on, then come back
    assert group.load_checkpoint(tmp_path / "ckpt") == {"step": 7, "cursor": [1, 2]}
    assert group.policy_version == version
    stats_b = group.update(batch)
    weights_b = flat_weights(ray.get(group.publish_object_store()))
    for k in weights_a:
        assert np.array_equal(weights_a[k], weights_b[k]), k
    timings = ("compute_s", "old_ref_logprob_s")  # wall-clock times, not results
    assert {k: v for k, v in stats_a.items() if k not in timings} == {
        k: v for k, v in stats_b.items() if k not in timings
    }  # same masks, same optimizer moments, same LR step

    exported = load_policy(tmp_path / "ckpt" / "policy")
    for k, v in exported.model.state_dict().items():
        assert np.array_equal(v.numpy(), saved_weights[k]), k
    assert (tmp_path / "ckpt" / "policy" / "tokenizer.json").is_file()
