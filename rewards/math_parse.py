"""Parsing a normalised answer string into a small structure of sympy values, without executing text.

Top-level structure (sets, tuples/intervals, unions, relations, lists) is split here by a bracket-aware
scanner, so that ``(3,1)`` stays a pair and is never turned into an (empty) interval by a parser;
each element is then parsed by
  * a fast path for plain numbers (integers, decimals, e-notation, a/b, \\frac{a}{b}) into Fraction, or
  * latex2sympy2_extended's ANTLR grammar, which builds sympy trees directly (no eval, no sympify of
    text), followed by the complexity guard of rewards/math_guard.py.
sympy's ``sympify``/``parse_expr`` are never used: they run Python's ``eval`` on their input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

# imported with this module (the sandbox preloads it) so no call pays the grammar's start-up cost
from latex2sympy2_extended.latex2sympy2 import latex2sympy
from latex2sympy2_extended.math_normalization import NormalizationConfig

from rewards.math_guard import TooComplex, check_text, check_tree
from rewards.math_normalize import strip_assignment


class Unparsable(ValueError):
    """Nothing in the answer could be read as math (or as a short textual answer)."""


@dataclass(frozen=True)
class Num:
    value: Fraction  # exact: "0.1" is 1/10, "1.5e6" is 1500000
    decimals: int | None = None  # digits after the point as written ("7.78": 2); None: not a decimal
    sig: int = 0  # significant digits as written ("7.78": 3, "0.05": 1)

    @property
    def rounded(self) -> bool:
        """A decimal that looks rounded: three or more significant digits after a point ("7.78",
        "0.333"). Only such a gold grants a tolerance, of half a unit in its last digit."""
        return self.decimals is not None and self.decimals > 0 and self.sig >= 3


@dataclass(frozen=True)
class Expr:
    value: Any  # a guarded sympy object (Expr, Set, Matrix, Tuple, ...)


@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class Seq:  # (a, b), [a, b), ... : tuples, points and intervals share a shape
    open: str
    close: str
    items: tuple = field(default_factory=tuple)


@dataclass(frozen=True)
class SetOf:  # {a, b} or a bare list "a, b": order does not matter
    items: tuple = field(default_factory=tuple)


@dataclass(frozen=True)
class Union:
    parts: tuple = field(default_factory=tuple)


@dataclass(frozen=True)
class Named:  # "x = 1, y = 2": values under distinct names, in the order written
    names: tuple
    values: tuple


@dataclass(frozen=True)
class Rel:  # a chain "a < x <= b" or an equation "y = 2x + 1"
    items: tuple
    ops: tuple


_DEC_RE = re.compile(r"[+-]?(?:\d{1,400}(?:\.\d{0,400})?|\.\d{1,400})(?:[eE][+-]?\d{1,3})?")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{\s*([+-]?\d{1,300})\s*\}\{\s*([+-]?\d{1,300})\s*\}")
_SLASH_RE = re.compile(r"([+-]?\d{1,300})\s*/\s*(\d{1,300})")
_SCI_RE = re.compile(r"([+-]?\d{1,50}(?:\.\d{1,50})?)\s*(?:\\times|\\cdot|\*|x)\s*10\^\{?\s*([+-]?\d{1,3})\s*\}?")
_CHOICE_RE = re.compile(r"\(?([A-Ea-e])\)?")
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z' -]{1,60}")
_MATH_NAMES = {"pi", "e", "i", "oo", "inf", "infty"}
_REL_RE = re.compile(r"\\leq?(?![a-z])|\\geq?(?![a-z])|\\neq?(?![a-z])|\\lt(?![a-z])|\\gt(?![a-z])|<=|>=|!=|=|<|>")
_REL_NAMES = {"\\le": "<=", "\\leq": "<=", "\\ge": ">=", "\\geq": ">=", "\\ne": "!=", "\\neq": "!=",
              "\\lt": "<", "\\gt": ">"}
_MATRIX_RE = re.compile(r"\\begin\{[pbvBV]?matrix\}|\\begin\{array\}")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CALCULUS_RE = re.compile(r"\\(?:int|iint|iiint|oint|sum|prod|lim)(?![a-zA-Z])")
# the name on the left of an assignment: a letter or a Greek letter, optionally subscripted (y_1, y_{2})
_NAME_RE = re.compile(r"(?:[A-Za-z]|\\[a-z]{2,7})(?:_\{?[A-Za-z0-9]{1,4}\}?)?")


def parse_number(s: str) -> Num | None:
    """Plain numbers only; None if ``s`` is anything else. No sympy involved: this is the fast path."""
    s = s.strip()
    if _DEC_RE.fullmatch(s):
        if "." in s and "e" not in s.lower():
            digits = s.lstrip("+-").replace(".", "").lstrip("0")
            return Num(Fraction(s), decimals=len(s.split(".")[1]), sig=len(digits))
        return Num(Fraction(s))
    m = _FRAC_RE.fullmatch(s) or None
    if m:
        den = int(m.group(3))
        if den == 0:
            return None
        v = Fraction(int(m.group(2)), den)
        return Num(-v if m.group(1) == "-" else v)
    m = _SLASH_RE.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Num(Fraction(int(m.group(1)), int(m.group(2))))
    m = _SCI_RE.fullmatch(s)
    if m:
        return Num(Fraction(m.group(1)) * Fraction(10) ** int(m.group(2)))
    return None


def split_top(s: str, seps: tuple[str, ...]) -> list[str]:
    """Split at separators that are outside every bracket (``\\{``/``\\}`` count as brackets)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s.startswith("\\{", i) or s.startswith("\\left", i):
            depth += 1 if s.startswith("\\{", i) else 0
            i += 2
            continue
        if s.startswith("\\}", i):
            depth -= 1
            i += 2
            continue
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for sep in seps:
                if s.startswith(sep, i):
                    parts.append(s[start:i])
                    i += len(sep)
                    start = i
                    break
            else:
                i += 1
                continue
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _outer_group(s: str) -> tuple[str, str, str] | None:
    """If the whole of ``s`` is one bracketed group, return (open, inner, close)."""
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        if split_top(inner + ",", (",",))[-1] == "" and _balanced(inner):
            return "\\{", inner, "\\}"
        return None
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced(s[1:-1]):
        return s[0], s[1:-1], s[-1]
    return None


def _balanced(s: str) -> bool:
    depth = 0
    for c in s.replace("\\{", "(").replace("\\}", ")"):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


@lru_cache(maxsize=4096)
def parse_answer(s: str) -> Any:
    """Normalised answer string -> structure. Raises Unparsable or TooComplex."""
    s = s.strip()
    check_text(s)
    if not s:
        raise Unparsable("empty answer")
    if _CALCULUS_RE.search(s):  # refused before the (slow) parse: an integral or a sum is not an answer
        raise TooComplex("unevaluated integral, sum, product or limit")
    if s in ("\\emptyset", "\\{\\}", "{}", "\\{ \\}"):
        return SetOf(())
    if _MATRIX_RE.search(s):
        return Expr(_latex(s))
    parts = split_top(s, ("\\cup", "\u222a"))
    if len(parts) > 1:
        return Union(tuple(parse_answer(p) for p in parts))
    group = _outer_group(s)
    if group and group[0] == "\\{":
        items = [p for p in split_top(group[1], (",", ";")) if p]
        return SetOf(tuple(_element(p) for p in items))
    if group:
        items = split_top(group[1], (",",))
        if len(items) > 1:
            return Seq(group[0], group[2], tuple(_element(p) for p in items))
    named = _named_groups(s)
    if named is not None:
        return named
    items = split_top(s, (",", ";", " and ", " or "))
    if len(items) > 1:
        if len(items) > 50:
            raise TooComplex("more than 50 items")
        out = []
        for p in items:
            if p:
                e = _element(strip_assignment(p))
                out.extend(e.items if isinstance(e, SetOf) and "\\pm" in p else (e,))  # x = a \pm b: two roots
        return SetOf(tuple(out))
    pieces = _split_relation(s)
    if pieces:
        items, ops = pieces
        return Rel(tuple(_element(p) for p in items), tuple(ops))
    return _element(s)


def _named_groups(s: str) -> Named | SetOf | None:
    """``x = 1, y = 2`` (two or more DISTINCT names) is one solution, Named, so that it is not the set
    {1, 2} (which would equal ``x = 2, y = 1``); ``p=5,q=2; p=7,q=2`` (the same names in every
    ";"-separated group) is the set of solutions {(5, 2), (7, 2)}. None for anything else."""
    if len(s) > 2000 or " or " in s or "\\pm" in s:
        return None
    groups = []
    for g in split_top(s, (";",)):
        pairs = []
        for item in split_top(g, (",", " and ")):
            if _REL_RE.findall(item) != ["="]:
                return None  # not exactly one "=" and no other relation
            lhs, rhs = (x.strip() for x in item.split("="))
            if not rhs or not _NAME_RE.fullmatch(lhs):
                return None
            pairs.append((re.sub(r"[{}\s]", "", lhs).lower(), rhs))
        names = tuple(n for n, _ in pairs)
        if len(names) < 2 or len(set(names)) != len(names) or (groups and names != groups[0][0]):
            return None
        groups.append((names, tuple(r for _, r in pairs)))
    if len(groups) * len(groups[0][0]) > 50:
        raise TooComplex("more than 50 items")
    out = [Named(names, tuple(_element(r) for r in rhs)) for names, rhs in groups]
    return out[0] if len(out) == 1 else SetOf(tuple(out))


def _split_relation(s: str) -> tuple[list[str], list[str]] | None:
    ops, items, depth, last, scan = [], [], 0, 0, 0
    for m in _REL_RE.finditer(s):
        pre = s[scan:m.start()]
        depth += sum(pre.count(c) for c in "([{") - sum(pre.count(c) for c in ")]}")
        scan = m.end()
        if depth == 0:
            items.append(s[last:m.start()])
            ops.append(_REL_NAMES.get(m.group(0), m.group(0)))
            last = m.end()
    if not ops:
        return None
    items.append(s[last:])
    items = [i.strip() for i in items]
    if any(not i for i in items):
        raise Unparsable("relation with an empty side")
    return items, ops


def _element(s: str) -> Any:
    s = s.strip()
    if not s:
        raise Unparsable("empty element")
    num = parse_number(s)
    if num is not None:
        return num
    group = _outer_group(s)
    if group and group[0] != "\\{" and "," in group[1]:
        return parse_answer(s)
    if s.count("\\pm") == 1:  # "a \pm b" is the two values a + b and a - b
        return SetOf((_element(s.replace("\\pm", "+")), _element(s.replace("\\pm", "-"))))
    m = _CHOICE_RE.fullmatch(s)
    if m and (not s.isalpha() or s.isupper()):
        return Text(m.group(1).upper())
    if _WORDS_RE.fullmatch(s) and len(s.replace(" ", "")) >= 2 and s.lower() not in _MATH_NAMES:
        # words compare as text: "stop" is not the product s*t*o*p (which would equal "pots")
        return Text(" ".join(s.lower().split()))
    try:
        return Expr(_latex(s))
    except TooComplex:
        raise
    except Exception as exc:  # the grammar raises many exception types on bad input
        if _WORDS_RE.fullmatch(s):
            return Text(" ".join(s.lower().split()))
        raise Unparsable(f"cannot parse: {type(exc).__name__}") from None


def _latex(s: str) -> Any:
    # Our own normalisation already ran; ask the library only to repair malformed operators.
    cfg = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=False,
                              boxed="none", equations=False)
    try:
        out = latex2sympy(s, normalization_config=cfg)
    except RecursionError:
        raise TooComplex("recursion limit while parsing") from None
    if isinstance(out, list):
        raise Unparsable("ambiguous parse")
    check_tree(out)
    return out


__all__ = ["Num", "Expr", "Text", "Seq", "SetOf", "Union", "Rel", "Named", "Unparsable", "TooComplex",
           "parse_answer", "parse_number", "split_top"]
