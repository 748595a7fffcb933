"""Finding the final answer in a model response (pure string work: no sympy, linear-time regexes).

The extraction is an explicit chain of rules, tried in order; the first rule that finds something wins
and its name is reported (``rewards check`` shows it). Each rule can be switched off through the
reward's ``extract`` kwarg (default: DEFAULT_CHAIN, the one place this default lives):

  boxed        the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces matched by a counter). Boxes in
               the final run that are separated only by commas, "and", spacing or math delimiters form
               ONE answer (``\\boxed{2}, \\boxed{5}`` is the list "2, 5"); boxes separated by "or" are a
               hedge and yield nothing; after a self-correction ("... wait, \\boxed{2}") the last box wins.
               Boxes that each follow their own distinct label (``y_1 = \\boxed{A}`` and
               ``y_2 = \\boxed{B}``) are the one answer "y_1 = A, y_2 = B".
  answer_tag   the last ``<answer>...</answer>`` block (no whitespace needed around the content).
  gsm8k        the last ``#### N`` line.
  answer_is    answer phrases, most specific first: the Minerva/MATH format "Final Answer: The final
               answer is $X$. I hope it is correct.", then "final answer is", "the answer is",
               "Answer:", "A:" at the start of a line. The right-most non-empty one wins; "this answer
               is correct" and similar verdict words are not answers.
  whole        a response that is only an answer: a single math span ($..$, $$..$$, \\(..\\), \\[..\\])
               or a short bare expression with no prose (``\\frac{7}{3}``, ``x^2+1``, ``(1, 2]``).
  last_math    the last math span, when it ends the response (only punctuation or a few words after it,
               no digits): "The identity matrix is $I$." -> I.
  conclusion   the last sentence, when it opens with "Therefore"/"Thus"/"Hence"/"So"/"In total" and states
               exactly one number, unhedged, with no formula ("Therefore, there are 12 sequences that
               ..." -> 12; a trailing "I hope it is correct." is ignored).
  last_number  the last number of the response, when it ends the response (not inside a formula).
"""

from __future__ import annotations

import re

from rewards.math_normalize import repair_escapes

TAIL_CHARS = 8000  # long degenerate responses: only their tail can hold the final answer
MAX_ANSWER_CHARS = 1000
DEFAULT_CHAIN = ("boxed", "answer_tag", "gsm8k", "answer_is", "whole", "last_math", "conclusion", "last_number")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_GSM_RE = re.compile(r"####\s*([^\n]{1,200})")
_MINERVA_RE = re.compile(r"final\s+answer\s+is\s*(.{1,300}?)\s*\.?\s*I\s+hope\s+it\s+is\s+correct", re.IGNORECASE | re.DOTALL)
_ANSWER_IS_RES = (
    re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*([^\n]{0,300})", re.IGNORECASE),
    re.compile(r"(?<!this )(?<!that )(?<!your )\banswer\s*(?:is|:|=)\s*:?\s*([^\n]{0,300})", re.IGNORECASE),
    re.compile(r"^\s*A\s*:\s*([^\n]{1,300})", re.MULTILINE),
)
_VERDICT_WORDS = re.compile(r"^(?:correct|incorrect|wrong|right|not\b|shown|as follows|given|below|above)",
                            re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?(?:/\d+(?!\.\d))?|-?\.\d+")
_SPECIAL_TOKEN_RE = re.compile(r"(?:\s*<\|[a-z_]{1,20}\|>\s*(?:user|assistant|system)?)+\s*$")
_MATH_SPAN_RE = re.compile(r"\$\$(.{1,600}?)\$\$|\$(.{1,600}?)\$|\\\[(.{1,600}?)\\\]|\\\((.{1,600}?)\\\)", re.DOTALL)
# what may separate boxes that together form one answer
_JOIN_GAP_RE = re.compile(r"^(?:[\s,;$]|\\[()\[\]]|\\quad|\\qquad|\\,|\\;|\\text\{\s*(?:and|,)\s*\}|\band\b|&|\\\\)*$",
                          re.IGNORECASE)
_HEDGE_GAP_RE = re.compile(r"^(?:[\s,;.$]|\\[()\[\]]|\\quad|\\text\{\s*or\s*\}|\bor\b|\band\b|\balso\b|\bmaybe\b|\bperhaps\b)*$",
                           re.IGNORECASE)
# a name and "=" right before a box: "y_1 = \\boxed{...}", "\\( b = \\boxed{...}"
_LABEL_RE = re.compile(r"(?<![A-Za-z\\])((?:[A-Za-z]|\\[a-z]{2,7})(?:_\{?[A-Za-z0-9]{1,4}\}?)?)\s*=\s*(?:\$|\\\(|\\\[)?\s*\Z")
_HOPE_RE = re.compile(r"\s*I\s+hope\s+it\s+is\s+correct\.?\s*\Z", re.IGNORECASE)
_CONCLUSION_RE = re.compile(r"(?:Therefore|Thus|Hence|So|In conclusion|In total|Altogether)\b,?\s")
_HEDGED_RE = re.compile(r"\b(?:at (?:most|least)|about|approximately|around|roughly|nearly|almost|more than|less than|"
                        r"fewer than|up to|over|under|not|no|never|cannot)\b|n't", re.IGNORECASE)
_PROSE_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_ALLOWED_WORDS = {"and", "or", "sqrt", "frac", "infty", "text", "cdot", "times", "pi", "sin", "cos", "tan", "log",
                  "ln", "exp", "mod", "pmod", "left", "right", "in", "cup", "cap", "le", "ge", "leq", "geq"}


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
            else:  # never closes: boxes that start inside the scanned stretch are part of it
                out.append((m.start(), j, None))
        elif m.group(0).endswith(" ") or m.group(0).endswith("\t"):
            tok = re.match(r"[^\s$]+", text[i:i + 100])
            if tok:
                out.append((m.start(), i + tok.end(), tok.group(0)))
    return out


def _labelled_run(text: str, boxes: list[tuple[int, int, str | None]]) -> str | None:
    """``y_1 = \\boxed{A}`` and ``y_2 = \\boxed{B}``: boxes at the end that each follow their own
    distinct label, separated only by what may join boxes, are the one answer "y_1 = A, y_2 = B"."""
    run: list[tuple[str, str]] = []
    end = len(text)
    for start, stop, content in reversed(boxes):
        tail = text[stop:end] if run else ""
        if content is None or (run and not _JOIN_GAP_RE.match(tail)):
            break
        label = _LABEL_RE.search(text[max(0, start - 40):start])
        if not label:
            break
        run.insert(0, (re.sub(r"\s+", "", label.group(1)), content.strip()))
        end = start - len(label.group(0))
    names = [n for n, _ in run]
    if len(run) < 2 or len(set(names)) != len(names):
        return None
    return ", ".join(f"{n} = {c}" for n, c in run)


def boxed_answer(text: str) -> tuple[str | None, str]:
    """The answer given by the final run of boxes, or None with the reason."""
    boxes = find_boxed(text)
    if not boxes:
        return None, "none"
    if boxes[-1][2] is None:  # a box that never closes (or is huge) is not an answer to guess around
        return None, "boxed:unclosed_or_too_long"
    labelled = _labelled_run(text, boxes)
    if labelled is not None:
        return labelled, "boxed"
    run = [boxes[-1]]
    hedge = False
    for prev in reversed(boxes[:-1]):
        gap = text[prev[1]:run[0][0]]
        if prev[2] is None or len(gap) > 60:
            break
        if _JOIN_GAP_RE.match(gap):
            run.insert(0, prev)
        elif _HEDGE_GAP_RE.match(gap):
            hedge = True
            run.insert(0, prev)
        else:
            break  # prose between boxes: a self-correction, the last box wins
    contents = [b[2].strip() for b in run]
    if len(set(contents)) == 1:
        return contents[0], "boxed"
    if hedge:
        return None, "boxed:hedge"
    return ", ".join(contents), "boxed"


def _strip_math(ans: str) -> str:
    m = re.fullmatch(r"\s*(?:\$\$|\$|\\\(|\\\[)(.+?)(?:\$\$|\$|\\\)|\\\])\s*", ans, re.DOTALL)
    return m.group(1).strip() if m else ans


def _clean(ans: str) -> str:
    ans = ans.strip()
    inner = find_boxed(ans)
    if inner and inner[-1][2] is not None:
        return inner[-1][2].strip()
    m = re.match(r"\s*(\$\$|\$|\\\(|\\\[)(.+?)(\$\$|\$|\\\)|\\\])", ans, re.DOTALL)
    if m:  # "$\frac{3}{4}$. I hope it is correct." -> the math span
        return m.group(2).strip()
    ans = re.split(r"\.\s+[A-Z]|\.\s*$|\.\n", ans)[0]  # drop a following sentence
    ans = re.sub(r"^\s*(?:\$+|\\\(|\\\[)", "", ans)
    ans = re.sub(r"(?:\$+|\\\)|\\\])\s*[.!]?\s*$", "", ans)
    return ans.strip().rstrip(".").strip()


def _strip_markup(s: str) -> str:
    return s.replace("**", "").replace("__", "")


def _refine(ans: str, depth: int = 0) -> str | None:
    """An answer phrase may hold a sentence: "The final answer is 7.78", "The largest $n$ is 34",
    "Jane started growing Sphere 3 hours ago". Reduce it to the answer it states."""
    if not ans or _is_bare_answer(ans) or depth > 2:
        return ans or None
    inner = re.search(r"\banswer\s+is\s*:?\s*(.+)$", ans, re.IGNORECASE | re.DOTALL)
    if inner:
        return _refine(_clean(inner.group(1)), depth + 1)
    spans = list(_MATH_SPAN_RE.finditer(ans))
    tail = re.search(r".*\b(?:is|are|equals|be|was|=)\s+(.+)$", ans, re.DOTALL)  # the last "is X"
    if tail and _is_bare_answer(_strip_math(tail.group(1).strip())):
        return _strip_math(tail.group(1).strip())
    if spans:
        return next(g for g in spans[-1].groups() if g is not None).strip()
    nums = _NUMBER_RE.findall(ans)
    if len(nums) == 1:
        return nums[0].lstrip("$")
    return ans


def _answer_is(text: str) -> str | None:
    m = list(_MINERVA_RE.finditer(text))
    if m:
        ans = _refine(_clean(m[-1].group(1)))
        if ans:
            return ans
    best: tuple[int, str] | None = None
    for rx in _ANSWER_IS_RES:
        for m in rx.finditer(text):
            ans = _refine(_clean(m.group(1)))
            if ans and not _VERDICT_WORDS.match(ans) and (best is None or m.start() > best[0]):
                best = (m.start(), ans)
        if best is not None:
            return best[1]  # a more specific phrase beats a later, less specific one
    return None


def _is_bare_answer(s: str) -> bool:
    if len(s) > 300 or "\n\n" in s:
        return False
    words = [w.lower() for w in _PROSE_RE.findall(re.sub(r"\\[a-zA-Z]+", " ", s))]
    if re.search(r"\\text\{[^}]*\}", s):  # \text{...} contents are part of the answer (units, words)
        return len(words) <= 4
    if re.fullmatch(r"-?[\d.,]+\s*(?:\\?%)?\s*[A-Za-z]{1,12}(?:\s[A-Za-z]{1,12})?", s.strip()):
        return True  # "15 percent", "50 Hz", "12 square feet"
    return all(w in _ALLOWED_WORDS for w in words) or bool(re.fullmatch(r"[A-Za-z]{2,30}", s.strip()))


def _whole(text: str) -> str | None:
    s = text.strip().rstrip(".").strip()
    spans = list(_MATH_SPAN_RE.finditer(s))
    if len(spans) == 1 and spans[0].start() == 0 and spans[0].end() == len(s):
        inner = next(g for g in spans[0].groups() if g is not None)
        return inner.strip()
    if not spans and "$" not in s and _is_bare_answer(s):
        return s
    return None


def _last_math(text: str) -> str | None:
    spans = list(_MATH_SPAN_RE.finditer(text[-2000:]))
    if not spans:
        return None
    last = spans[-1]
    after = text[-2000:][last.end():]
    if len(after) > 40 or re.search(r"[\d=\\{}]", after):
        return None
    inner = next(g for g in last.groups() if g is not None).strip()
    return inner or None


def _last_number(text: str) -> str | None:
    tail = text[-300:]
    nums = list(_NUMBER_RE.finditer(tail))
    if not nums:
        return None
    m = nums[-1]
    before, after = tail[:m.start()], tail[m.end():]
    if re.search(r"[\^_{\\/<>]\s*\Z|[A-Za-z]\Z", before) or not re.fullmatch(r"[^\d=\\{}^_(+*/<>]{0,80}", after):
        return None  # inside a formula or followed by more working: not a final answer
    return m.group(0).rstrip(".,") or None


def _conclusion(text: str) -> str | None:
    """The last sentence, when it is a conclusion that states exactly one number and nothing else to
    compute: "Therefore, there are 12 distinct sequences that meet the conditions." -> 12. Refused when
    the number is hedged ("at most 12"), negated, an ordinal ("3rd") or there is any formula."""
    tail = _HOPE_RE.sub("", text[-600:]).strip()
    last = re.split(r"(?<=[.!?])\s+(?=[A-Z])", tail)[-1]
    if not _CONCLUSION_RE.match(last) or re.search(r"[$=\\{}^<>]", last) or _HEDGED_RE.search(last):
        return None
    nums = list(_NUMBER_RE.finditer(last))
    if len(nums) != 1 or re.match(r"[A-Za-z]", last[nums[0].end():]):
        return None
    return nums[0].group(0).lstrip("$").rstrip(".,") + ("%" if last[nums[0].end():].startswith("%") else "")


def extract_answer(text: str, last_number_fallback: bool = True,
                   chain: tuple[str, ...] | list[str] = DEFAULT_CHAIN) -> tuple[str | None, str]:
    """Return (answer, rule). ``answer`` is None when nothing usable was found (``rule`` says why)."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty"
    text = _SPECIAL_TOKEN_RE.sub("", repair_escapes(text))  # "... 2/3. <|im_start|>user": a template's tail
    why = "no_answer"
    minerva = list(_MINERVA_RE.finditer(text[-TAIL_CHARS:]))
    for rule in chain:
        ans: str | None = None
        if rule == "boxed":
            boxes = find_boxed(text)
            offset = max(0, len(text) - TAIL_CHARS)
            if minerva and "answer_is" in chain and (not boxes or boxes[-1][1] < offset + minerva[-1].start()):
                continue  # "Final Answer: The final answer is $X$. I hope it is correct." after the boxes
            ans, how = boxed_answer(text)
            if ans is None and how != "none":
                return None, how  # an unclosed box or a hedge is not an answer to guess around
        elif rule == "answer_tag":
            tags = _ANSWER_TAG_RE.findall(text[-TAIL_CHARS:])
            ans = _clean(tags[-1]) if tags else None
            if tags and not ans:
                why = "answer_tag:empty"
        elif rule == "gsm8k":
            gsm = _GSM_RE.findall(text[-TAIL_CHARS:])
            ans = _clean(_strip_markup(gsm[-1])) if gsm else None
        elif rule == "answer_is":
            ans = _answer_is(_strip_markup(text[-TAIL_CHARS:]))
        elif rule == "whole":
            ans = _whole(text)
        elif rule == "last_math":
            ans = _last_math(text)
        elif rule == "conclusion":
            ans = _conclusion(text)
        elif rule == "last_number":
            ans = _last_number(text) if last_number_fallback else None
        else:
            raise ValueError(f"unknown extraction rule {rule!r} (known: {', '.join(DEFAULT_CHAIN)})")
        if ans:
            return _checked(ans.strip(), rule)
    return None, why


def _checked(ans: str, how: str) -> tuple[str | None, str]:
    if not ans:
        return None, f"{how}:empty"
    if len(ans) > MAX_ANSWER_CHARS:
        return None, f"{how}:too_long"
    return ans, how


def extract_gold(gold: str) -> str:
    """Gold answers are usually bare, but datasets also ship full solutions (``#### 72``, ``\\boxed``),
    math-mode wrappers (``$\\frac12$``) or several boxes that together are the answer."""
    g = repair_escapes(gold).strip()
    if len(g) > 200 and "####" not in g:  # a whole solution as the gold: read its answer like a response's
        ans, _ = extract_answer(g, chain=("boxed", "answer_tag", "answer_is"))
        if ans is not None:
            return ans
    if "\\boxed" in g or "\\fbox" in g:
        ans, _ = boxed_answer(g)
        if ans is not None:
            return ans
    if "####" in g:
        m = _GSM_RE.findall(g)
        if m:
            return m[-1].strip()
    return _strip_math(g)
