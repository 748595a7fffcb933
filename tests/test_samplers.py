"""Text and image samplers on tiny random policies (CPU, seconds)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from policy.loading import load_policy
from policy.prompts import chat_prompt_ids, left_pad, t2i_prompt_ids, t2i_uncond_prompt_ids
from policy.tiny import build_tiny_policy
from rollout.image_sampler import ImageSamplerConfig, generate_image, masked_after
from rollout.text_sampler import TextSamplerConfig, generate_text, step_counts

GEN = TextSamplerConfig(gen_length=16, steps=8, block_length=8, early_stop=False)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(build_tiny_policy(tmp_path_factory.mktemp("tiny"), codebook_size=16, seed=0))


@pytest.fixture(scope="module")
def one_layer_policy(tmp_path_factory):
    return load_policy(build_tiny_policy(tmp_path_factory.mktemp("tiny1"), codebook_size=16, seed=1, n_layers=1))


@pytest.fixture(scope="module")
def prompts(policy):
    questions = ["hi", "what is 2+2?", "count to three"]  # different lengths -> left padding
    ids, mask = left_pad([chat_prompt_ids(policy.tokenizer, policy.layout, q) for q in questions],
                         policy.layout.pad_id)
    assert (mask == 0).any()
    return ids, mask


def run(policy, prompts, config, seed=0):
    ids, mask = prompts
    return generate_text(policy.model, ids, mask, policy.layout, config, torch.Generator().manual_seed(seed))


def gen_unmask_counts(out, row):
    return [c for _, c in sorted(Counter(out.unmask_step[row].tolist()).items())]


# ---- text ------------------------------------------------------------------------------------
def test_config_validation():
    with pytest.raises(ValueError, match="multiple of block_length"):
        TextSamplerConfig(gen_length=30, block_length=8).validate()
    with pytest.raises(ValueError, match="number of blocks"):
        TextSamplerConfig(gen_length=32, block_length=8, steps=6).validate()
    with pytest.raises(ValueError, match="remasking"):
        TextSamplerConfig(remasking="margin").validate()
    with pytest.raises(ValueError, match="threshold"):
        TextSamplerConfig(threshold=1.5).validate()
    TextSamplerConfig(gen_length=32, block_length=8, steps=6, threshold=0.9).validate()  # steps unused


def test_fills_every_mask_keeps_prompt_and_follows_schedule(policy, prompts):
    config = replace(GEN, steps=6, block_length=8)  # 3 steps per block of 8: 3, 3, 2
    out = run(policy, prompts, config)
    ids, _ = prompts
    L0 = ids.shape[1]
    assert torch.equal(out.sequences[:, :L0], ids)
    assert torch.equal(out.sequences[:, L0:], out.response_ids)
    assert not (out.response_ids == policy.layout.mask_id).any()
    assert (out.response_ids < policy.layout.text_vocab_size).all()  # text_only: no image codes
    assert step_counts(8, 3) == [3, 3, 2]
    for row in range(ids.shape[0]):
        assert gen_unmask_counts(out, row) == [3, 3, 2, 3, 3, 2]
        # blocks are filled left to right: block 1 only after block 0
        assert out.unmask_step[row, :8].max() < out.unmask_step[row, 8:].min()
    assert out.num_forwards == 6 and out.sample_forwards.tolist() == [6, 6, 6]
    assert ((out.confidence > 0) & (out.confidence <= 1)).all()


def test_low_confidence_unmasks_most_confident_first(policy, prompts):
    """Greedy, one token per step: the first position unmasked is the most confident of block 0 under a
    forward of the all-masked input, and its recorded confidence is that probability."""
    layout = policy.layout
    ids, mask = prompts
    out = run(policy, prompts, replace(GEN, steps=16))
    L0 = ids.shape[1]
    x = torch.cat([ids, torch.full((ids.shape[0], 16), layout.mask_id)], dim=1)
    with torch.no_grad():
        logits = policy.model(x, attention_mask=torch.cat([mask, torch.ones_like(x[:, L0:])], 1)).logits
    logits = logits[:, L0:L0 + 8, : layout.text_vocab_size].double()
    logits[..., layout.mask_id] = float("-inf")
    best = torch.softmax(logits, -1).max(-1).values  # [B, 8]
    first = (out.unmask_step[:, :8] == 0).float().argmax(1)
    assert torch.equal(first, best.argmax(1))
    torch.testing.assert_close(out.confidence[:, :8].gather(1, first[:, None]).squeeze(1),
                               best.max(1).values.float())


def test_temperature_zero_reproducible_and_seeded_sampling(policy, prompts):
    a, b = run(policy, prompts, GEN, seed=0), run(policy, prompts, GEN, seed=1)
    assert torch.equal(a.sequences, b.sequences)  # greedy: the seed doesn't matter
    hot = replace(GEN, temperature=1.0)
    c, d, e = run(policy, prompts, hot, 3), run(policy, prompts, hot, 3), run(policy, prompts, hot, 4)
    assert torch.equal(c.sequences, d.sequences) and torch.equal(c.unmask_step, d.unmask_step)
    assert not torch.equal(c.sequences, e.sequences)


def test_cache_exact_when_every_block_has_one_step(policy, prompts):
    """steps == num_blocks: each block's only step is the full forward that builds the cache."""
    config = replace(GEN, steps=2, temperature=1.0)
    plain, cached = run(policy, prompts, config, 5), run(policy, prompts, replace(config, use_cache=True), 5)
    assert torch.equal(plain.sequences, cached.sequences)
    assert torch.equal(plain.unmask_step, cached.unmask_step)


def test_cache_exact_for_one_layer_model_with_full_suffix(one_layer_policy):
    """In a one-layer model the cached K/V of a prefix position depend only on its token and position,
    which don't change during a block, so the cached path computes the same logits (up to float
    rounding) when the rest of the sequence is fed too."""
    p = one_layer_policy
    ids, mask = left_pad([chat_prompt_ids(p.tokenizer, p.layout, q) for q in ["hi", "2+2?"]], p.layout.pad_id)
    config = TextSamplerConfig(gen_length=32, steps=32, block_length=8, temperature=0.7, early_stop=False)
    plain = run(p, (ids, mask), config, 7)
    cached = run(p, (ids, mask), replace(config, use_cache=True, further_horizon=None), 7)
    assert torch.equal(plain.sequences, cached.sequences)
    assert torch.equal(plain.unmask_step, cached.unmask_step)
    torch.testing.assert_close(plain.confidence, cached.confidence, rtol=1e-4, atol=1e-6)


def test_cache_approximate_for_deeper_model(policy, prompts):
    """Two layers: the prefix K/V go stale inside a block, so later steps may differ from the plain path
    (the benchmark measures by how much on a trained model). What must hold: everything is filled, the
    schedule is kept, and the first step of a block -- the full forward that builds the cache -- picks
    exactly what the plain path picks."""
    config = replace(GEN, steps=16)
    plain = run(policy, prompts, config)
    cached = run(policy, prompts, replace(config, use_cache=True, further_horizon=0))
    assert not (cached.response_ids == policy.layout.mask_id).any()
    assert gen_unmask_counts(cached, 0) == [1] * 16
    first = plain.unmask_step == 0
    assert torch.equal(cached.unmask_step == 0, first)
    assert torch.equal(cached.response_ids[first], plain.response_ids[first])
    assert torch.equal(cached.confidence[first], plain.confidence[first])


def test_threshold_unmasks_at_least_one_and_respects_threshold(policy, prompts):
    # A random tiny model's confidences sit near 1/117; take the median of a one-per-step run's picks
    # as the threshold so that some steps pass it and some don't.
    thr = run(policy, prompts, replace(GEN, threshold=1.0)).confidence.median().item()
    out = run(policy, prompts, replace(GEN, threshold=thr, use_cache=True))
    assert not (out.response_ids == policy.layout.mask_id).any()
    multi = 0
    for row in range(out.response_ids.shape[0]):
        steps = out.unmask_step[row]
        assert sorted(set(steps.tolist())) == list(range(int(out.sample_forwards[row])))  # >= 1 per forward
        for s in set(steps.tolist()):
            picked = out.confidence[row][steps == s]
            if len(picked) > 1:  # more than the one forced pick: all of them passed the threshold
                multi += 1
                assert (picked >= thr).all()
    assert multi > 0  # the threshold did fire
    assert out.num_forwards < 16  # fewer forwards than one token per step


def test_threshold_one_means_one_token_per_step(policy, prompts):
    out = run(policy, prompts, replace(GEN, threshold=1.0))
    assert out.num_forwards == 16 and gen_unmask_counts(out, 0) == [1] * 16


class ScriptedLM(torch.nn.Module):
    """A stand-in model with a known answer: rows whose input contains `trigger` predict EOS everywhere,
    other rows predict `other`. Hidden state = 10 * one-hot of the predicted id, head = identity."""

    def __init__(self, vocab_size: int, trigger: int, eos: int, other: int) -> None:
        super().__init__()
        self.lm_head = torch.nn.Linear(vocab_size, vocab_size, bias=False)
        self.lm_head.weight.data = torch.eye(vocab_size)
        self.trigger, self.eos, self.other = trigger, eos, other

    def forward(self, input_ids, attention_mask=None, compute_logits=True, **unused):
        from policy.model import MMadaOutput

        hit = (input_ids == self.trigger).any(1, keepdim=True)
        target = torch.where(hit, self.eos, self.other).expand_as(input_ids)
        hidden = 10.0 * torch.nn.functional.one_hot(target, self.lm_head.weight.shape[0]).float()
        return MMadaOutput(logits=None, hidden_states=hidden)


def test_early_stop_per_sample(policy, prompts):
    """Row 1 ("what is 2+2?") predicts EOS: it stops after block 0, its later blocks are EOS-filled and
    recorded as such; the other rows run every block on a smaller batch."""
    layout, tok = policy.layout, policy.tokenizer
    question = tok.convert_tokens_to_ids("?")
    a = tok.convert_tokens_to_ids("a")
    model = ScriptedLM(layout.vocab_size, question, layout.eos_id, a)
    ids, mask = prompts
    config = TextSamplerConfig(gen_length=24, steps=24, block_length=8, early_stop=True)
    out = generate_text(model, ids, mask, layout, config)
    assert (out.response_ids[1] == layout.eos_id).all()
    assert (out.response_ids[[0, 2]] == a).all()
    assert out.early_filled[1, 8:].all() and not out.early_filled[1, :8].any()
    assert not out.early_filled[[0, 2]].any()
    assert out.sample_forwards.tolist() == [24, 8, 24] and out.num_forwards == 24
    assert (out.unmask_step[1, 8:] == 7).all() and (out.confidence[1, 8:] == 1.0).all()
    no_stop = generate_text(model, ids, mask, layout, replace(config, early_stop=False))
    assert torch.equal(no_stop.response_ids, out.response_ids)  # this model would have said EOS anyway
    assert no_stop.sample_forwards.tolist() == [24, 24, 24] and not no_stop.early_filled.any()


def test_cfg_runs_and_changes_logits(policy, prompts):
    base = run(policy, prompts, replace(GEN, steps=16))
    cfg = run(policy, prompts, replace(GEN, steps=16, cfg_scale=2.0))
    cfg_cached = run(policy, prompts, replace(GEN, steps=16, cfg_scale=2.0, use_cache=True))
    for out in (cfg, cfg_cached):
        assert not (out.response_ids == policy.layout.mask_id).any()
        assert out.num_forwards == 16
    assert not torch.allclose(base.confidence, cfg.confidence)


def test_suppress_mask_and_text_only_can_be_switched_off(policy, prompts):
    """With both restrictions off, sampling may produce any id; the column count must be the full vocab
    (checked through a hot, flat-ish sampler: some response id must eventually be outside the text vocab)."""
    hot = replace(GEN, steps=16, temperature=50.0, text_only=False, suppress_mask=False)
    outside = False
    for seed in range(5):
        outside |= bool((run(policy, prompts, hot, seed).response_ids >= policy.layout.text_vocab_size).any())
    assert outside
    restricted = run(policy, prompts, replace(hot, text_only=True, suppress_mask=True), 0)
    assert (restricted.response_ids < policy.layout.text_vocab_size).all()
    assert not (restricted.response_ids == policy.layout.mask_id).any()


# ---- image -----------------------------------------------------------------------------------
def t2i_batch(policy, texts, n=16, width=24):
    rows = [t2i_prompt_ids(policy.tokenizer, policy.layout, t, n, width) for t in texts]
    u, um = t2i_uncond_prompt_ids(policy.tokenizer, policy.layout, n, width)
    return (torch.tensor([r for r, _ in rows]), torch.tensor([m for _, m in rows]),
            torch.tensor([u]), torch.tensor([um]))


@pytest.mark.parametrize("schedule,steps", [("cosine", 4), ("cosine", 7), ("linear", 5)])
def test_image_schedule_counts_and_slice(policy, schedule, steps):
    n = 16
    cond, cm, un, um = t2i_batch(policy, ["a red cat", "sky"], n=n)
    config = ImageSamplerConfig(steps=steps, schedule=schedule)
    out = generate_image(policy.model, cond, cm, un, um, policy.layout, config, torch.Generator().manual_seed(0))
    expected = [math.floor(n * (math.cos(math.pi / 2 * (s + 1) / steps) if schedule == "cosine"
                                else 1 - (s + 1) / steps)) for s in range(steps - 1)] + [0]
    assert [masked_after(s, steps, schedule, n) for s in range(steps)] == expected
    for row in range(2):
        still_masked = [int((out.unmask_step[row] > s).sum()) for s in range(steps)]
        assert still_masked == expected
    assert ((out.codes >= 0) & (out.codes < policy.layout.codebook_size)).all()
    assert out.num_forwards == steps
    # image ids written into the sequence are code_to_token(code), inside the slice; text part unchanged
    img = cond == policy.layout.mask_id
    tokens = out.sequences[img].view(2, n)
    assert torch.equal(tokens, policy.layout.code_to_token(out.codes))
    sl = policy.layout.image_slice
    assert ((tokens >= sl.start) & (tokens < sl.stop)).all()
    assert torch.equal(out.sequences[~img], cond[~img])


def test_image_seeded_and_guidance_matters(policy):
    cond, cm, un, um = t2i_batch(policy, ["a red cat"])
    def go(seed, w):
        return generate_image(policy.model, cond, cm, un, um, policy.layout,
                              ImageSamplerConfig(steps=4, guidance_scale=w), torch.Generator().manual_seed(seed))
    a, b, c = go(0, 3.5), go(0, 3.5), go(1, 3.5)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.unmask_step, b.unmask_step)
    assert not torch.equal(a.codes, c.codes)
    assert not torch.allclose(go(0, 0.0).confidence, a.confidence)


def test_image_uncond_of_other_length(policy):
    """The uncond input is used through its own layout (its own MASK positions), so an uncond built with
    a different text length works (two forwards per step instead of one batch)."""
    cond, cm, _, _ = t2i_batch(policy, ["a red cat"], width=24)
    _, _, un, um = t2i_batch(policy, [""], width=10)
    out = generate_image(policy.model, cond, cm, un, um, policy.layout, ImageSamplerConfig(steps=3),
                         torch.Generator().manual_seed(0))
    assert (out.codes >= 0).all() and out.num_forwards == 3
    with pytest.raises(ValueError, match="uncond_ids"):
        generate_image(policy.model, cond, cm, None, None, policy.layout, ImageSamplerConfig(), None)
