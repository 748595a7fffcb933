"""Masked-diffusion SFT: the supervised objective MMaDA and LLaDA are trained with, on (prompt, response) pairs.

Used to warm-start a policy before RL (every real UniGRPO run starts from an SFT model). Per step, on a
batch of rows [left padding | prompt | response | suffix] (a text row: the chat prompt, then the answer and
its EOS padding; a t2i row: the caption layout up to <|soi|>, then the image codes, then <|eoi|>):

    t ~ U(0, 1) per row;   p = (1 - eps) t + eps                     (MMaDA `forward_process`, eps = 1e-3)
    each response position becomes [MASK] with probability p (the prompt never does)
    loss = (1 / #response positions) sum_{masked t} -log p_theta(x_t | prompt, x~) / p

The response includes its EOS padding, as in LLaDA's SFT, so the model learns where an answer ends.
Plain torch on one process (no DeepSpeed): it takes seconds on a tiny policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from policy.prompts import T2I_MAX_TEXT_LEN

MASK_EPS = 1e-3


class Example(NamedTuple):
    """One SFT row: `response` is what the loss scores; `prompt_mask` hides prompt positions the sampler
    hides too (t2i's [iPAD] padding; None: all visible); `suffix` follows the response, visible, never scored."""

    prompt: list[int]
    response: list[int]
    prompt_mask: list[int] | None = None
    suffix: tuple[int, ...] | list[int] = ()


def sft_batch(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, response_mask) for a batch of examples, each left-padded with `pad_id`
    (hidden by the attention mask, never masked) to the longest row."""
    width = max(len(e.prompt) + len(e.response) + len(e.suffix) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    for i, e in enumerate(examples):
        row = [*e.prompt, *e.response, *e.suffix]
        start, r0 = width - len(row), width - len(row) + len(e.prompt)
        ids[i, start:] = torch.tensor(row)
        attn[i, start:] = 1
        if e.prompt_mask is not None:
            attn[i, start:r0] = torch.tensor(e.prompt_mask)
        resp[i, r0 : r0 + len(e.response)] = True
    return ids, attn, resp


def sft_loss(model, ids: torch.Tensor, attn: torch.Tensor, resp: torch.Tensor, mask_id: int,
             generator: torch.Generator) -> torch.Tensor:
    """The masked-diffusion loss above on one batch."""
    t = torch.rand(ids.shape[0], 1, generator=generator)
    p = (1 - MASK_EPS) * t + MASK_EPS
    masked = (torch.rand(ids.shape, generator=generator) < p) & resp
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
    hidden = model(noisy, attention_mask=attn, compute_logits=False).hidden_states[masked]
    nll = F.cross_entropy(model.lm_head(hidden).float(), ids[masked], reduction="none")
    return (nll / p.expand_as(ids)[masked]).sum() / resp.sum()


def run_sft(model, sets: Sequence[Sequence[Example]], mask_id: int, pad_id: int, steps: int,
            batch_size: int, lr: float, seed: int = 0) -> list[float]:
    """`steps` AdamW steps; every batch draws an equal share of `batch_size` from each set of examples
    (seeded; with replacement from a set smaller than its share), so a set of 8 images is not drowned
    by 500 text pairs. Returns the loss of every step."""
    sets = [s for s in sets if len(s)]
    share = -(-batch_size // len(sets))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        batch = [s[i] for s in sets for i in rng.choice(len(s), size=share, replace=len(s) < share)]
        ids, attn, resp = sft_batch(batch, pad_id)
        loss = sft_loss(model, ids, attn, resp, mask_id, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def warm_start(policy_dir: str, pairs: Sequence[tuple[str, str]], gen_length: int, steps: int,
               batch_size: int, lr: float, seed: int = 0, think: bool = False,
               images: Sequence[tuple[str, Sequence[int]]] = (), max_text_len: int = T2I_MAX_TEXT_LEN,
               mmu: Sequence[tuple[Sequence[int], str, str]] = ()) -> dict:
    """SFT the policy in `policy_dir` in place, on examples laid out as the rollouts are:
    text pairs (question, answer): the chat prompt, then the answer and EOS padding to `gen_length`;
    mmu (image codes, question, answer): the same after the image (the MMU layout, policy/prompts.py);
    images (caption, image codes): the t2i layout (`max_text_len`), the codes scored.
    Returns loss and time figures."""
    import time

    from policy.loading import load_policy
    from policy.prompts import chat_prompt_ids, mmu_prompt_ids, t2i_prompt_ids, t2i_row_parts

    t0 = time.perf_counter()
    policy = load_policy(policy_dir, dtype="float32")
    tok, layout, model = policy.tokenizer, policy.layout, policy.model
    prompts: dict[str, list[int]] = {}
    text, image_questions, drawings = [], [], []

    def answer_ids(answer: str) -> list[int]:
        body = list(tok(answer, add_special_tokens=False)["input_ids"])[: gen_length - 1]
        return body + [layout.eos_id] * (gen_length - len(body))

    for question, answer in pairs:
        if question not in prompts:
            prompts[question] = chat_prompt_ids(tok, layout, question, think=think)
        text.append(Example(prompts[question], answer_ids(answer)))
    for codes, question, answer in mmu:
        image_questions.append(Example(mmu_prompt_ids(tok, layout, codes, question, think=think), answer_ids(answer)))
    for caption, codes in images:
        prompt, mask, suffix = t2i_row_parts(*t2i_prompt_ids(tok, layout, caption, len(codes), max_text_len), len(codes))
        drawings.append(Example(prompt, [int(layout.code_to_token(c)) for c in codes], mask, suffix))
    losses = run_sft(model, [text, image_questions, drawings], layout.mask_id, layout.pad_id, steps, batch_size, lr, seed)
    model.save_pretrained(policy_dir, safe_serialization=True)
    k = min(10, len(losses))
    return {"steps": steps, "examples": len(text) + len(image_questions) + len(drawings),
            "loss_first10": float(np.mean(losses[:k])), "loss_last10": float(np.mean(losses[-k:])), "seconds": round(time.perf_counter() - t0, 2)}
