"""A plugin whose import allocates 100 GB."""

HOARD = bytearray(100 * 1024**3)


def reward(inp):
    return 1.0
