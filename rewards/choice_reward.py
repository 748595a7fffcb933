"""Exact-match / multiple-choice correctness, for MMU data whose answers are words or options.

    exact (no choices):  1.0 if normalise(response) == normalise(gold)
    choices given:       the answer is the choice the response names first (whole words, case-folded);
                         1.0 if that choice is the gold, 0.0 if another one, "unparsable" if none

normalise = case-fold, collapse whitespace, strip surrounding punctuation. `choices` comes from the
reward's kwargs (the same options for every row) or from `metadata["choices"]` of the row.
"""

from __future__ import annotations

import re

from rewards.api import RewardInput, RewardResult

MAX_CHARS = 10_000
_PUNCT = " \t\n.,;:!?\"'()[]{}"


def normalise(text: str) -> str:
    return " ".join(str(text).casefold().split()).strip(_PUNCT)


def first_choice(response: str, choices: list[str]) -> str | None:
    """The choice whose first whole-word occurrence in the response comes first (ties: the longer)."""
    text = normalise(response)
    best: tuple[int, int, str] | None = None
    for choice in choices:
        c = normalise(choice)
        if not c:
            continue
        m = re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text)
        if m and (best is None or (m.start(), -len(c)) < (best[0], best[1])):
            best = (m.start(), -len(c), choice)
    return None if best is None else best[2]


def choice_reward(inp: RewardInput, choices: list[str] | None = None) -> RewardResult:
    if inp.gold is None or not normalise(inp.gold):
        return RewardResult(0.0, "error", "choice: the row has no gold answer")
    response = (inp.response or "")[:MAX_CHARS]
    choices = choices if choices is not None else inp.metadata.get("choices")
    if not choices:
        ok = normalise(response) == normalise(inp.gold)
        return RewardResult(float(ok), "ok", "exact match" if ok else "no exact match")
    picked = first_choice(response, [str(c) for c in choices])
    if picked is None:
        return RewardResult(0.0, "unparsable", "no choice named")
    ok = normalise(picked) == normalise(inp.gold)
    return RewardResult(float(ok), "ok", f"chose {picked!r}")
