"""The UniGRPO objective on tiny tensors: loss by hand, mask schedules, masked log-probs."""

import math

import numpy as np
import pytest
import torch

from policy.loading import load_policy
from policy.tiny import build_tiny_policy
from trainer.batch import BatchError, TrainBatch
from trainer.unigrpo import (
    TextSupport,
    UniGRPOConfig,
    mask_ratios,
    masked_token_logprobs,
    masks_for_update,
    num_masked,
    paper_formula_timesteps,
    sample_masks,
    scored_positions,
    text_support,
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


# ---- objective options: which positions form o_i, and the log-prob support ------------------------------------
def test_through_first_eos_sets_o_i_masks_and_k():
    eos = 7
    # prompt (3) | response (6): row 0 "a b EOS EOS EOS EOS", row 1 no EOS, row 2 EOS first, row 3 "a EOS x EOS .."
    ids = np.array([[1, 2, 3, 5, 6, eos, eos, eos, eos],
                    [1, 2, 3, 5, 6, 5, 6, 5, 6],
                    [1, 2, 3, eos, eos, eos, eos, eos, eos],
                    [1, 2, 3, 5, eos, 6, eos, eos, eos]])
    response = np.zeros(ids.shape, bool)
    response[:, 3:] = True
    pos = scored_positions(ids, response, eos, "through_first_eos")
    assert pos.sum(1).tolist() == [3, 6, 1, 2]  # content + the first EOS; all six without an EOS
    assert (scored_positions(ids, response, eos, "all") == response).all()
    assert not pos[:, :3].any()

    cfg = UniGRPOConfig(mu=3, response_positions="through_first_eos")
    ratios, masked = masks_for_update(pos, cfg, update_index=0)
    assert not (masked & ~pos[None]).any()  # nothing after the first EOS is ever masked
    # k_i = max(1, round(p |o_i|)) with |o_i| counted through the first EOS
    assert (masked.sum(-1) == num_masked(ratios, pos.sum(1)[None, :])).all()
    # the 1/k_i weights follow: every masked token of row i weighs 1 / (k_i N)
    m = torch.from_numpy(masked[0])
    rows = torch.nonzero(m)[:, 0]
    w = token_weights(rows, m.sum(1), "sequence", 4, int(m.sum()))
    assert torch.allclose(w, 1.0 / (torch.from_numpy(masked[0].sum(1))[rows].float() * 4))
    with pytest.raises(ValueError, match="response_positions"):
        UniGRPOConfig(response_positions="content")


def test_sampler_support_scores_the_distribution_the_sampler_draws_from(policy):
    """At the first denoising step every response position is masked, which is exactly the input the
    learner scores with a fully masked response: the scored probabilities of every text token must be
    the sampler's softmax(logits / T) over text ids with MASK suppressed, summing to one."""
    from policy.prompts import chat_prompt_ids
    from rollout.text_sampler import TextSamplerConfig, _BlockModel

    model, layout, tok = policy.model, policy.layout, policy.tokenizer
    temperature, gen = 0.7, 4
    prompt = torch.tensor([chat_prompt_ids(tok, layout, "What is 3 + 4?")])
    L0 = prompt.shape[1]
    x = torch.cat([prompt, torch.full((1, gen), layout.mask_id)], 1)
    scfg = TextSamplerConfig(gen_length=gen, steps=gen, block_length=gen, temperature=temperature)
    with torch.no_grad():
        sampler_logits = _BlockModel(model, scfg, layout, L0).logits(x, None, L0, L0 + gen)[0]  # [gen, text V]
    p_sampler = torch.softmax(sampler_logits / temperature, -1)

    support_ids = [v for v in range(layout.text_vocab_size) if v != layout.mask_id]
    ids = torch.cat([prompt.expand(len(support_ids), -1),
                     torch.tensor(support_ids)[:, None].expand(-1, gen)], 1)  # row v: response v v v v
    masked = torch.zeros(ids.shape, dtype=torch.bool)
    masked[:, L0:] = True
    is_image = torch.zeros(len(ids), dtype=torch.bool)
    cfg = UniGRPOConfig(temperature=temperature, logprob_support="sampler")
    support = text_support(cfg, layout.text_vocab_size, layout.mask_id)
    with torch.no_grad():
        logp, ent = masked_token_logprobs(model, ids, masked, is_image, layout.mask_id, layout.image_slice,
                                          chunk_size=64, text_support=support, with_entropy=True)
        full, _ = masked_token_logprobs(model, ids, masked, is_image, layout.mask_id, layout.image_slice)
    scored = logp.exp().view(len(support_ids), gen).T.double()  # [gen, support]
    expected = p_sampler[:, support_ids]
    assert torch.allclose(scored, expected, atol=1e-6)
    assert torch.allclose(scored.sum(1), torch.ones(gen, dtype=torch.float64), atol=1e-5)
    assert p_sampler[:, layout.mask_id].max() == 0.0
    assert torch.isfinite(ent).all() and (ent > 0).all()
    # the full-vocabulary, temperature-1 score is a different distribution: pi_old would not be the sampler's
    assert (full.exp().view(len(support_ids), gen).T.double() - expected).abs().max() > 1e-3

    # a token the sampler can never draw (an image code, or MASK) is refused rather than scored -inf
    bad = ids[:1].clone()
    bad[0, L0] = layout.image_offset
    with pytest.raises(ValueError, match="outside the log-prob support"):
        masked_token_logprobs(model, bad, masked[:1], is_image[:1], layout.mask_id, layout.image_slice,
                              text_support=support)
    # greedy rollouts are scored at T = 1; `full` is the whole vocabulary
    assert text_support(UniGRPOConfig(temperature=0.0), 10, 3).temperature == 1.0
    assert text_support(UniGRPOConfig(logprob_support="full"), 10, 3) == TextSupport()
