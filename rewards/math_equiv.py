"""Deciding whether a predicted answer equals the gold answer.

Precision first (a false positive teaches the policy a wrong answer): exact rationals are compared
exactly, decimals with a relative tolerance of 1e-6 (never an absolute "chop", which makes 1/2004!
equal 1/2006!), expressions with free symbols by identical symbol sets plus evaluation at several
random points, structures element by element. Everything evaluated here has passed math_guard first;
the sandbox deadline bounds the rest. Nothing here prints or str()s a parsed object.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import sympy

from rewards.math_parse import Expr, Num, Rel, Seq, SetOf, Text, Union

REL_TOL_EXACT = sympy.Float("1e-12", 30)
REL_TOL_DECIMAL = sympy.Float("1e-6", 30)
_POINTS = [sympy.Rational(37, 29), sympy.Rational(-23, 17), sympy.Rational(71, 13), sympy.Rational(5, 41)]


def to_sympy(node: Num | Expr) -> Any:
    if isinstance(node, Num):
        return sympy.Rational(node.value.numerator, node.value.denominator)
    return node.value


def _names(e: Any) -> frozenset[str]:
    return frozenset(s.name.lower() for s in getattr(e, "free_symbols", ()))


def _close(a: Any, b: Any, tol: Any) -> bool | None:
    """Numeric comparison at 30 digits; None if either side is not a number."""
    va, vb = a.evalf(30), b.evalf(30)
    if not (getattr(va, "is_number", False) and getattr(vb, "is_number", False)):
        return None
    bad = (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan)
    if va.has(*bad) or vb.has(*bad):
        return bool(va == vb) and not va.has(sympy.nan)
    diff = abs(va - vb).evalf(30)
    scale = max(abs(va).evalf(30), abs(vb).evalf(30))
    if not (diff.is_number and scale.is_number and diff.is_real and scale.is_real):
        return None
    if scale == 0:
        return bool(diff == 0)
    return bool(diff <= tol * scale)


def scalar_equal(g: Num | Expr, p: Num | Expr) -> bool:
    inexact = g.inexact or p.inexact
    if isinstance(g, Num) and isinstance(p, Num):
        if g.value == p.value:
            return True
        if not inexact:
            return False
        scale = max(abs(g.value), abs(p.value))
        return abs(g.value - p.value) <= Fraction(1, 10**6) * scale
    a, b = to_sympy(g), to_sympy(p)
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        return _matrix_equal(a, b)
    if isinstance(a, sympy.Set) or isinstance(b, sympy.Set):
        return _set_equal(a, b)
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return bool(a == b)
    if a == b:
        return True
    tol = REL_TOL_DECIMAL if inexact else REL_TOL_EXACT
    na, nb = _names(a), _names(b)
    if na != nb:
        return False
    if not na:
        return bool(_close(a, b, tol))
    return _same_function(a, b, tol)


def _subs_by_name(e: Any, values: dict[str, Any]) -> Any:
    return e.xreplace({s: values[s.name.lower()] for s in e.free_symbols})


def _same_function(a: Any, b: Any, tol: Any) -> bool:
    """Equal at several random rational points (identical symbol sets were checked by the caller)."""
    names = sorted(_names(a))
    checked = 0
    for k in range(len(_POINTS)):
        values = {n: _POINTS[(k + i) % len(_POINTS)] + i for i, n in enumerate(names)}
        r = _close(_subs_by_name(a, values), _subs_by_name(b, values), tol)
        if r is False:
            return False
        if r is True:
            checked += 1
    return checked >= 2


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
    """``l1 = r1`` and ``l2 = r2`` are the same equation if l1-r1 is a nonzero constant times l2-r2."""
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
    ratios = []
    for k in range(3):
        values = {n: _POINTS[(k + i) % len(_POINTS)] + i for i, n in enumerate(names)}
        fv, hv = _subs_by_name(f, values).evalf(30), _subs_by_name(h, values).evalf(30)
        if not (fv.is_number and hv.is_number) or hv == 0:
            return False
        ratios.append(fv / hv)
    return ratios[0] != 0 and all(_close(r, ratios[0], REL_TOL_EXACT) for r in ratios[1:])


def _multiset_equal(gs: tuple, ps: tuple) -> bool:
    if len(gs) != len(ps):
        return False
    if len(gs) > 8:  # greedy matching is enough for long lists of distinct values
        used: set[int] = set()
        for g in gs:
            j = next((j for j, p in enumerate(ps) if j not in used and equal(g, p)), None)
            if j is None:
                return False
            used.add(j)
        return True
    return any(all(equal(g, p) for g, p in zip(gs, perm)) for perm in itertools.permutations(ps))


def equal(g: Any, p: Any) -> bool:
    """Structural equality of two parsed answers (gold first: the relation is not symmetric)."""
    if isinstance(g, Text) or isinstance(p, Text):
        return isinstance(g, Text) and isinstance(p, Text) and g.value == p.value
    if isinstance(g, SetOf) and len(g.items) == 1 and not isinstance(p, SetOf):
        return equal(g.items[0], p)
    if isinstance(p, SetOf) and len(p.items) == 1 and not isinstance(g, SetOf):
        return equal(g, p.items[0])
    if isinstance(g, (Num, Expr)) and isinstance(p, (Num, Expr)):
        return scalar_equal(g, p)
    if isinstance(g, SetOf) and isinstance(p, SetOf):
        return _multiset_equal(g.items, p.items)
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
