"""User reward functions loaded by path (`tests.plugins.e2e_rewards:...`) in the end-to-end tests."""

import time


def sleepy(task, prompt, response, gold, image=None, metadata=None, **kwargs):
    """A reward that hangs: the reward actors must time it out instead of stalling the step."""
    time.sleep(3600)
    return 1.0


def length_bonus(task, prompt, response, gold, image=None, metadata=None, **kwargs):
    return min(len(response), 8) / 8.0
