"""Reward plugins that misbehave at call time, for the fault-injection tests (tests/test_faults_*.py)."""

import math
import os
import sys
import time

from rewards.api import RewardResult


def huge(inp, **kwargs):
    """Finite but absurd: 2.0 * 1e300 * 2 overflows a weighted sum to inf."""
    return 1e300


def not_finite(inp, **kwargs):
    return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}.get(inp.response, 1.0)


def huge_result(inp, **kwargs):
    return RewardResult(1e300, "ok", "claims ok")


def eleven(inp, **kwargs):
    return 11.0


def chatty(inp, megabytes=20, **kwargs):
    """Prints `megabytes` MB to stdout and stderr, then answers."""
    line = "x" * 1023 + "\n"
    for _ in range(megabytes * 512):
        sys.stdout.write(line)
        sys.stderr.write(line)
    return 1.0


def slow_ok(inp, marker=None, seconds=2.0, **kwargs):
    """Leaves a marker file when it starts (so a test can kill its actor mid-call), then answers 1."""
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return 1.0


def slow_after(inp, marker, fast=0.05, slow=0.15, **kwargs):
    """Sleeps `fast` seconds per call, or `slow` once the file `marker` exists (a test makes an actor slow
    mid-run without freezing it), then answers 1."""
    time.sleep(slow if os.path.exists(marker) else fast)
    return 1.0
