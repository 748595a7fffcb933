"""A plugin whose import never finishes."""
import time

time.sleep(3600)


def reward(inp):
    return 1.0
