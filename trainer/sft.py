"""Masked-diffusion supervised fine-tuning (LLaDA's objective), used to warm-start tiny policies.

For a prompt p and response r, draw t ~ U(0, 1), mask each response token with probability
p_mask = (1 - 1e-3) * t + 1e-3 (at least one), and train

    loss = E_t [ (1 / p_mask) * sum_{masked i} -log p_theta(r_i | p, r_masked) ] / |r|

(the LLaDA / MMaDA SFT ELBO; reference section 5.4). The prompt is never masked. This is the stage
before RL in the MMaDA recipe; here it only teaches a tiny random policy the *shape* of an answer so
that an RL demo starts where a real SFT checkpoint starts: sometimes right, mostly not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from policy.model import MMadaModelLM


def sft_loss(model: MMadaModelLM, input_ids: torch.Tensor, response_mask: torch.Tensor, mask_id: int,
             generator: torch.Generator) -> torch.Tensor:
    n = input_ids.shape[0]
    t = torch.rand(n, 1, generator=generator)
    p_mask = (1 - 1e-3) * t + 1e-3
    masked = (torch.rand(input_ids.shape, generator=generator) < p_mask) & response_mask
    # at least one masked token per row: mask the first response token where none was drawn
    none = ~masked.any(dim=1)
    first = response_mask.float().argmax(dim=1)
    masked[none, first[none]] = True
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    logits = model(noisy, logits_at=masked).logits.float()
    ce = F.cross_entropy(logits, input_ids[masked], reduction="none")
    weight = (1.0 / p_mask.expand_as(input_ids))[masked]
    lengths = response_mask.sum(dim=1, keepdim=True).expand_as(input_ids)[masked].float()
    return (ce * weight / lengths).sum() / n


def train_sft(model: MMadaModelLM, input_ids: torch.Tensor, response_mask: torch.Tensor, mask_id: int,
              steps: int = 200, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
              progress: bool = True) -> list[float]:
    """A few hundred AdamW steps over (prompt, response) rows; returns the loss curve."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="warm-start SFT", disable=not progress, leave=False):
        rows = torch.randint(0, input_ids.shape[0], (batch_size,), generator=generator)
        loss = sft_loss(model, input_ids[rows], response_mask[rows], mask_id, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
