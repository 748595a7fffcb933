"""Group-normalised advantages (UniGRPO eq. 15, the same value for every token of a response).

    A_i = (r_i - mean_G r) / (std_G r + eps)          over the G responses to one prompt

A group whose rewards are all equal carries no learning signal (every A_i = 0). Such groups are
counted; with `drop_zero_variance_groups` they are removed from the training batch instead of
spending learner compute on zero gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Advantages:
    values: np.ndarray  # [N] float32, one per rollout
    keep: np.ndarray  # [N] bool, False for rollouts of dropped groups
    zero_variance_groups: int
    groups: int


def group_normalise(
    rewards: np.ndarray, group_ids: np.ndarray, eps: float = 1e-6, drop_zero_variance: bool = False
) -> Advantages:
    rewards = np.asarray(rewards, dtype=np.float64)
    group_ids = np.asarray(group_ids)
    values = np.zeros_like(rewards)
    keep = np.ones(len(rewards), dtype=bool)
    zero_var = 0
    uniq = np.unique(group_ids)
    for g in uniq:
        idx = np.flatnonzero(group_ids == g)
        r = rewards[idx]
        std = r.std()  # population std, as GRPO implementations use
        if std < 1e-12:
            zero_var += 1
            keep[idx] = not drop_zero_variance
            continue
        values[idx] = (r - r.mean()) / (std + eps)
    return Advantages(values=values.astype(np.float32), keep=keep, zero_variance_groups=zero_var, groups=len(uniq))
