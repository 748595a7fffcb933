"""String normalisation of an extracted answer before parsing (pure regex work, linear time).

Policies (documented in docs/rewards.md):
  * units, currency signs and ``\\text{...}`` unit words are dropped: "18 dollars" == "18";
  * a percent sign is remembered as a flag: "9%" matches gold 9 or gold 0.09 (see math_equiv);
  * a bare degree mark is dropped ("60^\\circ" == 60); inside a larger expression (``\\sin 30^\\circ``)
    degrees are converted to radians so trigonometry is evaluated in the unit the answer was given in;
  * thousands separators are removed only where the whole answer has the 1,234,567 shape, so
    "1,22" stays a list of two numbers; LaTeX-spaced groups (``5\\,000``, ``5\\!000``, ``5 000``) are
    thousands too;
  * a decimal comma (``3,25``: one comma, not followed by exactly three digits) is offered as an
    alternative reading ``Normalized.decimal_comma``, used only when the gold is a non-integer decimal;
  * escaping accidents are repaired: a form feed / backspace / tab / carriage return / vertical tab
    that stands where ``\\f``, ``\\b``, ``\\t``, ``\\r``, ``\\v`` began a command (``\\frac`` written in a
    non-raw string), and a doubled backslash before a known command (``\\\\frac`` from double JSON escaping);
  * "name = value" (``x = 5``, ``|AB| = 4``, ``(x, y) = (1, 2)``, ``y_1 = 2x+1``) is just its value; an
    equation in the answer's own variables (``y = 2x + 1``) keeps both sides. ``x \\in [1, 4]`` is [1, 4].
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNIT_WORDS = (
    "dollars dollar cents cent euros euro pounds pound yen rupees usd "
    "meters meter metres metre m cm mm km kilometers kilometer miles mile feet foot ft inches inch in yards yard "
    "square sq cubic units unit "
    "seconds second secs sec s minutes minute mins min hours hour hrs hr h days day weeks week months month years year "
    "kg g grams gram kilograms kilogram mg lbs lb ounces ounce oz liters liter litres litre l ml gallons gallon "
    "mph km/h kmh degrees degree "
    "people persons person students student apples apple cookies cookie books book marbles marble "
    "times items item pieces piece boxes box pages page cars car eggs egg toys toy cups cup bags bag "
    "points point sheep cows cow dogs dog cats cat birds bird children child hrs tickets ticket"
).split()
_UNIT_RE = re.compile(
    r"(?<=[\d}).\s])\s*(?:\\,|\\;|\\ )?\s*(?:(?:" + "|".join(re.escape(u) for u in UNIT_WORDS)
    + r")(?:\s*\^\s*\{?[23]\}?)?\s*)+$", re.IGNORECASE)

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}

_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname|textnormal|mathit)\s*\{([^{}]*)\}")
_SPACES_RE = re.compile(r"(?<!\\)\\(?:!|,|;|:|quad|qquad|displaystyle|textstyle|limits|nolimits| )|~")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SPACE_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_PERCENT_RE = re.compile(r"(?:\\%|%|\s*\\text\{\s*percent\s*\}|\s+percent|\s+pct)\s*$", re.IGNORECASE)
_OVERLINE_RE = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\{(\d{1,12})\}$")


@dataclass
class Normalized:
    text: str
    percent: bool = False
    degrees: bool = False
    decimal_comma: str | None = None  # "3,25" -> "3.25", the other reading of a lone comma


# a control character where a backslash command began: "\frac" typed into a non-raw string
_ESCAPES = {"\x0c": "\\f", "\x08": "\\b", "\x0b": "\\v", "\x07": "\\a"}
_TAB_CMD_RE = re.compile("\t(?=(?:ext|imes|heta|an|frac|au|riangle|o\\b)[^a-z]?)")
_CR_CMD_RE = re.compile("\r(?=(?:ight|ho|angle)[^a-z]?)")
_DOUBLE_BS_RE = re.compile(r"\\\\(?=(?:frac|dfrac|tfrac|sqrt|left|right|pi|cdot|times|leq?|geq?|neq?|infty|text|"
                           r"boxed|in|cup|cap|circ|pm|mathrm|mathbf|begin|end|theta|alpha|beta)(?![a-zA-Z]))")
_SUBSCRIPT_RE = re.compile(r"_\{[^{}]*\}|_[A-Za-z0-9]")
_CMD_RE = re.compile(r"\\[a-zA-Z]+")


def repair_escapes(s: str) -> str:
    for bad, good in _ESCAPES.items():
        s = s.replace(bad, good)
    s = _TAB_CMD_RE.sub(r"\\t", s)
    s = _CR_CMD_RE.sub(r"\\r", s)
    return _DOUBLE_BS_RE.sub(r"\\", s)


def _has_top_level_list(s: str) -> bool:
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (c in ",;" or s.startswith(" and ", i)):
            return True
    return False


def strip_assignment(s: str) -> str:
    """``name = value`` -> value, when the left side is a name (no digits outside subscripts) and the
    right side is a value (no letters) or the name is subscripted (``y_1 = x + 1``, a label)."""
    if _has_top_level_list(s):
        return s  # "x = 1, y = 2": each item is handled on its own (math_parse)
    if s.count("=") != 1 or re.search(r"[<>]|\\[lg]eq?|\\neq?|!=", s):
        if s.count("=") >= 2 and not re.search(r"[<>]|\\[lg]eq?|\\neq?|!=", s):
            parts = s.split("=")
            first, middle, last = parts[0], parts[1:-1], parts[-1]
            if (not re.search(r"\d", _SUBSCRIPT_RE.sub("", first)) and last.strip()
                    and not any(re.search(r"[A-Za-z]", _CMD_RE.sub("", m)) for m in middle)):
                return last.strip()  # "z = 1 + 1 = 2": a worked chain, its last value is the answer
        return s
    lhs, rhs = (p.strip() for p in s.split("="))
    bare = _SUBSCRIPT_RE.sub("", lhs)
    if not lhs or not rhs or re.search(r"[\d+\-*^]", bare) or not re.search(r"[A-Za-z]", lhs):
        return s  # "x + y = 5" is an equation, not a name
    if not re.search(r"[A-Za-z]", _CMD_RE.sub("", rhs)) or re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)", lhs):
        return rhs
    return s


def _repeating_decimal(m: re.Match) -> str:
    sign, whole, fixed, rep = m.group(1), m.group(2) or "0", m.group(3), m.group(4)
    # x = whole.fixed(rep)(rep)... = (whole fixed rep - whole fixed) / (10^len(fixed) * (10^len(rep) - 1))
    num = int(whole + fixed + rep) - int(whole + fixed)
    den = (10 ** len(rep) - 1) * 10 ** len(fixed)
    return f"{sign}\\frac{{{num}}}{{{den}}}"


def normalize(ans: str) -> Normalized:
    s = repair_escapes(ans).strip()
    s = re.sub(r"(?<=\d),(?:\\!|\\,)\s*(?=\d{3}(?!\d))", ",", s)  # 11,\!111 -> 11,111
    s = re.sub(r"(?<=\d)(?:\\!|\\,|\\ |~|\u2009|\u202f)\s*(?=\d{3}(?!\d))", "", s)  # 5\,000 -> 5000
    # math-mode wrappers
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = re.sub(r"\\m?left\s*(\\\{|\\langle|\\lvert|\\lbrace|[(\[|.])", r"\1", s)
    s = re.sub(r"\\m?right\s*(\\\}|\\rangle|\\rvert|\\rbrace|[)\]|.])", r"\1", s)
    s = s.replace("\\{", "\x00LB").replace("\\}", "\x00RB")  # protect set braces from \text{} handling
    s = s.replace("{,}", ",").replace("\\varnothing", "\\emptyset").replace("\\O ", "\\emptyset")
    s = s.replace("\u2212", "-").replace("\u00d7", "\\times ").replace("\u00f7", "\\div ")
    s = s.replace("\u221a", "\\sqrt").replace("\u03c0", "\\pi").replace("\u221e", "\\infty")
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    for _ in range(3):  # \text{...} nested at most a few levels in practice
        s = _TEXT_CMD_RE.sub(r" \1 ", s)
    s = s.replace("\x00LB", "\\{").replace("\x00RB", "\\}")
    s = _SPACES_RE.sub(" ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = s.rstrip(".").strip()

    percent = False
    m = _PERCENT_RE.search(s)
    if m:
        percent, s = True, s[:m.start()].strip()

    # currency
    s = re.sub(r"^(-?)\s*(?:\\\$|\$|£|€|¥|usd|US\$)\s*", r"\1", s, flags=re.IGNORECASE)
    s = s.replace("\\$", "").strip()

    degrees = False
    if _DEGREE_RE.search(s):
        bare = _DEGREE_RE.sub("", s).strip()
        if re.fullmatch(r"[-+]?[\d.]+|[-+]?\\frac\{\d+\}\{\d+\}", bare):
            s, degrees = bare, True
        else:  # inside an expression: make it radians, so \sin 30^\circ is 1/2
            s = _DEGREE_RE.sub(r"\\cdot\\frac{\\pi}{180}", s)

    for _ in range(2):
        s2 = _UNIT_RE.sub("", s).strip()
        if s2 == s or not s2:
            break
        s = s2
    s = s.rstrip(".").strip()

    if _THOUSANDS_RE.match(s) or _SPACE_THOUSANDS_RE.match(s):
        s = s.replace(",", "").replace(" ", "")
    low = s.lower()
    if low in NUMBER_WORDS:
        s = str(NUMBER_WORDS[low])
    m = _OVERLINE_RE.match(s)
    if m:
        s = _repeating_decimal(m)
    parts = re.split(r"\\approx|\u2248", s)
    if len(parts) == 2:  # "7/9 \approx 0.78": the exact value comes first; "x \approx 11": the value after
        s = parts[1].strip() if re.fullmatch(r"\s*[A-Za-z](?:_\{?\w+\}?)?\s*", parts[0]) else parts[0].strip()
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)  # "x \in [1, 4]" -> "[1, 4]"
    s = re.sub(r"(?<=[)\]])\s*(?:or|and)\s*(?=[(\[])", ", ", s)  # "(11,7)or(7,11)": a list of pairs
    if re.search(r"\(-?[\d.]+(?:\s*;\s*-?[\d.]+)+\)", s):  # "(0;-2;6)": semicolons separate coordinates
        s = re.sub(r"\(([-\d.;\s]+)\)", lambda m: "(" + m.group(1).replace(";", ",") + ")", s)
    s = strip_assignment(s)
    m = re.fullmatch(r"(-?\d[\d.,]*)\s+((?:[a-zA-Z]{1,12}(?:\^\{?[23]\}?)?[./]?\s*){1,3})", s)
    if m and not re.search(r"\b(?:and|or|to|x|y|i|e|pi)\b", m.group(2), re.IGNORECASE):
        s = m.group(1)  # "50 Hz", "8 kHz", "12 square feet": a number followed only by unit words
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    comma = None
    if re.fullmatch(r"-?\d+,(?:\d{1,2}|\d{4,})", s):
        comma = s.replace(",", ".")
    return Normalized(s, percent, degrees, comma)
