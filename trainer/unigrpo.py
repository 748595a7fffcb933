"""UniGRPO, the RL objective of MMaDA (arXiv 2505.15809 §2.3, Algorithm 1), in one place.

A masked-diffusion LM has no token-by-token chain rule, so the log-likelihood of a response o_i is
estimated on a partially masked copy of it, with the prompt q always clean:

    0. positions     which response positions make up o_i                                (scored_positions)
                     "through_first_eos": the content and the first EOS (d1, dLLM-RL); "all": every
                     generated position, EOS padding included
    1. mask ratio    p_{i,n} for response i at inner iteration n = 1..mu         (mask_ratios)
    2. mask          exactly k_i = max(1, round(p_{i,n} * |o_i|)) response positions -> [MASK]
                     (one mask per (response, iteration), shared by theta, old and ref)  (sample_masks)
    3. log-probs     log pi(o_{i,t} | q, o~_i) at the masked positions t only               (masked_token_logprobs)
                     "sampler" support: the distribution the text sampler drew from,
                       log_softmax(lm_head(h_t)[text ids, MASK removed] / T_rollout)[o_{i,t}]
                     "full" support: log_softmax(lm_head(h_t))[o_{i,t}] over the whole vocabulary;
                     image responses: over the image-code slice, temperature 1 (either support)
    4. objective     per masked token, with A_i the response's advantage                   (unigrpo_loss)
                     r_t   = exp(logp_theta - logp_old)
                     surr_t = min(r_t * A_i, clip(r_t, 1 - eps_low, 1 + eps_high) * A_i)
                     kl_t  = exp(logp_ref - logp_theta) - (logp_ref - logp_theta) - 1        (k3, >= 0)
                     loss  = -mean_i [ (1/k_i) sum_{t masked in o_i} (surr_t - beta * kl_t) ]   "sequence"
                       or  = -(1/sum_i k_i) sum_i sum_t (surr_t - beta * kl_t)                   "token"
                     asynchronous rollouts (docs/async.md), a row sampled by an older version v(o):
                       "behaviour":  logp_old = log pi_{v(o)}, the policy that sampled o
                       "decoupled":  logp_old = log pi_prox (the learner's weights at the update's start)
                                     and surr_t *= w_t = min(pi_prox / pi_{v(o)}, behaviour_weight_cap)
                     (fresh rows: pi_prox = pi_{v(o)}, no w_t: both are the synchronous objective)

Mask-ratio schedules across the mu inner iterations (docs/architecture.md, "One RL step"), all clamped to [p_min, 1]:
    stratified     p_{i,n} = (u_i + (n-1)/mu) mod 1,  u_i ~ U(0,1): one ratio in each stratum
                   [k/mu, (k+1)/mu), with a random phase per response (the paper's 100 -> 300, 500, ...)
    paper_formula  t_1 = floor(u_i * T),  t_n = floor((n-1)/(mu-1) * (T - t_1) + t_1),  p = t_n / T
                   (Algorithm 1 as printed; the last iteration is fully masked)
    random         p_{i,n} ~ U(p_min, 1) independently per iteration
    full           p = 1 (mask the whole response, d1-style), for comparison

The learner (trainer/learner.py) calls these in this order; everything here is a pure function of
its arguments (numpy Generators for randomness), so it is tested on tiny tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

SCHEDULES = ("stratified", "paper_formula", "random", "full")
LOSS_NORMS = ("sequence", "token")
RESPONSE_POSITIONS = ("all", "through_first_eos")
LOGPROB_SUPPORTS = ("sampler", "full")
OFF_POLICY = ("decoupled", "behaviour")


@dataclass
class UniGRPOConfig:
    """The paper leaves eps, beta, the schedule details and mu open; defaults and reasons in docs/learner.md."""

    mu: int = 2  # inner iterations (gradient updates) per rollout batch
    eps_low: float = 0.2  # clip ratio below at 1 - eps_low
    eps_high: float = 0.2  # clip ratio above at 1 + eps_high
    beta: float = 0.0  # k3 KL coefficient; 0 removes the reference model entirely
    mask_schedule: str = "stratified"
    p_min: float = 0.0  # lower clamp of every mask ratio; max(1, .) still masks at least one token
    num_timesteps: int = 1000  # T of the `paper_formula` schedule
    loss_norm: str = "sequence"  # "sequence": mean over masked tokens, then over responses; "token"
    logprob_chunk_size: int = 1024  # masked positions per LM-head chunk
    response_positions: str = "through_first_eos"  # which positions form o_i (|o_i|, masks, 1/k_i)
    logprob_support: str = "sampler"  # text log-probs over the sampler's support at its temperature
    temperature: float = 1.0  # the rollout's text temperature (scored at 1 when rollouts are greedy)
    seed: int = 0  # mask sampling; masks of update k come from Generator([seed, k])
    # stale rows (asynchronous rollouts): whose log-prob centres the clip (docs/async.md)
    off_policy: str = "decoupled"
    behaviour_weight_cap: float = 2.0  # "decoupled": truncation of w_t = pi_prox / pi_behaviour

    def __post_init__(self) -> None:
        if self.mu < 1:
            raise ValueError(f"mu={self.mu} must be >= 1")
        if self.mask_schedule not in SCHEDULES:
            raise ValueError(f"mask_schedule={self.mask_schedule!r} is not one of {SCHEDULES}")
        if self.loss_norm not in LOSS_NORMS:
            raise ValueError(f"loss_norm={self.loss_norm!r} is not one of {LOSS_NORMS}")
        if self.response_positions not in RESPONSE_POSITIONS:
            raise ValueError(f"response_positions={self.response_positions!r} is not one of {RESPONSE_POSITIONS}")
        if self.off_policy not in OFF_POLICY:
            raise ValueError(f"off_policy={self.off_policy!r} is not one of {OFF_POLICY}")
        if self.behaviour_weight_cap < 1:
            raise ValueError(f"behaviour_weight_cap={self.behaviour_weight_cap} must be >= 1")
        if self.logprob_support not in LOGPROB_SUPPORTS:
            raise ValueError(f"logprob_support={self.logprob_support!r} is not one of {LOGPROB_SUPPORTS}")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0.0 <= self.p_min <= 1.0:
            raise ValueError(f"p_min={self.p_min} must lie in [0, 1]")
        if self.eps_low < 0 or self.eps_high < 0 or self.eps_low >= 1:
            raise ValueError(f"eps_low={self.eps_low}, eps_high={self.eps_high}: need 0 <= eps_low < 1, eps_high >= 0")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0")
        if self.logprob_chunk_size < 1 or self.num_timesteps < 1:
            raise ValueError("logprob_chunk_size and num_timesteps must be >= 1")


# ---- 0. which positions are the response ------------------------------------------------------------
def scored_positions(input_ids: np.ndarray, response_mask: np.ndarray, eos_id: int, mode: str) -> np.ndarray:
    """The positions that make up o_i [N, L] bool: the ones masked, counted in |o_i| and k_i, scored.

    all:                every generated position, so EOS padding enters |o_i|, the masks and 1/k_i
    through_first_eos:  positions up to and including the first EOS of each response (all of them
                        when a response has no EOS). Later positions stay in the input, clean, like the
                        prompt: the policy sees them but is neither masked nor trained on them.
    """
    response_mask = np.asarray(response_mask, bool)
    if mode == "all":
        return response_mask
    is_eos = (np.asarray(input_ids) == eos_id) & response_mask
    eos_before = np.cumsum(is_eos, axis=1) - is_eos  # EOS strictly before each position
    return response_mask & (eos_before == 0)


# ---- 1. mask ratios ---------------------------------------------------------------------------
def paper_formula_timesteps(t1: int, num_timesteps: int, mu: int) -> list[int]:
    """Algorithm 1: t_n = floor((n-1)/(mu-1) * (T - t_1) + t_1), n = 1..mu."""
    if mu == 1:
        return [int(t1)]
    return [int(np.floor((n - 1) / (mu - 1) * (num_timesteps - t1) + t1)) for n in range(1, mu + 1)]


def mask_ratios(num_responses: int, cfg: UniGRPOConfig, rng: np.random.Generator) -> np.ndarray:
    """p [mu, N]: the mask ratio of every response at every inner iteration."""
    mu, n = cfg.mu, num_responses
    if cfg.mask_schedule == "stratified":
        u = rng.random(n)
        p = (u[None, :] + np.arange(mu)[:, None] / mu) % 1.0
    elif cfg.mask_schedule == "paper_formula":
        t1 = np.floor(rng.random(n) * cfg.num_timesteps).astype(np.int64)
        p = np.array([paper_formula_timesteps(t, cfg.num_timesteps, mu) for t in t1], dtype=np.float64).T
        p = p / cfg.num_timesteps
    elif cfg.mask_schedule == "random":
        p = rng.uniform(cfg.p_min, 1.0, size=(mu, n))
    else:  # full
        p = np.ones((mu, n))
    return np.clip(p, cfg.p_min, 1.0)


# ---- 2. masks -----------------------------------------------------------------------------------
def num_masked(ratios: np.ndarray, response_lengths: np.ndarray) -> np.ndarray:
    """k = max(1, round(p * |o|)), rounding halves up (not to even)."""
    return np.clip(np.floor(ratios * response_lengths + 0.5), 1, response_lengths).astype(np.int64)


def sample_masks(response_mask: np.ndarray, ratios: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """masked [mu, N, L] bool: exactly num_masked(p, |o_i|) response positions of each row, chosen
    uniformly without replacement; prompt (and padding) positions are never chosen."""
    response_mask = np.asarray(response_mask, bool)
    mu = ratios.shape[0]
    k = num_masked(ratios, response_mask.sum(-1)[None, :])  # [mu, N]
    scores = rng.random((mu, *response_mask.shape))
    scores[:, ~response_mask] = np.inf  # prompt positions sort last and are never reached
    kth = np.take_along_axis(np.sort(scores, axis=-1), (k - 1)[..., None], axis=-1)  # k-th smallest score
    return (scores <= kth) & response_mask[None]


def masks_for_update(response_mask: np.ndarray, cfg: UniGRPOConfig, update_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(ratios [mu, N], masked [mu, N, L]) for the `update_index`-th update: a pure function of
    (seed, update_index), so a resumed run and any sharding of the batch see the same masks."""
    rng = np.random.default_rng([cfg.seed, update_index])
    ratios = mask_ratios(response_mask.shape[0], cfg, rng)
    return ratios, sample_masks(response_mask, ratios, rng)


# ---- 3. masked-token log-probabilities ------------------------------------------------------------
@dataclass(frozen=True)
class TextSupport:
    """Where text log-probs are normalised: the first `columns` ids (None: all), minus `suppressed`,
    at `temperature`. The default is the whole vocabulary at temperature 1."""

    columns: int | None = None
    suppressed: int | None = None
    temperature: float = 1.0


def text_support(cfg: UniGRPOConfig, text_vocab_size: int, mask_id: int) -> TextSupport:
    """`sampler`: what rollout/text_sampler.py draws from (text ids, MASK suppressed, softmax(logits / T)).
    Greedy rollouts (T = 0) have no density to match; they are scored at T = 1."""
    if cfg.logprob_support == "full":
        return TextSupport()
    return TextSupport(columns=text_vocab_size, suppressed=mask_id if mask_id < text_vocab_size else None,
                       temperature=cfg.temperature if cfg.temperature > 0 else 1.0)


def _logprobs_from_logits(
    logits: torch.Tensor, columns: slice | None, targets: torch.Tensor, with_entropy: bool,
    support: TextSupport | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits[:, columns])[target] in fp32 (text rows: on `support`); entropy -sum p log p
    (detached) if asked."""
    logits = (logits if columns is None else logits[:, columns]).float()
    if support is not None:
        if support.suppressed is not None:
            logits = logits.index_fill(1, torch.tensor([support.suppressed], device=logits.device), float("-inf"))
        if support.temperature != 1.0:
            logits = logits / support.temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not with_entropy:
        return logp, logp.new_zeros(())
    with torch.no_grad():
        p = torch.softmax(logits, -1)
        entropy = lse - (p * logits.nan_to_num(neginf=0.0)).sum(-1)
    return logp, entropy


def _chunk_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, columns: slice | None, targets: torch.Tensor, with_entropy: bool,
    support: TextSupport | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM head on one chunk of hidden states, then its log-probs. The head is called as a module
    (not through its weight) so that ZeRO-3 can gather its parameters."""
    return _logprobs_from_logits(head(hidden), columns, targets, with_entropy, support)


def masked_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    is_image: torch.Tensor,
    mask_id: int,
    image_slice: slice,
    chunk_size: int = 1024,
    attention_mask: torch.Tensor | None = None,
    with_entropy: bool = False,
    single_head_call: bool = False,
    text_support: TextSupport | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(o_t | q, o~) at the masked positions, in row-major order of `masked` ([M] fp32).

    input_ids [B, L] are the clean tokens; masked [B, L] bool says which become [MASK]. One forward
    without logits, then the LM head on the masked hidden states only, `chunk_size` rows at a time,
    each chunk recomputed in backward (so at most one chunk of vocabulary-wide logits is alive).
    Text rows are normalised over `text_support` (default: the whole vocabulary at temperature 1);
    image rows over the image-code columns only (targets shifted by the slice start); their logits are
    computed full-width and sliced.

    single_head_call: call the head once on all masked positions (the fp32 softmax is still chunked).
    ZeRO-3 needs this: every head call is a parameter all-gather that all ranks must join, and ranks
    hold different numbers of masked (and image) tokens.
    """
    support = text_support or TextSupport()
    if support.columns is not None or support.suppressed is not None:
        text_targets = input_ids[masked & ~is_image[:, None]]
        outside = text_targets == (-1 if support.suppressed is None else support.suppressed)
        if support.columns is not None:
            outside |= text_targets >= support.columns
        if outside.any():  # a token the support gives probability 0: log-prob -inf, ratio NaN
            raise ValueError(f"text tokens {text_targets[outside][:5].tolist()} lie outside the log-prob support "
                             f"(first {support.columns} ids without {support.suppressed}); use logprob_support=full")
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    out = model(noisy, attention_mask=attention_mask, compute_logits=False)
    hidden = out.hidden_states[masked]  # [M, D]
    targets = input_ids[masked]
    image_rows = is_image[:, None].expand_as(masked)[masked]
    head = model.lm_head
    grad = torch.is_grad_enabled()
    all_logits = head(hidden) if single_head_call else None

    pieces = []
    for is_img in (False, True):
        idx = torch.nonzero(image_rows == is_img).squeeze(-1)
        if idx.numel() == 0:
            continue
        columns = image_slice if is_img else (None if support.columns is None else slice(0, support.columns))
        rows_support = None if is_img else support
        tgt = targets[idx] - (image_slice.start if is_img else 0)
        for s in range(0, idx.numel(), chunk_size):
            rows, t = idx[s:s + chunk_size], tgt[s:s + chunk_size]
            if single_head_call:
                lp, ent = _logprobs_from_logits(all_logits[rows], columns, t, with_entropy, rows_support)
            elif grad:
                lp, ent = checkpoint(_chunk_logprobs, hidden[rows], head, columns, t, with_entropy, rows_support,
                                     use_reentrant=False)
            else:
                lp, ent = _chunk_logprobs(hidden[rows], head, columns, t, with_entropy, rows_support)
            pieces.append((rows, lp, ent))
    # scatter back to the row-major order of `masked` (index_put keeps autograd)
    order = torch.cat([p[0] for p in pieces])
    logp = hidden.new_zeros(hidden.shape[0], dtype=torch.float32).index_put((order,), torch.cat([p[1] for p in pieces]))
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(logp).index_put((order,), torch.cat([p[2] for p in pieces]))
    return logp, entropy


# ---- 4. the objective ----------------------------------------------------------------------------
def token_weights(
    row_of_token: torch.Tensor, masked_per_row: torch.Tensor, loss_norm: str, num_responses: int, num_tokens: int
) -> torch.Tensor:
    """w_t such that loss = -sum_t w_t * (surr_t - beta * kl_t) is the chosen mean.

    sequence: w_t = 1 / (k_i * N)   (mean over the k_i masked tokens of o_i, then over N responses)
    token:    w_t = 1 / sum_i k_i   (one mean over every masked token of the batch)
    N and sum_i k_i are the *global* batch's, so micro-batches and ranks just add their sums.
    """
    if loss_norm == "sequence":
        return 1.0 / (masked_per_row[row_of_token].float() * num_responses)
    return torch.full(row_of_token.shape, 1.0 / num_tokens, device=row_of_token.device)


def unigrpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    cfg: UniGRPOConfig,
    token_groups: torch.Tensor | None = None,
    num_groups: int = 0,
    behaviour_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss over M masked tokens (all arguments [M]; advantages already broadcast to tokens).

    Returns (loss, sums) where sums are weighted/summed statistics that add across micro-batches and
    ranks: loss, policy_loss, kl (weighted like the loss), clip_low/clip_high/ratio (token counts and
    sums), ratio_max. With `token_groups` ([M] ids in [0, num_groups), e.g. the task of each token)
    sums["by_group"] holds [num_groups] sums of weight, policy_loss, kl, clip_count and token_count.
    `behaviour_weight` ([M], no gradient): the decoupled objective's truncated pi_prox / pi_behaviour per token
    (old_logp is then log pi_prox); None is the plain objective.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)  # r_t = pi_theta / pi_old
    clipped = torch.clamp(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    if behaviour_weight is not None:
        surrogate = behaviour_weight * surrogate
    policy_loss = -(weights * surrogate).sum()

    if cfg.beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs reference log-probs")
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0  # k3 estimator of KL(pi_theta || pi_ref), >= 0
        kl_term = (weights * kl).sum()
    else:
        kl_term = logp.new_zeros(())
    loss = policy_loss + cfg.beta * kl_term

    with torch.no_grad():
        # the clip is active (gradient zero) where it binds on the side the advantage pushes towards
        clip_low = ((ratio < 1.0 - cfg.eps_low) & (advantages < 0)).sum().float()
        clip_high = ((ratio > 1.0 + cfg.eps_high) & (advantages > 0)).sum().float()
        sums = {
            "loss": loss.detach(),
            "policy_loss": policy_loss.detach(),
            "kl": kl_term.detach(),
            "clip_low_count": clip_low,
            "clip_high_count": clip_high,
            "ratio_sum": ratio.sum(),
            "ratio_max": ratio.max() if ratio.numel() else ratio.new_zeros(()),
            "token_count": torch.tensor(float(ratio.numel())),
        }
        if token_groups is not None:
            def by_group(values: torch.Tensor) -> torch.Tensor:
                return torch.zeros(num_groups, dtype=torch.float64, device=values.device).index_add_(
                    0, token_groups, values.double())

            clipped_now = ((ratio < 1.0 - cfg.eps_low) & (advantages < 0)) | ((ratio > 1.0 + cfg.eps_high) & (advantages > 0))
            sums["by_group"] = {
                "weight": by_group(weights),
                "policy_loss": by_group(-weights * surrogate),
                "kl": by_group(weights * kl) if cfg.beta > 0 else by_group(torch.zeros_like(weights)),
                "clip_count": by_group(clipped_now.float()),
                "token_count": by_group(torch.ones_like(weights)),
            }
    return loss, sums
