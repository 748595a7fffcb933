"""Rewards for UniGRPO: rule rewards (math correctness, format), model rewards (CLIP) and user plugins.

The package is self-contained (it imports nothing from policy/rollout/trainer/rl) so that reward
workers can start quickly and the `unigrpo rewards check` command runs without the training stack.
"""

from rewards.api import RewardInput, RewardResult, RewardSpec, ScoredSample

__all__ = ["RewardInput", "RewardResult", "RewardSpec", "ScoredSample"]
