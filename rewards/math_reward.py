"""The math correctness reward: extract, normalise, parse, compare. 1.0 if equivalent else 0.0.

This function is meant to run inside a sandbox worker (rewards/sandbox.py), which bounds its time and
memory; by itself it only bounds sizes (see math_guard). Status "unparsable" means the response had no
answer we could read (or one too complex to check); "error" is reserved for a missing or unusable gold.

kwargs (reward config ``kwargs:``):
  extract               the extraction chain, a list of rule names (default math_extract.DEFAULT_CHAIN:
                        boxed, answer_tag, gsm8k, answer_is, whole, last_math, conclusion,
                        last_number); drop a name
                        to switch that rule off.
  last_number_fallback  False removes ``last_number`` from the chain (kept for older configs).
  explain               True: ``detail`` also shows the normalised gold and answer text and the reason.
The detail always starts with the rule that extracted the answer: ``rule=boxed: equivalent``.
"""

from __future__ import annotations

import re

from rewards.api import RewardInput, RewardResult
from rewards.math_extract import DEFAULT_CHAIN, extract_answer, extract_gold
from rewards.math_guard import TooComplex
from rewards.math_normalize import Normalized, normalize
from rewards.math_parse import Num, Unparsable, parse_answer

_INT_RE = re.compile(r"[+-]?\d{1,100}")


def _percent_variants(node, percent: bool):
    if percent and isinstance(node, Num):
        return [node, Num(node.value / 100)]
    return [node]


def _canon(s: str) -> str:
    return re.sub(r"\s+", "", s).lower()


def check_answer(gold: str, answer: str) -> tuple[bool, str, Normalized, Normalized]:
    """Compare an extracted answer with a gold answer string. Raises Unparsable/TooComplex.
    Returns (same, reason, normalised gold, normalised answer)."""
    from rewards.math_equiv import equal, seed_for_call  # sympy is only needed past the fast paths

    ng, npred = normalize(extract_gold(gold)), normalize(answer)
    if _INT_RE.fullmatch(ng.text) and _INT_RE.fullmatch(npred.text) and not (ng.percent or npred.percent):
        return int(ng.text) == int(npred.text), "integer", ng, npred  # fast path: most GSM8K answers
    if _canon(ng.text) == _canon(npred.text) and ng.percent == npred.percent and ng.text:
        return True, "same text", ng, npred
    try:
        g = parse_answer(ng.text)
    except (Unparsable, TooComplex) as exc:
        raise Unparsable(f"gold: {exc}") from None
    seed_for_call(ng.text, npred.text)
    readings = [npred.text]
    if npred.decimal_comma and isinstance(g, Num) and g.value.denominator != 1:
        readings.append(npred.decimal_comma)  # "3,25" for a decimal gold: the decimal-comma reading
    for k, text in enumerate(readings):
        p = parse_answer(text)
        for gv in _percent_variants(g, ng.percent):
            for pv in _percent_variants(p, npred.percent):
                if equal(gv, pv):
                    return True, "equivalent" if k == 0 else "equivalent (decimal comma)", ng, npred
    return False, "different", ng, npred


def math_reward(inp: RewardInput, last_number_fallback: bool = True, extract: list[str] | None = None,
                explain: bool = False) -> RewardResult:
    if inp.gold is None or not str(inp.gold).strip():
        return RewardResult(0.0, "error", "no gold answer")
    chain = tuple(extract) if extract is not None else DEFAULT_CHAIN
    answer, rule = extract_answer(inp.response or "", last_number_fallback=last_number_fallback, chain=chain)
    if answer is None:
        return RewardResult(0.0, "unparsable", f"rule=none: no answer ({rule})")
    try:
        same, why, ng, npred = check_answer(str(inp.gold), answer)
    except TooComplex as exc:
        return RewardResult(0.0, "unparsable", f"rule={rule}: too complex: {exc}")
    except Unparsable as exc:
        return RewardResult(0.0, "unparsable", f"rule={rule}: {exc}")
    except RecursionError:
        return RewardResult(0.0, "unparsable", f"rule={rule}: nested too deep")
    except Exception as exc:  # a parser or sympy corner case on valid-looking input: never "error"
        return RewardResult(0.0, "unparsable", f"rule={rule}: cannot compare ({type(exc).__name__})")
    detail = f"rule={rule}: {why}"
    if explain:  # normalised *strings* only: a parsed object is never printed (printing can hang)
        detail += f" | gold={ng.text[:200]!r}{' (percent)' if ng.percent else ''}" \
                  f" | answer={npred.text[:200]!r}{' (percent)' if npred.percent else ''}"
    return RewardResult(1.0 if same else 0.0, "ok", detail)
