"""The UniGRPO objective on tiny tensors: loss by hand, mask schedules, masked log-probs."""

import math

import numpy as np
import pytest
import torch

from policy.loading import load_policy
from policy.tiny import build_tiny_policy
from trainer.batch import BatchError, TrainBatch
from trainer.unigrpo import (
    UniGRPOConfig,
    mask_ratios,
    masked_token_logprobs,
    masks_for_update,
    num_masked,
    paper_formula_timesteps,
    sample_masks,
    token_weights,
    unigrpo_loss,
)


# ---- the loss by hand ----------------------------------------------------------------------------------
def hand_example():
    # response 0 (A = +1): three masked tokens with ratios 1.5 (clipped high at 1.3), 1.1, 0.5 (below the
    # low clip but A > 0, so min() keeps the unclipped 0.5); response 1 (A = -2): one token, ratio 0.5
    # (clipped low at 0.8 -> 0.8 * -2 = -1.6). Token 0 has pi_ref = 2 * pi_theta -> k3 = 2 - ln 2 - 1.
    ratios = torch.tensor([1.5, 1.1, 0.5, 0.5])
    old = torch.log(torch.tensor([0.2, 0.3, 0.4, 0.5]))
    logp = (old + torch.log(ratios)).requires_grad_(True)
    ref = logp.detach().clone()
    ref[0] += math.log(2.0)
    adv = torch.tensor([1.0, 1.0, 1.0, -2.0])
    rows = torch.tensor([0, 0, 0, 1])
    return logp, old, ref, adv, rows


def test_loss_matches_hand_computation_sequence_and_token_norm():
    cfg = UniGRPOConfig(eps_low=0.2, eps_high=0.3, beta=0.5, loss_norm="sequence")
    logp, old, ref, adv, rows = hand_example()
    k3 = 2.0 - math.log(2.0) - 1.0
    surr = [1.3, 1.1, 0.5, -1.6]

    w = token_weights(rows, torch.tensor([3, 1]), "sequence", num_responses=2, num_tokens=4)
    loss, sums = unigrpo_loss(logp, old, ref, adv, w, cfg)
    row0 = (sum(surr[:3]) - 0.5 * k3) / 3
    row1 = surr[3]
    assert loss.item() == pytest.approx(-(row0 + row1) / 2, abs=1e-6)
    assert sums["kl"].item() == pytest.approx(k3 / 3 / 2, abs=1e-6)
    assert sums["clip_low_count"].item() == 1 and sums["clip_high_count"].item() == 1
    assert sums["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)

    loss.backward()
    # clipped tokens get no policy gradient; token 0's gradient is only the KL term
    assert logp.grad[3].item() == 0.0
    assert logp.grad[0].item() == pytest.approx(0.5 * (1 / 6) * (1 - 2.0), abs=1e-6)  # beta w dk3/dlogp
    assert logp.grad[2].item() == pytest.approx(-(1 / 6) * 0.5, abs=1e-6)  # -w * A * ratio

    logp, old, ref, adv, rows = hand_example()
    w = token_weights(rows, torch.tensor([3, 1]), "token", num_responses=2, num_tokens=4)
    loss, _ = unigrpo_loss(logp, old, ref, adv, w, UniGRPOConfig(eps_low=0.2, eps_high=0.3, beta=0.5))
    assert loss.item() == pytest.approx(-(sum(surr) - 0.5 * k3) / 4, abs=1e-6)


def test_beta_zero_ignores_reference():
    logp, old, _, adv, rows = hand_example()
    w = token_weights(rows, torch.tensor([3, 1]), "sequence", 2, 4)
    loss, sums = unigrpo_loss(logp, old, None, adv, w, UniGRPOConfig(eps_low=0.2, eps_high=0.3, beta=0.0))
    assert sums["kl"].item() == 0.0
    assert loss.item() == pytest.approx(-((1.3 + 1.1 + 0.5) / 3 - 1.6) / 2, abs=1e-6)


# ---- masks -------------------------------------------------------------------------------------------------
def test_paper_formula_reproduces_algorithm_1():
    assert paper_formula_timesteps(100, 1000, 5) == [100, 325, 550, 775, 1000]
    cfg = UniGRPOConfig(mu=5, mask_schedule="paper_formula")
    p = mask_ratios(64, cfg, np.random.default_rng(0))
    t1 = np.round(p[0] * 1000).astype(int)
    for i in range(64):
        assert np.allclose(p[:, i] * 1000, paper_formula_timesteps(int(t1[i]), 1000, 5))


def test_stratified_covers_each_stratum_once():
    mu = 4
    p = mask_ratios(200, UniGRPOConfig(mu=mu), np.random.default_rng(1))
    strata = np.floor(p * mu).astype(int)
    for i in range(p.shape[1]):
        assert sorted(strata[:, i]) == list(range(mu))
    assert p.min() >= 0 and p.max() < 1
    assert abs(p[0].mean() - 0.5) < 0.1  # the phase u_i is uniform


def test_other_schedules_and_p_min():
    rng = np.random.default_rng(2)
    assert np.all(mask_ratios(5, UniGRPOConfig(mu=3, mask_schedule="full"), rng) == 1.0)
    p = mask_ratios(500, UniGRPOConfig(mu=3, mask_schedule="random", p_min=0.3), rng)
    assert p.min() >= 0.3 and p.max() <= 1.0 and p.std() > 0.1
    p = mask_ratios(500, UniGRPOConfig(mu=3, p_min=0.25), rng)
    assert p.min() == pytest.approx(0.25)


def test_masks_exact_counts_and_prompt_never_masked():
    rng = np.random.default_rng(3)
    n, length = 16, 40
    response = np.zeros((n, length), bool)
    starts = rng.integers(5, 30, size=n)
    for i, s in enumerate(starts):
        response[i, s:length - rng.integers(0, 5)] = True
    cfg = UniGRPOConfig(mu=3)
    ratios = mask_ratios(n, cfg, rng)
    ratios[0, 0] = 0.0  # at least one token is still masked
    ratios[1, 1] = 1.0
    masked = sample_masks(response, ratios, rng)
    lengths = response.sum(1)
    assert not (masked & ~response[None]).any()
    expected = np.maximum(1, np.floor(ratios * lengths + 0.5))
    assert np.array_equal(masked.sum(-1), expected)
    assert masked[0, 0].sum() == 1 and masked[1, 1].sum() == lengths[1]
    assert np.array_equal(num_masked(np.array([0.25, 0.5]), np.array([2, 3])), [1, 2])  # halves round up


def test_masks_are_a_function_of_seed_and_update_index():
    response = np.ones((4, 10), bool)
    a = masks_for_update(response, UniGRPOConfig(seed=7), 3)[1]
    b = masks_for_update(response, UniGRPOConfig(seed=7), 3)[1]
    c = masks_for_update(response, UniGRPOConfig(seed=7), 4)[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_batch_validation():
    ids = np.zeros((2, 4), np.int64)
    with pytest.raises(BatchError, match="no response token"):
        TrainBatch(ids, np.array([[0, 0, 1, 1], [0, 0, 0, 0]], bool), np.zeros(2))
    with pytest.raises(BatchError, match="advantages"):
        TrainBatch(ids, np.ones((2, 4), bool), np.zeros(3))
    b = TrainBatch(np.zeros((5, 4)), np.ones((5, 4), bool), np.arange(5))
    assert [b.shard(r, 2).num_rows for r in range(2)] == [3, 2]
    assert b.shard(1, 2).advantages.tolist() == [3.0, 4.0]


# ---- masked-token log-probs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(build_tiny_policy(tmp_path_factory.mktemp("pol"), seed=0))


def test_masked_logprobs_match_full_forward_text_and_image(policy):
    model, layout = policy.model, policy.layout
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 90, (3, 12), generator=g)
    ids[2, 6:] = layout.image_offset + torch.randint(0, layout.codebook_size, (6,), generator=g)
    masked = torch.zeros(3, 12, dtype=torch.bool)
    masked[:, 6:] = torch.rand(3, 6, generator=g) < 0.6
    masked[:, 6] = True
    is_image = torch.tensor([False, False, True])
    logp, ent = masked_token_logprobs(model, ids, masked, is_image, layout.mask_id, layout.image_slice,
                                      chunk_size=2, with_entropy=True)

    noisy = torch.where(masked, layout.mask_id, ids)
    logits = model(noisy).logits.float()
    full = torch.log_softmax(logits, -1)
    img = torch.log_softmax(logits[..., layout.image_slice], -1)
    expected = []
    for b, t in masked.nonzero().tolist():
        if is_image[b]:
            expected.append(img[b, t, ids[b, t] - layout.image_offset])
        else:
            expected.append(full[b, t, ids[b, t]])
    assert torch.allclose(logp, torch.stack(expected), atol=1e-5)
    assert (ent > 0).all() and ent[-1] <= math.log(layout.codebook_size) + 1e-4


def test_first_iteration_ratio_one_and_kl_zero(policy):
    model, layout = policy.model, policy.layout
    ids = torch.randint(5, 90, (2, 10), generator=torch.Generator().manual_seed(1))
    masked = torch.zeros(2, 10, dtype=torch.bool)
    masked[:, 5:] = True
    args = (ids, masked, torch.tensor([False, False]), layout.mask_id, layout.image_slice)
    with torch.no_grad():
        old = masked_token_logprobs(model, *args)[0]
        ref = masked_token_logprobs(model, *args)[0]
    logp = masked_token_logprobs(model, *args, chunk_size=3)[0]
    rows = masked.nonzero()[:, 0]
    w = token_weights(rows, masked.sum(1), "sequence", 2, int(masked.sum()))
    loss, sums = unigrpo_loss(logp, old, ref, torch.tensor([1.0, -1.0])[rows], w, UniGRPOConfig(beta=0.1))
    assert sums["ratio_sum"].item() / sums["token_count"].item() == pytest.approx(1.0, abs=1e-6)
    assert sums["kl"].item() == pytest.approx(0.0, abs=1e-9)
    assert sums["clip_low_count"].item() == 0 and sums["clip_high_count"].item() == 0
    loss.backward()  # gradients flow through the chunked, recomputed LM head
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
