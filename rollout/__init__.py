"""unigrpo rollout package."""
