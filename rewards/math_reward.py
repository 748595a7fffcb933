"""The math correctness reward: extract, normalise, parse, compare. 1.0 if equivalent else 0.0.

This function is meant to run inside a sandbox worker (rewards/sandbox.py), which bounds its time and
memory; by itself it only bounds sizes (see math_guard). Status "unparsable" means the response had no
answer we could read (or one too complex to check); "error" is reserved for a missing or unusable gold.
"""

from __future__ import annotations

import re

from rewards.api import RewardInput, RewardResult
from rewards.math_extract import extract_answer, extract_gold
from rewards.math_guard import TooComplex
from rewards.math_normalize import normalize
from rewards.math_parse import Num, Unparsable, parse_answer

_INT_RE = re.compile(r"[+-]?\d{1,100}")


def _percent_variants(node, percent: bool):
    if percent and isinstance(node, Num):
        return [node, Num(node.value / 100, node.inexact)]
    return [node]


def check_answer(gold: str, answer: str) -> tuple[bool, str]:
    """Compare an extracted answer with a gold answer string. Raises Unparsable/TooComplex."""
    from rewards.math_equiv import equal  # sympy is only needed past the integer fast path

    ng, npred = normalize(extract_gold(gold)), normalize(answer)
    if _INT_RE.fullmatch(ng.text) and _INT_RE.fullmatch(npred.text) and not (ng.percent or npred.percent):
        same = int(ng.text) == int(npred.text)  # fast path: most GSM8K answers
        return same, "integer"
    try:
        g = parse_answer(ng.text)
    except (Unparsable, TooComplex) as exc:
        raise Unparsable(f"gold: {exc}") from None
    p = parse_answer(npred.text)
    for gv in _percent_variants(g, ng.percent):
        for pv in _percent_variants(p, npred.percent):
            if equal(gv, pv):
                return True, "equivalent"
    return False, "different"


def math_reward(inp: RewardInput, last_number_fallback: bool = True) -> RewardResult:
    if inp.gold is None or not str(inp.gold).strip():
        return RewardResult(0.0, "error", "no gold answer")
    answer, how = extract_answer(inp.response or "", last_number_fallback=last_number_fallback)
    if answer is None:
        return RewardResult(0.0, "unparsable", f"no answer ({how})")
    try:
        same, why = check_answer(str(inp.gold), answer)
    except TooComplex as exc:
        return RewardResult(0.0, "unparsable", f"{how}: too complex: {exc}")
    except Unparsable as exc:
        return RewardResult(0.0, "unparsable", f"{how}: {exc}")
    except RecursionError:
        return RewardResult(0.0, "unparsable", f"{how}: nested too deep")
    return RewardResult(1.0 if same else 0.0, "ok", f"{how}: {why}")
