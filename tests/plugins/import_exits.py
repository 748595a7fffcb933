"""A plugin whose import ends the process that imports it."""
import os

os._exit(3)


def reward(inp):
    return 1.0
