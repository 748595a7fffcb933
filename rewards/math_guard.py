"""Cheap checks that run before any sympy evaluation, so hostile answers are refused instead of computed.

Two layers: a string check (length, bracket nesting) before parsing, and a walk over the *unevaluated*
sympy tree (node count, depth, an upper bound on the size of every number) before ``evalf``/``expand``.
The size bound is computed on logarithms only, so ``9^{9^{9}}`` or ``(10^{10})!`` are rejected without
ever computing a large number. The subprocess deadline (rewards/sandbox.py) stays as the last line.
"""

from __future__ import annotations

import math

import sympy

MAX_CHARS = 1000
MAX_BRACKET_DEPTH = 30
MAX_NODES = 600
MAX_TREE_DEPTH = 60
MAX_LOG10 = 8000.0  # refuse any intermediate number with more than ~8000 decimal digits
MAX_FACTORIAL_ARG = 1000

# Unevaluated calculus is not an answer: "\int_0^1 x^2 dx" must not earn the reward for 1/3.
UNEVALUATED = (sympy.Integral, sympy.Sum, sympy.Product, sympy.Limit, sympy.Derivative)


class TooComplex(ValueError):
    """The answer would cost more to check than any real answer does."""


def check_text(s: str) -> None:
    if len(s) > MAX_CHARS:
        raise TooComplex(f"answer longer than {MAX_CHARS} characters")
    depth = best = 0
    for c in s:
        if c in "({[":
            depth += 1
            best = max(best, depth)
        elif c in ")}]":
            depth -= 1
    if best > MAX_BRACKET_DEPTH:
        raise TooComplex(f"brackets nested {best} deep")


def _int_log10(p: int) -> float:
    p = abs(p)
    return math.log10(p) if 0 < p < 2**1000 else p.bit_length() * 0.30103


def _log10_bound(e: sympy.Basic, depth: int = 0) -> float:
    """Upper bound on |log10 |value|| of ``e`` for any moderate value of its symbols (inf: unbounded)."""
    if depth > MAX_TREE_DEPTH:
        raise TooComplex("expression nested too deep")
    if e.is_Rational:  # literals come from text we already length-checked
        return max(_int_log10(int(e.p)), _int_log10(int(e.q)))
    if e.is_Float:
        m = abs(float(e)) if e._mpf_[2] < 4000 else math.inf
        return abs(math.log10(m)) + 1 if m not in (0.0, math.inf) else (1.0 if m == 0 else math.inf)
    if e.is_Atom:
        return 1.0
    args = e.args
    if isinstance(e, sympy.Pow):
        b = _log10_bound(args[0], depth + 1)
        x = _log10_bound(args[1], depth + 1)
        if x > 6:  # exponent above a million in size
            if args[0] in (sympy.S.One, sympy.S.NegativeOne):
                return 1.0
            raise TooComplex("exponent too large")
        k = abs(float(args[1])) if args[1].is_Rational else 10 ** x
        return b * k + 1
    if isinstance(e, sympy.exp):
        x = _log10_bound(args[0], depth + 1)
        if x > 5:
            raise TooComplex("exponent too large")
        return 0.4343 * 10 ** x + 1
    if isinstance(e, (sympy.factorial, sympy.factorial2, sympy.gamma, sympy.binomial, sympy.subfactorial,
                      sympy.RisingFactorial, sympy.FallingFactorial)):
        x = max(_log10_bound(a, depth + 1) for a in args)
        n = 10 ** x if x < 10 else math.inf
        if n > MAX_FACTORIAL_ARG * 10:
            raise TooComplex("factorial argument too large")
        return n * math.log10(max(n, 2)) + 1
    sub = [_log10_bound(a, depth + 1) for a in args if isinstance(a, sympy.Basic)]
    if not sub:
        return 1.0
    if isinstance(e, sympy.Add):  # |a + b + ...| <= n max|.|
        return max(sub) + math.log10(len(sub))
    if isinstance(e, sympy.Mul):  # |log|ab|| <= |log|a|| + |log|b||
        return sum(sub)
    return sum(sub) + 1  # every other function: a generous bound


def log10_bound(e: sympy.Basic) -> float:
    """Public form of the size bound: roughly how many decimal digits the values in ``e`` can have."""
    return _log10_bound(e)


def check_tree(e: sympy.Basic, allow_unevaluated: bool = False) -> None:
    nodes = 0
    for node in sympy.preorder_traversal(e):
        nodes += 1
        if nodes > MAX_NODES:
            raise TooComplex(f"more than {MAX_NODES} nodes")
        if not allow_unevaluated and isinstance(node, UNEVALUATED):
            raise TooComplex(f"unevaluated {type(node).__name__}")
    if isinstance(e, sympy.MatrixBase):
        return
    if _log10_bound(e) > MAX_LOG10:
        raise TooComplex("number too large")
