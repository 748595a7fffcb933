"""Finding the final answer in a model response (pure string work: no sympy, linear-time regexes).

Order of preference, each one taken from the right-most match because a response that corrects
itself ends with its final word:
  1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces are matched by a counter, not a regex);
  2. the last ``<answer>...</answer>`` block (no whitespace needed around the content);
  3. the last GSM8K ``#### N`` line;
  4. "final answer is ..." / "the answer is ..." / "Answer: ...";
  5. optionally (``last_number_fallback``) the last number in the tail of the response.
Two *different* boxed answers joined only by "and"/"or"/commas are a hedge and yield nothing.
"""

from __future__ import annotations

import re

TAIL_CHARS = 8000  # long degenerate responses: only their tail can hold the final answer
MAX_ANSWER_CHARS = 1000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_GSM_RE = re.compile(r"####\s*([^\n]{1,200})")
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*(?::\s*)?([^\n]{1,300})", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?|-?\.\d+")
_HEDGE_GAP_RE = re.compile(r"^[\s,;.$)]*(?:and|or|and also|or maybe|,)?[\s,;.$(]*(?:also)?[\s,;.$(]*$",
                           re.IGNORECASE)


def find_boxed(text: str, max_len: int = MAX_ANSWER_CHARS) -> list[tuple[int, int, str | None]]:
    """(start, end, content) for every ``\\boxed{...}`` / ``\\fbox{...}`` that is not inside another
    box. Content is None for a box that does not close within ``max_len`` characters (unbalanced or
    too long to be an answer). ``\\boxed 5`` (no braces) takes the next token."""
    out: list[tuple[int, int, str | None]] = []
    for m in _BOX_RE.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # nested inside the previous box: the outer box is the answer
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j, end = 0, i, min(len(text), i + max_len + 2)
            while j < end:
                c = text[j]
                if c == "\\" and j + 1 < len(text):
                    j += 2  # skip escaped characters such as \{ and \}
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        out.append((m.start(), j + 1, text[i + 1:j]))
                        break
                j += 1
            else:
                out.append((m.start(), m.end(), None))
        elif m.group(0).endswith(" ") or m.group(0).endswith("\t"):
            tok = re.match(r"[^\s$]+", text[i:i + 100])
            if tok:
                out.append((m.start(), i + tok.end(), tok.group(0)))
    return out


def _clean(ans: str) -> str:
    ans = ans.strip()
    inner = find_boxed(ans)
    if inner and inner[-1][2] is not None:
        return inner[-1][2].strip()
    m = re.match(r"\s*(\$+|\\\(|\\\[)(.+?)(\$+|\\\)|\\\])", ans, re.DOTALL)
    if m:  # "$\frac{3}{4}$. I hope it is correct." -> the math span
        return m.group(2).strip()
    ans = re.split(r"\.\s+[A-Z]", ans)[0]  # drop a following sentence
    # "$12$." or "\(12\)" wrappers and a sentence-final period
    ans = re.sub(r"^\s*(?:\$+|\\\(|\\\[)", "", ans)
    ans = re.sub(r"(?:\$+|\\\)|\\\])\s*[.!]?\s*$", "", ans)
    return ans.strip().rstrip(".").strip()


def _strip_markup(s: str) -> str:
    return s.replace("**", "").replace("__", "")


def extract_answer(text: str, last_number_fallback: bool = True) -> tuple[str | None, str]:
    """Return (answer, how). ``answer`` is None when nothing usable was found (``how`` says why)."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty"
    boxes = find_boxed(text)
    if boxes:
        last = boxes[-1]
        if last[2] is None:  # a box that never closes (or is huge) is not an answer to guess around
            return None, "boxed:unclosed_or_too_long"
        if len(boxes) >= 2 and boxes[-2][2] is not None:
            prev = boxes[-2]
            gap = text[prev[1]:last[0]]
            if len(gap) < 40 and _HEDGE_GAP_RE.match(gap) and prev[2].strip() != last[2].strip():
                return None, "hedge"
        return _checked(last[2].strip(), "boxed")
    text = text[-TAIL_CHARS:]
    tags = _ANSWER_TAG_RE.findall(text)
    if tags:
        return _checked(_clean(tags[-1]), "answer_tag")
    gsm = _GSM_RE.findall(text)
    if gsm:
        return _checked(_clean(_strip_markup(gsm[-1])), "gsm8k")
    said = _ANSWER_IS_RE.findall(_strip_markup(text))
    if said:
        return _checked(_clean(said[-1]), "answer_is")
    if last_number_fallback:
        nums = _NUMBER_RE.findall(text[-300:])
        if nums:
            return _checked(nums[-1].rstrip(".,"), "last_number")
    return None, "no_answer"


def _checked(ans: str, how: str) -> tuple[str | None, str]:
    if not ans:
        return None, f"{how}:empty"
    if len(ans) > MAX_ANSWER_CHARS:
        return None, f"{how}:too_long"
    return ans, how


def extract_gold(gold: str) -> str:
    """Gold answers are usually bare, but datasets also ship full solutions (``#### 72``, ``\\boxed``)."""
    g = gold.strip()
    if "\\boxed" in g or "\\fbox" in g:
        boxes = find_boxed(g)
        if boxes and boxes[-1][2] is not None:
            return boxes[-1][2].strip()
    if "####" in g:
        m = _GSM_RE.findall(g)
        if m:
            return m[-1].strip()
    return g
