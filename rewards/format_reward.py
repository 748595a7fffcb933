"""Format compliance: one ``<think>...</think>`` block followed by a non-empty answer (paper weight 0.5).

Modes:
  * ``strict``: 1.0 if the whole response matches ``pattern`` (default: optional whitespace, exactly one
    think block with non-empty reasoning, then a non-empty answer), else 0.0;
  * ``partial``: a quarter for each of (an opening tag, a closing tag, exactly one block in the right
    order, a non-empty answer after it), so a model that is getting there is rewarded a little.
A custom ``pattern`` (a regex matched against the whole response with DOTALL) replaces the default
strict test. Regexes run in the sandbox worker, so a catastrophic user pattern is cut off by the deadline.
"""

from __future__ import annotations

import re

from rewards.api import RewardInput, RewardResult

DEFAULT_PATTERN = r"\s*<think>(?:(?!</?think>).)*\S(?:(?!</?think>).)*</think>\s*\S(?:(?!</?think>).)*"
MAX_CHARS = 200_000


def format_reward(inp: RewardInput, pattern: str | None = None, mode: str = "strict") -> RewardResult:
    text = inp.response or ""
    if mode not in ("strict", "partial"):
        return RewardResult(0.0, "error", f"format: mode must be 'strict' or 'partial', got {mode!r}")
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS]
    try:
        rx = re.compile(pattern or DEFAULT_PATTERN, re.DOTALL)
    except re.error as exc:
        return RewardResult(0.0, "error", f"format: bad pattern: {exc}")
    if rx.fullmatch(text):
        return RewardResult(1.0, "ok", "matches")
    if mode == "strict":
        return RewardResult(0.0, "ok", "does not match")
    opens, closes = text.count("<think>"), text.count("</think>")
    score = 0.25 * (opens >= 1) + 0.25 * (closes >= 1)
    one_block = opens == 1 and closes == 1 and text.index("<think>") < text.index("</think>")
    score += 0.25 * one_block
    if closes >= 1 and text[text.rindex("</think>") + len("</think>"):].strip():
        score += 0.25
    # full credit only for a real match (e.g. empty reasoning earns at most 0.75)
    return RewardResult(min(score, 0.75), "ok", f"partial: open={opens} close={closes}")
