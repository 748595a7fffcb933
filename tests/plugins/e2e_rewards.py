"""User reward functions loaded by path (`tests.plugins.e2e_rewards:...`) in the end-to-end tests."""

import time


def sleepy(inp, **kwargs):
    """A reward that hangs: the reward actors must time it out instead of stalling the step."""
    time.sleep(3600)
    return 1.0


def length_bonus(inp, **kwargs):
    return min(len(inp.response), 8) / 8.0
