"""Image generation for a unified masked-diffusion model: MaskGIT-style parallel decoding of image codes.

The conditional input is MMaDA's t2i layout (reference 4.3), whose image part is N MASK tokens between
<|soi|> and <|eoi|>. Every step (reference 5.3):

    logits   = model(cond)[image positions, image-code columns]          (the 8192-column slice)
    logits   = (1 + w) * logits - w * model(uncond)[same]                 (guidance, when w > 0)
    sampled  = a code drawn from softmax(logits) at every position; known positions keep their code
    conf     = log p(sampled) + tau_step * Gumbel;  known positions: +inf
    keep     = floor(N * mask_ratio(step)) positions stay masked: the lowest-confidence ones
    mask_ratio = cos(pi/2 * (step+1)/T)  ("cosine")  or  1 - (step+1)/T  ("linear")

Choices where the reference code has quirks (each one deliberate):
1. Confidence-noise temperature: MMaDA/Show-o update `temperature *= (1 - ratio)` every step, so the
   noise scale compounds (tau_step = tau_0 * prod_{s<=step}(1 - (s+1)/T)). We use the plain,
   non-compounding MaskGIT anneal tau_step = tau_0 * (1 - (step+1)/T). Codes are always drawn at
   temperature 1 from the guided distribution, as in the reference (no temperature on the logits).
2. Unconditional input (issue Gen-Verse/MMaDA#64): the reference builds it from the first
   `resolution + 1` tokens of the empty-prompt sequence, which is right only when max_seq_length = 512.
   We take the uncond sequence exactly as its own layout gives it and write the current image tokens
   into *its own* image positions (found as its MASK positions), so it is right for any text length;
   cond and uncond may even differ in length (then they run as two forwards instead of one batch).
3. mask_len clamp: the reference clamps the number kept masked to [1, unknown - 1]. The lower bound 1
   leaves one position masked after the last step (the reference then silently takes its sample).
   We clamp to [0, unknown - 1]: the last step unmasks everything explicitly (so every position gets
   an unmask step and a confidence), and each step still unmasks at least one position, so the count of
   masked positions after each step is exactly floor(N * mask_ratio) whenever the schedule itself
   unmasks at least one per step (always the case for MMaDA's N = 1024, T <= 50).
Recorded per position: the step at which it was unmasked and the guided slice probability of its code
then. Forwards count model calls (cond and uncond batched together count as one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from policy.vocab import VocabLayout

SCHEDULES = ("cosine", "linear")


@dataclass
class ImageSamplerConfig:
    steps: int = 15
    guidance_scale: float = 3.5
    temperature: float = 1.0  # tau_0 of the Gumbel noise on confidences (MaskGIT "choice temperature")
    schedule: str = "cosine"  # "cosine" | "linear"

    def validate(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")


@dataclass
class ImageGeneration:
    codes: torch.Tensor  # [B, N] in [0, codebook_size)
    unmask_step: torch.Tensor  # [B, N] step (= forward index) at which each code was fixed
    confidence: torch.Tensor  # [B, N] float32, guided probability of the code when it was fixed
    num_forwards: int
    sequences: torch.Tensor | None = None  # [B, L] the final conditional input with image tokens in place


def mask_ratio(step: int, steps: int, schedule: str) -> float:
    """Fraction of the N image positions still masked after `step` (0-based) of `steps`."""
    ratio = (step + 1) / steps
    if schedule == "cosine":
        return math.cos(math.pi / 2 * ratio)
    return 1.0 - ratio


def masked_after(step: int, steps: int, schedule: str, n: int) -> int:
    """The schedule's number of masked positions after `step`: floor(N * mask_ratio), 0 at the end."""
    if step >= steps - 1:
        return 0
    return max(0, math.floor(n * mask_ratio(step, steps, schedule)))


def _image_positions(ids: torch.Tensor, mask_id: int) -> torch.Tensor:
    """[B, N] column indices of the MASK tokens of each row (the image part of a t2i layout)."""
    is_mask = ids == mask_id
    counts = is_mask.sum(1)
    if counts.min() != counts.max() or counts[0] == 0:
        raise ValueError(f"every row needs the same, non-zero number of MASK image positions, got {counts.tolist()}")
    return is_mask.nonzero()[:, 1].view(ids.shape[0], -1)


def _slice_logits(model, ids, mask, positions, layout: VocabLayout) -> torch.Tensor:
    """Model logits at `positions` [B, N], image-code columns only -> [B, N, K] float32."""
    hidden = model(ids, attention_mask=mask, compute_logits=False).hidden_states
    hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
    return F.linear(hidden, model.lm_head.weight[layout.image_slice]).float()


@torch.no_grad()
def generate_image(
    model,
    cond_ids: torch.Tensor,
    cond_mask: torch.Tensor | None,
    uncond_ids: torch.Tensor | None,
    uncond_mask: torch.Tensor | None,
    layout: VocabLayout,
    config: ImageSamplerConfig,
    generator: torch.Generator | None = None,
) -> ImageGeneration:
    """cond_ids [B, L]: t2i inputs whose image part is MASK; uncond_ids [B or 1, L'] the empty-text twin
    (needed when guidance_scale > 0). Returns every image code filled; see the module doc."""
    config.validate()
    device = cond_ids.device
    B = cond_ids.shape[0]
    w = config.guidance_scale
    cond_ids = cond_ids.clone()
    cond_pos = _image_positions(cond_ids, layout.mask_id)
    N = cond_pos.shape[1]

    if w > 0:
        if uncond_ids is None:
            raise ValueError("guidance_scale > 0 needs uncond_ids")
        if uncond_ids.shape[0] == 1 and B > 1:
            uncond_ids = uncond_ids.expand(B, -1)
            uncond_mask = None if uncond_mask is None else uncond_mask.expand(B, -1)
        uncond_ids = uncond_ids.clone()
        uncond_pos = _image_positions(uncond_ids, layout.mask_id)
        if uncond_pos.shape[1] != N:
            raise ValueError(f"uncond has {uncond_pos.shape[1]} image positions, cond has {N}")
        # One batched forward when the layouts have the same length; positions count padding, so
        # padding one of them to the other's length would change its result.
        batched = uncond_ids.shape[1] == cond_ids.shape[1] and (cond_mask is None) == (uncond_mask is None)

    codes = torch.full((B, N), -1, dtype=torch.long, device=device)  # -1 = still masked
    unmask_step = torch.full((B, N), -1, dtype=torch.long, device=device)
    confidence = torch.zeros(B, N, dtype=torch.float32, device=device)
    rows = torch.arange(B, device=device)[:, None]
    num_forwards = 0

    for step in range(config.steps):
        unknown = codes < 0
        n_unknown = int(unknown[0].sum())  # identical in every row: the schedule is shared
        if n_unknown == 0:
            break
        if w > 0 and batched:
            both = _slice_logits(
                model,
                torch.cat([cond_ids, uncond_ids]),
                None if cond_mask is None else torch.cat([cond_mask, uncond_mask]),
                torch.cat([cond_pos, uncond_pos]),
                layout,
            )
            cond, un = both.chunk(2)
            logits = (1 + w) * cond - w * un
        elif w > 0:
            cond = _slice_logits(model, cond_ids, cond_mask, cond_pos, layout)
            un = _slice_logits(model, uncond_ids, uncond_mask, uncond_pos, layout)
            logits = (1 + w) * cond - w * un
        else:
            logits = _slice_logits(model, cond_ids, cond_mask, cond_pos, layout)
        num_forwards += 1

        log_probs = torch.log_softmax(logits.double(), dim=-1)
        u = torch.rand(log_probs.shape, generator=generator, dtype=torch.float64, device=device)
        sampled = (log_probs - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max = multinomial draw
        sampled = torch.where(unknown, sampled, codes)
        sampled_logp = log_probs.gather(-1, sampled[..., None]).squeeze(-1)

        # Which positions stay masked: the lowest noisy confidences among the unknown ones.
        tau = config.temperature * (1.0 - (step + 1) / config.steps)  # non-compounding anneal
        g = -torch.log(-torch.log(torch.rand(B, N, generator=generator, dtype=torch.float64, device=device)))
        score = torch.where(unknown, sampled_logp + tau * g, torch.full_like(sampled_logp, float("inf")))
        keep_masked = min(masked_after(step, config.steps, config.schedule, N), n_unknown - 1)
        order = torch.sort(score, dim=1, stable=True).indices  # ascending: least confident first
        still = torch.zeros_like(unknown)
        still.scatter_(1, order[:, :keep_masked], True)
        fixed_now = unknown & ~still

        codes = torch.where(fixed_now, sampled, codes)
        unmask_step[fixed_now] = step
        confidence = torch.where(fixed_now, sampled_logp.exp().float(), confidence)
        image_tokens = torch.where(codes >= 0, layout.code_to_token(codes), torch.full_like(codes, layout.mask_id))
        cond_ids[rows, cond_pos] = image_tokens
        if w > 0:
            uncond_ids[rows, uncond_pos] = image_tokens

    return ImageGeneration(
        codes=codes, unmask_step=unmask_step, confidence=confidence, num_forwards=num_forwards, sequences=cond_ids
    )
