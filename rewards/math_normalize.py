"""String normalisation of an extracted answer before parsing (pure regex work, linear time).

Policies (documented in docs/rewards.md):
  * units, currency signs and ``\\text{...}`` unit words are dropped: "18 dollars" == "18";
  * a percent sign is remembered as a flag: "9%" matches gold 9 or gold 0.09 (see math_equiv);
  * a bare degree mark is dropped ("60^\\circ" == 60); inside a larger expression (``\\sin 30^\\circ``)
    degrees are converted to radians so trigonometry is evaluated in the unit the answer was given in;
  * thousands separators are removed only where the whole answer has the 1,234,567 shape, so
    "1,22" stays a list of two numbers.
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


def _repeating_decimal(m: re.Match) -> str:
    sign, whole, fixed, rep = m.group(1), m.group(2) or "0", m.group(3), m.group(4)
    # x = whole.fixed(rep)(rep)... = (whole fixed rep - whole fixed) / (10^len(fixed) * (10^len(rep) - 1))
    num = int(whole + fixed + rep) - int(whole + fixed)
    den = (10 ** len(rep) - 1) * 10 ** len(fixed)
    return f"{sign}\\frac{{{num}}}{{{den}}}"


def normalize(ans: str) -> Normalized:
    s = ans.strip()
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
    # "x = 5" / "k=5": a single-letter assignment is just its value (an equation keeps both sides)
    m = re.fullmatch(r"([a-zA-Z])\s*=\s*([^=<>]+)", s)
    if m and not re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", m.group(2))):
        s = m.group(2).strip()
    return Normalized(s, percent, degrees)
