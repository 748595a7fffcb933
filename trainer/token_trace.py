"""Token traces on one learner rank: the per-token terms of the UniGRPO loss for a few traced rows.

The driver marks rows to trace (`TrainBatch.trace`, chosen by rl/token_traces.py from `run.trace_groups`);
inside `Learner.update`, for every inner iteration n and micro-batch, `TokenTrace.add` keeps, for each
masked token t of a traced row (the same tensors the loss used, trainer/unigrpo.py):

    logp      log pi_theta(o_t | q, o~)   the weights of iteration n (before its optimizer step)
    logp_old  log pi_old(o_t | q, o~)     the clip centre (pi_prox under the decoupled objective)
    logp_version  log pi_{v(o)}            the weights that sampled the row, when that is not pi_old (stale
                                          rows, decoupled objective); NaN otherwise
    ratio     r_t = exp(logp - logp_old)
    clipped   -1 where r_t < 1 - eps_low and A_i < 0, +1 where r_t > 1 + eps_high and A_i > 0 (the clip
              binds: the token's gradient is zero), 0 elsewhere; the loss's clip_low / clip_high counts
    kl        exp(d) - d - 1, d = logp_ref - logp (k3); NaN without a reference (beta = 0)
    entropy   -sum_v pi_theta(v) log pi_theta(v) at the position, on the log-prob support
    advantage A_i

`result()` is a dict of flat numpy arrays (one entry per traced (token, iteration)) with the shard-local
row and column of each token; the group (trainer/learner_group.py) makes rows global and adds the mask
ratio and response position. Nothing here changes the update.
"""

from __future__ import annotations

import numpy as np
import torch

FLOAT_KEYS = ("logp", "logp_old", "logp_version", "ratio", "kl", "entropy", "advantage")


class TokenTrace:
    def __init__(self, traced: np.ndarray | None, eps_low: float, eps_high: float) -> None:
        self.traced = None if traced is None or not traced.any() else torch.from_numpy(np.asarray(traced, bool))
        self.eps_low, self.eps_high = eps_low, eps_high
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, n: int, rows: np.ndarray, masked: torch.Tensor, logp: torch.Tensor, old: torch.Tensor,
            ref: torch.Tensor | None, advantages: torch.Tensor, entropy: torch.Tensor | None,
            version_logp: torch.Tensor | None = None) -> None:
        """One micro-batch of iteration n: rows [B] shard-local row ids, masked [B, L]; the per-token tensors
        are [M], in the row-major order of `masked` (as masked_token_logprobs returns them)."""
        rows = torch.from_numpy(np.asarray(rows))
        if self.traced is None or not self.traced[rows].any():
            return  # nothing traced here: no nonzero over the mask, so no device sync on the update's path
        tok_row, tok_col = (t.cpu() for t in torch.nonzero(masked, as_tuple=True))
        shard_row = rows[tok_row]
        keep = self.traced[shard_row]
        if not keep.any():
            return

        def pick(t: torch.Tensor | None) -> np.ndarray:
            if t is None:
                return np.full(int(keep.sum()), np.nan, np.float32)
            return t.detach().float().cpu()[keep].numpy()

        logp_k, old_k, adv_k = pick(logp), pick(old), pick(advantages)
        ratio = np.exp(logp_k - old_k)
        clipped = np.where((ratio > 1.0 + self.eps_high) & (adv_k > 0), 1,
                           np.where((ratio < 1.0 - self.eps_low) & (adv_k < 0), -1, 0)).astype(np.int8)
        kl = np.full_like(logp_k, np.nan)
        if ref is not None:
            d = pick(ref) - logp_k
            kl = np.exp(d) - d - 1.0
        self.parts.append({
            "row": shard_row[keep].numpy().astype(np.int64), "col": tok_col[keep].numpy().astype(np.int64),
            "iteration": np.full(int(keep.sum()), n, np.int64), "logp": logp_k, "logp_old": old_k,
            "logp_version": pick(version_logp), "ratio": ratio, "clipped": clipped, "kl": kl,
            "entropy": pick(entropy), "advantage": adv_k,
        })

    def result(self) -> dict[str, np.ndarray] | None:
        if not self.parts:
            return None
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}


def merge_ranks(traces: list[dict | None], starts: list[int], ratios: np.ndarray,
                positions: np.ndarray) -> dict[str, np.ndarray] | None:
    """The ranks' traces as one batch-level dict: rows made global (+ the shard's first row), and per token
    its response position (column - the row's first scored column), the row's |o_i| (scored positions,
    trainer/unigrpo.py scored_positions [N, L]) and the mask ratio p_{i,n} of its row and iteration
    (ratios [mu, N])."""
    parts = []
    for trace, start in zip(traces, starts):
        if trace is None:
            continue
        row = trace["row"] + start
        first = positions.argmax(axis=1)
        parts.append({**{k: v for k, v in trace.items() if k not in ("row", "col")}, "row": row,
                      "position": trace["col"] - first[row], "response_len": positions.sum(axis=1)[row],
                      "mask_ratio": ratios[trace["iteration"], row].astype(np.float32)})
    if not parts:
        return None
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
