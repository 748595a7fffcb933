"""A training row is the context the sampler saw, for every task (text, mmu, t2i).

With the whole response masked, the learner's log-probs of the tokens the sampler unmasked at its
first step must equal the probabilities the sampler recorded for them (no guidance), because both
are the same model on the same input: prompt with its own attention mask, all-[MASK] response, and
the <|eoi|> that follows an image canvas.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from policy.palette_tokenizer import PaletteTokenizer
from policy.tiny import build_tiny_policy
from rl.data import ImageEncoder
from rl.tasks import shapes
from rollout.image_sampler import ImageSamplerConfig
from rollout.record import Prompt
from rollout.text_sampler import TextSamplerConfig
from rollout.worker import RolloutWorker
from trainer.batch import batch_from_rollouts
from trainer.unigrpo import TextSupport, masked_token_logprobs

TEXT = TextSamplerConfig(gen_length=8, steps=4, block_length=4, temperature=1.0)  # two blocks
IMAGE = ImageSamplerConfig(steps=4, guidance_scale=0.0)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    policy = build_tiny_policy(tmp_path_factory.mktemp("tiny"), codebook_size=8, seed=0)
    return RolloutWorker(policy, TEXT, IMAGE, num_image_tokens=16, max_text_len=40, image_tokenizer="palette")


def prompts():
    enc = ImageEncoder(PaletteTokenizer(), 32)
    mmu = shapes.mmu_rows(2, seed=3)
    return {
        "text": [Prompt("a", "math", "Repeat the number: 7", "7"), Prompt("b", "math", "hi", None)],
        "mmu": [Prompt(f"m{i}", "mmu", r["question"], None, image_codes=enc.encode(r["image"], "x"))
                for i, r in enumerate(mmu)],
        "t2i": [Prompt("t0", "t2i", "a red square in the top left", None),
                Prompt("t1", "t2i", "a blue square", None)],  # different padding
    }


def first_step_logprob_gap(model, layout, batch, records) -> float:
    masked = torch.from_numpy(batch.response_mask)
    with torch.no_grad():
        logp, _ = masked_token_logprobs(
            model, torch.from_numpy(batch.input_ids), masked, torch.from_numpy(batch.is_image), layout.mask_id,
            layout.image_slice, attention_mask=torch.from_numpy(batch.attention_mask),
            text_support=TextSupport(columns=layout.text_vocab_size, suppressed=layout.mask_id))
    # logp is in row-major order of the masked positions, i.e. record by record, response order
    per_row = logp.split(masked.sum(1).tolist())
    gaps = []
    for lp, r in zip(per_row, records):
        first = np.asarray(r.unmask_step) == 0
        assert first.any()
        gaps.append(np.abs(lp.numpy()[first] - np.log(np.asarray(r.confidence)[first])).max())
    return float(max(gaps))


@pytest.mark.parametrize("task", ["text", "mmu", "t2i"])
def test_first_step_logprobs_equal_sampler_confidences(worker, task):
    records = worker.generate(prompts()[task], group_size=2, seed=1)
    batch = batch_from_rollouts(records, np.zeros(len(records)), tasks=[task] * len(records))
    assert batch.is_image.tolist() == [task == "t2i"] * len(records)
    # prompt (caption, or image + question), <|eoi|> and padding are never masked
    for row, r in enumerate(records):
        cols = np.flatnonzero(batch.response_mask[row])
        assert batch.input_ids[row, cols].tolist() == r.response_ids
        if task == "t2i":
            assert batch.input_ids[row, cols[-1] + 1] == worker.layout.eoi_id
            assert batch.attention_mask[row, cols[-1] + 1] == 1
            assert (batch.attention_mask[row] == 0).sum() > 0  # [iPAD] stays hidden
        if task == "mmu":
            assert worker.layout.soi_id in batch.input_ids[row, : cols[0]].tolist()
            assert r.image_png[:8] == b"\x89PNG\r\n\x1a\n"  # the input image, for the dashboard
            assert r.image.shape == (32, 32, 3)  # and its pixels, for image rewards (CLIP on captions)
    assert first_step_logprob_gap(worker.model, worker.layout, batch, records) < 1e-4


def test_rows_that_differ_from_the_sampler_context_are_caught(worker):
    """The old t2i row (every prompt position attended, <|eoi|> dropped) fails the same check."""
    records = worker.generate(prompts()["t2i"], group_size=2, seed=1)
    wrong = [replace(r, prompt_mask=[1] * len(r.prompt_mask), suffix_ids=[]) for r in records]
    batch = batch_from_rollouts(wrong, np.zeros(len(wrong)))
    assert first_step_logprob_gap(worker.model, worker.layout, batch, records) > 1e-2


def test_t2i_records_carry_decoded_pixels(worker):
    records = worker.generate(prompts()["t2i"][:1], group_size=2, seed=0)
    for r in records:
        assert r.image.dtype == np.uint8 and r.image.shape == (32, 32, 3)
        decoded = PaletteTokenizer().encode(torch.from_numpy(r.image).permute(2, 0, 1)[None].float() / 127.5 - 1)
        assert decoded[0].tolist() == r.image_codes
        assert r.timings["decode_s"] >= 0


def test_per_task_sums_add_up_to_the_loss():
    from trainer.unigrpo import UniGRPOConfig, unigrpo_loss

    g = torch.Generator().manual_seed(0)
    m = 12
    logp, old, ref = (torch.randn(m, generator=g) * 0.3 - 1 for _ in range(3))
    adv, w = torch.randn(m, generator=g), torch.rand(m, generator=g) / m
    groups = torch.tensor([0, 1, 2] * 4)
    cfg = UniGRPOConfig(beta=0.1, eps_low=0.05, eps_high=0.05)
    loss, sums = unigrpo_loss(logp, old, ref, adv, w, cfg, token_groups=groups, num_groups=3)
    by = sums["by_group"]
    assert float(by["policy_loss"].sum()) == pytest.approx(float(sums["policy_loss"]), abs=1e-6)
    assert float(by["kl"].sum()) == pytest.approx(float(sums["kl"]), abs=1e-6)
    assert float(by["clip_count"].sum()) == float(sums["clip_low_count"] + sums["clip_high_count"])
    assert by["token_count"].tolist() == [4, 4, 4]
