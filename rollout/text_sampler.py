"""Text generation for a masked-diffusion LM: LLaDA's semi-autoregressive low-confidence remasking.

The response starts as `gen_length` MASK tokens after the prompt and is filled block by block, left
to right (reference 5.1). Inside a block, every step runs the model, samples a token for each masked
position of the block and keeps ("unmasks") the most confident ones; unmasked tokens are never
re-masked. Two ways of choosing how many to keep per step:

    fixed schedule (threshold=None): n masked positions over s steps, base = n // s, the first n % s
                                     steps get one extra (LLaDA's `get_num_transfer_tokens`)
    confidence threshold:            keep every masked in-block position whose confidence is
                                     >= threshold, and at least the most confident one (Fast-dLLM /
                                     dLLM-RL `low_confidence_dynamic`); a block then takes as many steps
                                     as it needs (<= block_length) and `steps` is not used

Two ways of running the model (reference 5.2):

    use_cache=False: the whole sequence every step (the plain LLaDA algorithm, exact)
    use_cache=True:  at the start of each block one full forward that also returns K/V; the K/V of the
                     positions before the block (the prompt and finished blocks) are kept, and the
                     remaining steps of the block feed only x[block start : window end] on top of that
                     prefix cache. Approximate: the cached prefix K/V do not see the tokens unmasked
                     inside the block, and positions past the window (`further_horizon`) are not seen.
                     It is exact when each block has one step, and for a one-layer model that is fed the
                     whole rest of the sequence (a layer-0 K/V depends only on its own token and position).

Details that matter for RL and are chosen deliberately:
- Logits are computed only at the current block's positions and only for the allowed columns
  (`text_only`: [0, text_vocab_size), so image-code ids can't appear in text); `suppress_mask` removes
  the mask id (otherwise a position could be "unmasked" to MASK). Sampling and confidences are float64.
- temperature > 0 samples by Gumbel-max, argmax(logits / T + Gumbel), which is LLaDA's
  argmax(exp(logits) / (-log U)^T) written in log space; temperature 0 is greedy argmax. The recorded
  `confidence` is the untempered softmax probability of the chosen token (for `remasking="random"` the
  selection uses uniform noise, but the recorded value is still the model probability).
- Random draws cover exactly [rows, block_length, vocab] per step, so the cached and uncached paths
  consume the generator identically and can be compared sample for sample.
- CFG (cfg_scale > 0): a second copy of the batch with every prompt column set to MASK runs in the same
  forward; logits = un + (cfg + 1) * (cond - un). One CFG step counts as one forward.
- Early stop: after a block is finished, a sample whose block ends in EOS is done; its remaining
  positions are set to EOS (recorded with the sample's last forward index, confidence 1.0 and
  `early_filled=True`) and it leaves the batch, so later forwards run on fewer rows.
- Under a threshold, rows finish a block after different numbers of steps; a finished row leaves the
  batch (and the cache) for the rest of that block, so `unmask_step` counts only forwards it took part in.
- "Masked" is tracked as a separate state, not by comparing tokens with the mask id: with
  suppress_mask=False a position may legitimately be unmasked *to* the mask id (as in LLaDA's code).
- Left-padded prompts: the attention mask (0 = pad) is extended with ones over the response and passed
  on every forward; positions count the padding, as in LLaDA/MMaDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from policy.vocab import VocabLayout

REMASKING = ("low_confidence", "random")


@dataclass
class TextSamplerConfig:
    gen_length: int = 256
    steps: int = 256
    block_length: int = 32
    temperature: float = 0.0
    remasking: str = "low_confidence"  # "low_confidence" | "random"
    cfg_scale: float = 0.0
    use_cache: bool = False  # per-block prefix KV cache (approximate, see module doc)
    further_horizon: int | None = None  # cached steps feed block + this many later positions; None = all
    threshold: float | None = None  # confidence-threshold unmasking; None = fixed per-step counts
    early_stop: bool = True  # stop a sample once a finished block ends in EOS
    suppress_mask: bool = True  # never sample the mask id
    text_only: bool = True  # sample only from the text vocabulary

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def validate(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0:
            raise ValueError(f"gen_length ({self.gen_length}) and block_length ({self.block_length}) must be > 0")
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length={self.gen_length} must be a multiple of block_length={self.block_length}"
            )
        if self.threshold is None:
            if self.steps <= 0 or self.steps % self.num_blocks:
                raise ValueError(
                    f"steps={self.steps} must be a positive multiple of the number of blocks "
                    f"(gen_length / block_length = {self.num_blocks})"
                )
            if self.steps // self.num_blocks > self.block_length:
                raise ValueError(
                    f"steps per block ({self.steps // self.num_blocks}) exceeds block_length={self.block_length}: "
                    "some steps would unmask nothing"
                )
        elif not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {self.threshold}")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {REMASKING}, got {self.remasking!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.further_horizon is not None and self.further_horizon < 0:
            raise ValueError(f"further_horizon must be >= 0 or None, got {self.further_horizon}")


@dataclass
class TextGeneration:
    sequences: torch.Tensor  # [B, L0 + gen] prompt followed by the response
    response_ids: torch.Tensor  # [B, gen]
    unmask_step: torch.Tensor  # [B, gen] per-sample forward index at which each position was unmasked
    confidence: torch.Tensor  # [B, gen] float32, model probability of the token when it was unmasked
    num_forwards: int  # model calls for the whole batch
    sample_forwards: torch.Tensor  # [B] forwards each sample took part in (differs under early stop)
    early_filled: torch.Tensor  # [B, gen] bool, positions set to EOS by early stop


def step_counts(n: int, steps: int) -> list[int]:
    """n tokens over `steps` steps: base = n // steps, the first n % steps steps get one more."""
    base, extra = divmod(n, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def head_logits(model, hidden: torch.Tensor, num_columns: int) -> torch.Tensor:
    """LM head restricted to the first `num_columns` vocabulary rows (the text vocabulary)."""
    weight = model.lm_head.weight
    return F.linear(hidden, weight[:num_columns] if num_columns < weight.shape[0] else weight)


def sample_tokens(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [..., V] float64 -> (token ids, untempered probability of each chosen token)."""
    if temperature > 0:
        u = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
        tokens = (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
    else:
        tokens = logits.argmax(-1)
    probs = torch.softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return tokens, probs


class _BlockModel:
    """Runs the model for the current block: full recompute, or a prefix KV cache built at block start."""

    def __init__(self, model, config: TextSamplerConfig, layout: VocabLayout, prompt_len: int) -> None:
        self.model, self.config, self.layout, self.prompt_len = model, config, layout, prompt_len
        self.columns = layout.text_vocab_size if config.text_only else layout.vocab_size
        self.cache = None

    def _inputs(self, x: torch.Tensor, attn: torch.Tensor | None):
        if self.config.cfg_scale > 0:  # unconditional twin: prompt columns masked
            un = x.clone()
            un[:, : self.prompt_len] = self.layout.mask_id
            x = torch.cat([x, un])
            attn = None if attn is None else torch.cat([attn, attn])
        return x, attn

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (bool [R]) of the cache; the CFG twin rows follow their originals."""
        if self.cache is not None:
            if self.config.cfg_scale > 0:
                rows = torch.cat([rows, rows])
            self.cache = [(k[rows], v[rows]) for k, v in self.cache]

    def logits(self, x: torch.Tensor, attn: torch.Tensor | None, s: int, e: int) -> torch.Tensor:
        """x [A, L] -> float64 logits [A, e - s, columns] at the block's positions."""
        x, attn = self._inputs(x, attn)
        c = self.config
        if not c.use_cache:
            hidden = self.model(x, attention_mask=attn, compute_logits=False).hidden_states[:, s:e]
        elif self.cache is None:  # block start: full forward, keep K/V of the positions before the block
            out = self.model(x, attention_mask=attn, use_cache=True, compute_logits=False)
            self.cache = [(k[:, :, :s], v[:, :, :s]) for k, v in out.past_key_values]
            hidden = out.hidden_states[:, s:e]
        else:
            end = x.shape[1] if c.further_horizon is None else min(e + c.further_horizon, x.shape[1])
            out = self.model(
                x[:, s:end],
                attention_mask=None if attn is None else attn[:, :end],
                past_key_values=self.cache,
                compute_logits=False,
            )
            hidden = out.hidden_states[:, : e - s]
        logits = head_logits(self.model, hidden, self.columns).double()
        if c.cfg_scale > 0:
            cond, un = logits.chunk(2)
            logits = un + (c.cfg_scale + 1) * (cond - un)
        if c.suppress_mask and self.layout.mask_id < self.columns:
            logits[..., self.layout.mask_id] = float("-inf")
        return logits


@torch.no_grad()
def generate_text(
    model,
    prompt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layout: VocabLayout,
    config: TextSamplerConfig,
    generator: torch.Generator | None = None,
) -> TextGeneration:
    """Fill `config.gen_length` masked positions after each (left-padded) prompt; see the module doc."""
    config.validate()
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be [B, L0], got shape {tuple(prompt_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != prompt_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} != prompt_ids {tuple(prompt_ids.shape)}")
    device = prompt_ids.device
    B, L0 = prompt_ids.shape
    gen, bl = config.gen_length, config.block_length
    mask_id, eos_id = layout.mask_id, layout.eos_id

    x = torch.cat([prompt_ids, torch.full((B, gen), mask_id, dtype=torch.long, device=device)], dim=1)
    attn = None
    if attention_mask is not None:
        attn = torch.cat([attention_mask.long(), torch.ones(B, gen, dtype=torch.long, device=device)], dim=1)
    undecided = torch.ones(B, gen, dtype=torch.bool, device=device)  # not yet unmasked (tracked apart
    # from the token value, so a position is never mistaken for masked by what was sampled there)
    unmask_step = torch.full((B, gen), -1, dtype=torch.long, device=device)
    confidence = torch.zeros(B, gen, dtype=torch.float32, device=device)
    early_filled = torch.zeros(B, gen, dtype=torch.bool, device=device)
    sample_forwards = torch.zeros(B, dtype=torch.long, device=device)
    num_forwards = 0
    active = torch.arange(B, device=device)  # rows still generating (early stop removes rows)
    steps_per_block = config.steps // config.num_blocks if config.threshold is None else None

    for b in range(config.num_blocks):
        s, e = L0 + b * bl, L0 + (b + 1) * bl  # block columns in x
        cols = slice(s - L0, e - L0)  # the same block in response coordinates
        runner = _BlockModel(model, config, layout, L0)  # fresh prefix cache per block
        schedule = step_counts(bl, steps_per_block) if steps_per_block else None
        rows = active  # rows still filling this block (under a threshold they finish at different steps)
        step = 0
        while rows.numel():
            masked = undecided[rows, cols]  # [R, bl]
            logits = runner.logits(x[rows], None if attn is None else attn[rows], s, e)
            tokens, probs = sample_tokens(logits, config.temperature, generator)
            if config.remasking == "low_confidence":
                score = probs.clone()
            else:
                score = torch.rand(probs.shape, generator=generator, dtype=torch.float64, device=device)
            score[~masked] = float("-inf")  # only masked positions of this block compete

            if config.threshold is None:
                order = torch.sort(score, dim=1, descending=True, stable=True).indices
                select = torch.zeros_like(masked)
                select.scatter_(1, order[:, : schedule[step]], True)
            else:
                select = masked & (score >= config.threshold)
                best = score.argmax(dim=1)  # at least one per step: the most confident masked position
                select[torch.arange(len(rows), device=device), best] = True
            select &= masked

            x[rows, s:e] = torch.where(select, tokens, x[rows, s:e])
            fidx = sample_forwards[rows][:, None]  # per-sample index of this forward
            unmask_step[rows, cols] = torch.where(select, fidx, unmask_step[rows, cols])
            confidence[rows, cols] = torch.where(select, probs.float(), confidence[rows, cols])
            undecided[rows, cols] = masked & ~select
            sample_forwards[rows] += 1
            num_forwards += 1
            step += 1

            unfinished = undecided[rows, cols].any(1)
            if not unfinished.all():  # drop rows whose block is full (and their cache rows)
                rows = rows[unfinished]
                runner.keep(unfinished)

        if config.early_stop and b < config.num_blocks - 1:
            done = x[active, e - 1] == eos_id
            if done.any():
                stop = active[done]
                x[stop, e:] = eos_id
                unmask_step[stop, e - L0 :] = (sample_forwards[stop] - 1)[:, None]
                confidence[stop, e - L0 :] = 1.0
                early_filled[stop, e - L0 :] = True
                undecided[stop, e - L0 :] = False
                active = active[~done]

    return TextGeneration(
        sequences=x,
        response_ids=x[:, L0:].clone(),
        unmask_step=unmask_step,
        confidence=confidence,
        num_forwards=num_forwards,
        sample_forwards=sample_forwards,
        early_filled=early_filled,
    )
