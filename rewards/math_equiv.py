"""Deciding whether a predicted answer equals the gold answer.

Precision first (a false "correct" teaches the policy a wrong answer):
  * exact values compare exactly. Decimals are read as the exact rationals they spell ("0.1" is 1/10).
    Two numbers without free symbols are equal when their difference simplifies to exactly 0; when it
    does not simplify to a rational, it is evaluated with p = 40 + 2*D significant digits, D being the
    digit count of the largest literal (math_guard.log10_bound), and must vanish to p - 20 digits. So
    ``3 + 10^{-18}`` != 3 and ``10^{14}+1`` != ``10^{14}``, and 1/2004! != 1/2006!;
  * a tolerance exists only when the GOLD is a rounded decimal (three or more significant digits after
    a point, e.g. "7.78"): an answer that is more precise than the gold (more decimals, or an exact
    non-terminating value such as 70/9 or \\sqrt{2}) is accepted when it rounds to the gold, i.e. lies
    within half a unit of the gold's last digit. A decimal answer does not match an exact non-decimal
    gold it only approximates ("0.3333" != 1/3), unless it is a float printout with ten or more
    significant digits within 1e-9 relative of the gold ("0.0833333333333333" == 1/12);
  * expressions with free symbols are functions of the union of their symbol names (so x != y, and
    sin^2 x + cos^2 x == 1); rational functions of low degree are
    compared exactly (sympy.cancel of the difference is 0); everything else is evaluated at
    N_POINTS random points drawn from a generator seeded per call (from the gold and answer text, so a
    verdict is reproducible but no fixed point can be targeted), each coordinate a rational in (-3, 3)
    with a denominator up to 10^6, at 60 digits. A non-zero difference that is a rational function of
    degree <= 10^4 vanishes at one such point with probability <= 10^4 / 6e12 (Schwartz-Zippel), so
    the chance that it vanishes at all N_POINTS (>= MIN_POINTS valid ones) is below 1e-40; for
    analytic non-rational differences, zeros are isolated and a random hit has probability ~0;
  * text compares as text (see math_parse); structures element by element.
Everything evaluated here has passed math_guard first; the sandbox deadline bounds the rest. Nothing here
prints or str()s a parsed object.
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction
from typing import Any

import sympy
from sympy.core.function import AppliedUndef

from rewards.math_guard import log10_bound
from rewards.math_parse import Expr, Named, Num, Rel, Seq, SetOf, Text, Union

N_POINTS = 8
MIN_POINTS = 4
POINT_DIGITS = 60
REL_TOL_POINTS = sympy.Float("1e-30", POINT_DIGITS)
MAX_CANCEL_NODES = 150
FLOAT_PRINT_TOL = Fraction(1, 10**9)
_seed = 0


def seed_for_call(gold_text: str, answer_text: str) -> None:
    """Seed the identity test from the call's own text (one sandbox worker handles one call at a time)."""
    global _seed
    _seed = int(hashlib.sha256(f"{gold_text}\x00{answer_text}".encode()).hexdigest()[:16], 16)


def _exact(e: Any) -> Any:
    """Floats that came from decimal literals become the rationals they spell (15 significant digits)."""
    floats = [f for f in e.atoms(sympy.Float)] if isinstance(e, sympy.Basic) else []
    return e.xreplace({f: sympy.Rational(str(f)) for f in floats}) if floats else e


def to_sympy(node: Num | Expr) -> Any:
    if isinstance(node, Num):
        return sympy.Rational(node.value.numerator, node.value.denominator)
    return _exact(node.value)


def _names(e: Any) -> frozenset[str]:
    return frozenset(s.name.lower() for s in getattr(e, "free_symbols", ()))


def _num(e: Any, digits: int, subs: dict | None = None) -> Any | None:
    v = e.evalf(digits, subs=subs)
    if not getattr(v, "is_number", False) or v.has(sympy.nan, sympy.zoo):
        return None
    return v


def _rounds_to(gold: Num, value: Any) -> bool:
    """|value - gold| <= half a unit in the gold's last shown digit."""
    half = sympy.Rational(1, 2 * 10 ** gold.decimals)
    v = _num(value, 40)
    if v is None or not v.is_real:
        return False
    return bool(abs(v - sympy.Rational(gold.value.numerator, gold.value.denominator)) <= half)


def _exact_equal(a: Any, b: Any) -> bool | None:
    """Numbers without free symbols. None if either is not a number."""
    try:
        d = (a - b).doit()
    except (TypeError, ValueError, AttributeError, ZeroDivisionError):
        return None
    if d == 0:
        return True
    if d.is_Rational:
        return False
    bad = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
    if a.has(*bad) or b.has(*bad):
        return bool(a.doit() == b.doit()) and not a.has(sympy.nan)
    digits = int(min(4000, 40 + 2 * max(log10_bound(a), log10_bound(b))))
    va, vb, vd = _num(a, digits), _num(b, digits), _num(d, digits)
    if va is None or vb is None or vd is None:
        return None
    scale = max(abs(va), abs(vb), sympy.Integer(1))
    return bool(abs(vd) <= scale * sympy.Float(10, digits) ** (20 - digits))


def scalar_equal(g: Num | Expr, p: Num | Expr) -> bool:
    if isinstance(g, Num) and isinstance(p, Num):
        if g.value == p.value:
            return True
        more_precise = p.decimals is None and p.value.denominator not in (1, 2, 4, 5, 8, 10) or (
            p.decimals is not None and g.decimals is not None and p.decimals > g.decimals)
        if p.sig >= 10 and abs(g.value - p.value) <= FLOAT_PRINT_TOL * abs(g.value):
            return True  # a float printout of the exact gold: 0.0833333333333333 for 1/12
        return g.rounded and more_precise and abs(g.value - p.value) <= Fraction(1, 2 * 10 ** g.decimals)
    a, b = to_sympy(g), to_sympy(p)
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        return _matrix_equal(a, b)
    if isinstance(a, sympy.Set) or isinstance(b, sympy.Set):
        return _set_equal(a, b)
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return bool(a == b)
    if a == b:
        return True
    na, nb = _names(a), _names(b)
    if not na and not nb:
        same = _exact_equal(a, b)
        if not same and isinstance(g, Num) and g.rounded and not isinstance(p, Num):
            return _rounds_to(g, b)  # an exact non-terminating answer (\sqrt{2}) for a rounded gold
        return bool(same)
    return _same_function(a, b)


def _at_point(e: Any, values: dict[str, Any]) -> Any | None:
    """e evaluated at the point `values` (by lower-case name). evalf(subs=...) evaluates numerically; an
    exact substitution would first build the exact value, and for a power like t^r at rationals with
    6-digit denominators that is an integer root of a huge number (seconds: the sandbox deadline)."""
    return _num(e, POINT_DIGITS, {s: values[s.name.lower()] for s in e.free_symbols})


def _same_function(a: Any, b: Any) -> bool:
    """Identical functions of the same (already checked) symbols: exactly for small rational
    functions, otherwise at random points (see the module docstring for the false-match bound)."""
    d = a - b
    try:
        powers = [abs(int(e.exp)) for e in d.atoms(sympy.Pow) if e.exp.is_Integer]
        if d.is_rational_function() and sympy.count_ops(d) <= MAX_CANCEL_NODES and max(powers, default=0) <= 30:
            d = d.doit()
            # exact value at one rational point first: non-zero there proves d is not identically 0, which is
            # what cancel would find, at a fraction of its cost (most wrong answers end here)
            point = {s: sympy.Rational(2 * k + 3, k + 7) for k, s in enumerate(sorted(d.free_symbols, key=str))}
            value = d.xreplace(point)
            if not d.has(sympy.Float) and value.is_finite and value.is_zero is False:
                return False
            return bool(sympy.cancel(d) == 0)
    except (TypeError, ValueError, AttributeError, ZeroDivisionError, sympy.PolynomialError):
        pass
    rng = random.Random(_seed)
    names = sorted(_names(a) | _names(b))  # "\\sin^2 x + \\cos^2 x" is the constant 1
    checked = 0
    for _ in range(N_POINTS):
        values = {n: sympy.Rational(rng.randint(-3 * 10**6, 3 * 10**6), rng.randint(10**5, 10**6)) for n in names}
        va, vb = _at_point(a, values), _at_point(b, values)
        if va is None or vb is None:
            continue  # a pole or a branch point: try another point
        scale = max(abs(va), abs(vb), sympy.Integer(1))
        if abs(va - vb) > REL_TOL_POINTS * scale:
            return False
        checked += 1
    return checked >= MIN_POINTS


def _matrix_equal(a: Any, b: Any) -> bool:
    if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)) or a.shape != b.shape:
        return False
    return all(scalar_equal(Expr(x), Expr(y)) for x, y in zip(a, b))


def _set_equal(a: Any, b: Any) -> bool:
    if not (isinstance(a, sympy.Set) and isinstance(b, sympy.Set)):
        return False
    if a == b:
        return True
    try:
        return bool(sympy.Complement(a, b) == sympy.S.EmptySet and sympy.Complement(b, a) == sympy.S.EmptySet)
    except Exception:
        return False


def _interval_of(node: Any) -> Any | None:
    """A sympy set for shapes that denote sets of reals: (a,b], unions of them, inequalities in x."""
    if isinstance(node, Seq) and len(node.items) == 2 and all(isinstance(i, (Num, Expr)) for i in node.items):
        lo, hi = (to_sympy(i) for i in node.items)
        if not (isinstance(lo, sympy.Expr) and isinstance(hi, sympy.Expr)) or _names(lo) or _names(hi):
            return None
        return sympy.Interval(lo, hi, node.open == "(", node.close == ")")
    if isinstance(node, SetOf) and all(isinstance(i, (Num, Expr)) for i in node.items):
        return sympy.FiniteSet(*(to_sympy(i) for i in node.items))
    if isinstance(node, Union):
        parts = [_interval_of(p) for p in node.parts]
        return None if any(p is None for p in parts) else sympy.Union(*parts)
    if isinstance(node, Expr) and isinstance(node.value, sympy.Set):
        return node.value
    if isinstance(node, Rel) and "=" not in node.ops and "!=" not in node.ops:
        return _relation_set(node)
    return None


_OPS = {"<": sympy.Lt, "<=": sympy.Le, ">": sympy.Gt, ">=": sympy.Ge}


def _relation_set(node: Rel) -> Any | None:
    sides = [to_sympy(i) for i in node.items if isinstance(i, (Num, Expr))]
    if len(sides) != len(node.items) or not all(isinstance(s, sympy.Expr) for s in sides):
        return None
    if len(sides) == 3 and isinstance(sides[1], AppliedUndef) and not (_names(sides[0]) or _names(sides[2])):
        # "0 < f(x) < 1" states the values f takes: the interval (0, 1), not a condition on x
        if node.ops in (("<", "<"), ("<", "<="), ("<=", "<"), ("<=", "<=")):
            return sympy.Interval(sides[0], sides[2], node.ops[0] == "<", node.ops[1] == "<")
        if node.ops in ((">", ">"), (">", ">="), (">=", ">"), (">=", ">=")):
            return sympy.Interval(sides[2], sides[0], node.ops[1] == ">", node.ops[0] == ">")
        return None
    syms = set().union(*(s.free_symbols for s in sides))
    if len(syms) != 1:
        return None
    (x,) = syms
    conds = [_OPS[op](lhs, rhs) for lhs, op, rhs in zip(sides, node.ops, sides[1:])]
    out = sympy.S.Reals
    for c in conds:
        out = sympy.Intersection(out, c.as_set()) if not isinstance(c, bool) else out
    del x
    return out


def _rel_equal(g: Rel, p: Rel) -> bool:
    if g.ops == ("=",) and p.ops == ("=",):
        return _same_equation(g, p)
    if len(g.ops) == len(p.ops) and g.ops == p.ops and all(equal(a, b) for a, b in zip(g.items, p.items)):
        return True
    flip = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}
    if tuple(flip[o] for o in reversed(p.ops)) == g.ops and all(
            equal(a, b) for a, b in zip(g.items, reversed(p.items))):
        return True
    sg, sp = _interval_of(g), _interval_of(p)
    return sg is not None and sp is not None and _set_equal(sg, sp)


def _same_equation(g: Rel, p: Rel) -> bool:
    """``l1 = r1`` and ``l2 = r2`` are the same equation if l1-r1 is a nonzero constant times l2-r2,
    i.e. (l1-r1) / (l2-r2) is a nonzero constant function."""
    if all(equal(a, b) for a, b in zip(g.items, p.items)) or all(
            equal(a, b) for a, b in zip(g.items, reversed(p.items))):
        return True
    if not all(isinstance(i, (Num, Expr)) for i in g.items + p.items):
        return False
    f = to_sympy(g.items[0]) - to_sympy(g.items[1])
    h = to_sympy(p.items[0]) - to_sympy(p.items[1])
    names = sorted(_names(f))
    if not names or _names(h) != set(names):
        return False
    rng = random.Random(_seed)
    ratio = None
    checked = 0
    for _ in range(N_POINTS):
        values = {n: sympy.Rational(rng.randint(-3 * 10**6, 3 * 10**6), rng.randint(10**5, 10**6)) for n in names}
        fv, hv = _at_point(f, values), _at_point(h, values)
        if fv is None or hv is None or hv == 0:
            continue
        r = fv / hv
        if ratio is None:
            ratio = r
            if r == 0:
                return False
        elif abs(r - ratio) > REL_TOL_POINTS * max(abs(r), abs(ratio)):
            return False
        checked += 1
    return checked >= MIN_POINTS


def _same_set(gs: tuple, ps: tuple) -> bool:
    """Set semantics: every gold item is given and every given item is in the gold (a repeated item
    counts once, so "2, 2" equals "2"; order never matters)."""
    return all(any(equal(g, p) for p in ps) for g in gs) and all(any(equal(g, p) for g in gs) for p in ps)


def _named_equal(g: Any, p: Any) -> bool:
    """``x = 1, y = 2``: the same value under every name (any order) or, against a tuple ``(1, 2)`` or a
    bare list ``1, 2``, the values in the order they were written. Never a set: x=1, y=2 != x=2, y=1."""
    if isinstance(g, Named) and isinstance(p, Named):
        if set(g.names) != set(p.names):
            return False
        got = dict(zip(p.names, p.values))
        return all(equal(v, got[n]) for n, v in zip(g.names, g.values))
    named, other = (g, p) if isinstance(g, Named) else (p, g)
    if isinstance(other, Seq) and (other.open, other.close) == ("(", ")") or isinstance(other, SetOf):
        pairs = list(zip(named.values, other.items)) if named is g else list(zip(other.items, named.values))
        return len(named.values) == len(other.items) and all(equal(a, b) for a, b in pairs)
    return False


def equal(g: Any, p: Any) -> bool:
    """Structural equality of two parsed answers (gold first: the relation is not symmetric)."""
    if isinstance(g, Text) or isinstance(p, Text):
        return isinstance(g, Text) and isinstance(p, Text) and g.value == p.value
    if isinstance(g, Named) or isinstance(p, Named):
        return _named_equal(g, p)
    if isinstance(g, SetOf) and len(g.items) == 1 and not isinstance(p, SetOf):
        return equal(g.items[0], p)
    if isinstance(p, SetOf) and len(p.items) == 1 and not isinstance(g, SetOf):
        return equal(g, p.items[0])
    if isinstance(g, (Num, Expr)) and isinstance(p, (Num, Expr)):
        return scalar_equal(g, p)
    if isinstance(g, SetOf) and isinstance(p, SetOf):
        return _same_set(g.items, p.items)
    if isinstance(g, Seq) and isinstance(p, Seq):
        return (g.open, g.close) == (p.open, p.close) and len(g.items) == len(p.items) and all(
            equal(a, b) for a, b in zip(g.items, p.items))
    if isinstance(g, Rel) and isinstance(p, Rel):
        return _rel_equal(g, p)
    if isinstance(p, Rel) and "=" in p.ops and set(p.ops) == {"="} and isinstance(g, (Num, Expr, Seq, SetOf)):
        # "x = 5 + 7 = 12" for gold 12: bare symbols are names, every other side must equal the gold
        sides = [i for i in p.items if not (isinstance(i, Expr) and isinstance(i.value, sympy.Symbol))]
        return bool(sides) and len(sides) < len(p.items) + 1 and all(equal(g, s) for s in sides)
    if isinstance(g, Rel) and set(g.ops) == {"="} and isinstance(g.items[0], Expr) and isinstance(
            g.items[0].value, sympy.Symbol) and len(g.items) == 2:
        return equal(g.items[1], p)  # gold "k = 3" vs prediction "3"
    # sets of reals written differently: interval vs inequality vs union
    sg, sp = _interval_of(g), _interval_of(p)
    if sg is not None and sp is not None:
        return _set_equal(sg, sp)
    return False
