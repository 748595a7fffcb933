"""Masked-diffusion SFT: the supervised objective MMaDA and LLaDA are trained with, on (prompt, response) pairs.

Used to warm-start a policy before RL (every real UniGRPO run starts from an SFT model). Per step, on a
batch of rows [left-padded prompt | response]:

    t ~ U(0, 1) per row;   p = (1 - eps) t + eps                     (MMaDA `forward_process`, eps = 1e-3)
    each response position becomes [MASK] with probability p (the prompt never does)
    loss = (1 / #response positions) sum_{masked t} -log p_theta(x_t | prompt, x~) / p

The response includes its EOS padding, as in LLaDA's SFT, so the model learns where an answer ends.
Plain torch on one process (no DeepSpeed): it takes seconds on a tiny policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MASK_EPS = 1e-3


def sft_batch(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, response_mask) for pairs (prompt ids, response ids); prompts left-padded,
    responses right-padded with `pad_id` (hidden by the attention mask, never masked)."""
    pw, rw = max(len(p) for p, _ in pairs), max(len(r) for _, r in pairs)
    ids = torch.full((len(pairs), pw + rw), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, r) in enumerate(pairs):
        ids[i, pw - len(p) : pw] = torch.tensor(p)
        ids[i, pw : pw + len(r)] = torch.tensor(r)
        attn[i, pw - len(p) : pw + len(r)] = 1
        resp[i, pw : pw + len(r)] = True
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


def run_sft(model, pairs: Sequence[tuple[list[int], list[int]]], mask_id: int, pad_id: int, steps: int,
            batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """`steps` AdamW steps on batches drawn from `pairs` (seeded); returns the loss of every step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        rows = rng.choice(len(pairs), size=min(batch_size, len(pairs)), replace=False)
        ids, attn, resp = sft_batch([pairs[i] for i in rows], pad_id)
        loss = sft_loss(model, ids, attn, resp, mask_id, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def warm_start(policy_dir: str, pairs: Sequence[tuple[str, str]], gen_length: int, steps: int,
               batch_size: int = 32, lr: float = 3e-3, seed: int = 0, think: bool = False) -> dict:
    """SFT the policy in `policy_dir` in place on (question, answer) text pairs laid out as the rollouts
    are: the chat prompt, then the answer and EOS padding to `gen_length`. Returns loss and time figures."""
    import time

    from policy.loading import load_policy
    from policy.prompts import chat_prompt_ids

    t0 = time.perf_counter()
    policy = load_policy(policy_dir, dtype="float32")
    tok, layout, model = policy.tokenizer, policy.layout, policy.model
    prompts: dict[str, list[int]] = {}
    examples = []
    for question, answer in pairs:
        if question not in prompts:
            prompts[question] = chat_prompt_ids(tok, layout, question, think=think)
        body = list(tok(answer, add_special_tokens=False)["input_ids"])[: gen_length - 1]
        examples.append((prompts[question], body + [layout.eos_id] * (gen_length - len(body))))
    losses = run_sft(model, examples, layout.mask_id, layout.pad_id, steps, batch_size, lr, seed)
    model.save_pretrained(policy_dir, safe_serialization=True)
    k = min(10, len(losses))
    return {"steps": steps, "examples": len(examples), "loss_first10": float(np.mean(losses[:k])),
            "loss_last10": float(np.mean(losses[-k:])), "seconds": round(time.perf_counter() - t0, 2)}
