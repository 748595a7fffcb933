"""Math reward: the labelled answer set, extraction, hostile inputs, and the no-eval rule."""

import json
import os
import re
import time
from pathlib import Path

import pytest

from rewards.api import RewardInput, RewardSpec
from rewards.math_extract import extract_answer
from rewards.math_reward import math_reward
from rewards.sandbox import Call, SandboxPool

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "math_answers.jsonl"
MARK = "/tmp/unigrpo_pwned_marker"


def _cases():
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def test_labelled_set_is_big_and_varied():
    cases = _cases()
    assert len(cases) >= 300
    cats = {c["category"] for c in cases}
    assert {"gsm8k", "latex", "structure", "near_miss", "hostile", "extraction"} <= cats
    assert sum(not c["expected"] for c in cases) >= 100


@pytest.mark.timeout(300)
def test_labelled_set_through_sandbox():
    """Every case through the real sandbox (deadline enforced): all correct, no false positive."""
    if os.path.exists(MARK):
        os.remove(MARK)
    cases = _cases()
    pool = SandboxPool(num_procs=2)
    try:
        spec = RewardSpec("math").to_dict()
        res = pool.run([Call(spec, RewardInput("math", "", c["response"], c["gold"]), 5.0) for c in cases])
    finally:
        pool.close()
    wrong = [(c["id"], c["category"], r.status, r.detail) for c, r in zip(cases, res)
             if (r.value == 1.0) != c["expected"]]
    false_pos = [w for w, c in zip(wrong, cases) if not c["expected"]]
    assert not false_pos
    assert len(wrong) <= len(cases) // 100, wrong
    hostile = [r for c, r in zip(cases, res) if c["category"] == "hostile"]
    assert all(r.value == 0.0 and r.status in ("unparsable", "timeout", "ok") for r in hostile)
    assert not os.path.exists(MARK), "a planted payload was executed"


def test_planted_payload_never_runs_in_process(tmp_path):
    marker = tmp_path / "pwned"
    for resp in [f"\\boxed{{__import__('os').system('touch {marker}')}}",
                 f"The answer is __import__('os').system('touch {marker}')",
                 f"<answer>exec(\"open('{marker}','w')\")</answer>",
                 f"\\boxed{{\\pi+eval('__import__(\"os\").system(\"touch {marker}\")')}}"]:
        r = math_reward(RewardInput("math", "", resp, "0"))
        assert r.value == 0.0
    assert not marker.exists()


@pytest.mark.parametrize("text,answer", [
    ("a \\boxed{\\frac{1}{\\sqrt{2}}} b", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{1} then fixed: \\boxed{2}", "2"),
    ("<answer>12</answer>", "12"),
    ("work\n#### 1,234", "1,234"),
    ("The answer is $5$.", "5"),
    ("blah 3 then 4.", "4"),
])
def test_extraction(text, answer):
    assert extract_answer(text)[0] == answer


def test_hedge_and_fallback_switch():
    assert extract_answer("\\boxed{1} or \\boxed{2}")[0] is None
    assert extract_answer("blah 3 then 4.", last_number_fallback=False)[0] is None
    r = math_reward(RewardInput("math", "", "so 4", "4"), last_number_fallback=False)
    assert r.status == "unparsable" and r.value == 0.0


def test_missing_gold_is_error_not_exception():
    assert math_reward(RewardInput("math", "", "\\boxed{1}", None)).status == "error"


def test_no_eval_like_calls_in_rewards_package():
    bad = re.compile(r"\b(sympify|parse_expr|eval|exec|lambdify)\(")
    hits = []
    for path in (ROOT / "rewards").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line):  # same rule as the CI grep: not even in comments or on trusted text
                hits.append(f"{path.name}:{n}: {line.strip()}")
    assert not hits, hits


def test_spec_validation_names_field():
    with pytest.raises(ValueError, match=r"rewards\[1\]\.weight: expected a number, got 'abc'"):
        from rewards.api import specs_from_config
        specs_from_config({"rewards": [{"name": "math"}, {"name": "format", "weight": "abc"}]})
    with pytest.raises(ValueError, match="path"):
        RewardSpec.from_dict({"name": "x", "path": "nocolon"})
    with pytest.raises(ValueError, match="timeout_s"):
        RewardSpec.from_dict({"name": "x", "timeout_s": -1})
    s = RewardSpec.from_dict({"name": "math"})
    assert s.weight == 2.0 and s.tasks is None


# --- issue 10: answers the reward was not built on ------------------------------------------------

@pytest.mark.parametrize("response,gold,expected", [
    # a response that is only an answer (no box, no phrase): not its last number
    ("\\frac{7}{3}", "7/3", True), ("$\\frac{7}{3}$", "3", False), ("x^2+2x+1", "(x+1)^2", True),
    # Minerva / MATH format
    ("so x = 4.\nFinal Answer: The final answer is $42$. I hope it is correct.", "42", True),
    ("\\boxed{41} was wrong. Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", True),
    # thousands separators (spaces, thin spaces, LaTeX spacing) and the decimal comma (decimal gold only)
    ("5 000", "5000", True), ("\\boxed{5\\,000}", "5000", True), ("\\boxed{11,\\!111}", "11111", True),
    ("\\boxed{3,25}", "3.25", True), ("\\boxed{3,25}", "\\{3, 25\\}", True), ("\\boxed{1,000}", "1", False),
    # text answers, choice letters, words in the gold; words are text, not products of symbols
    ("$\\text{C}$", "C", True), ("\\boxed{\\text{(A)}}", "A", True), ("The answer is (b).", "(b)", True),
    ("\\boxed{\\text{even}}", "even", True), ("\\boxed{stop}", "pots", False), ("The answer is True.", "False", False),
    # several boxes forming one answer; "or" between different boxes is a hedge
    ("\\boxed{2}, \\boxed{5}", "\\{2,5\\}", True), ("\\boxed{2} and \\boxed{5}", "5", False),
    ("\\boxed{2} or \\boxed{5}", "5", False),
    # percentages and units
    ("\\boxed{15\\%}", "15", True), ("15 percent", "0.15", True), ("$120.50$", "120.5", True),
    ("The answer is 50 Hz.", "50", True), ("\\boxed{12 \\text{ cm}^2}", "12", True),
    # inequalities vs intervals, several roots, named values
    ("$1 \\le x \\le 4$", "x \\in [1,4]", True), ("$1 < x \\le 4$", "[1,4]", False),
    ("\\boxed{x = \\frac{1}{2}, x = \\frac{-1 \\pm \\sqrt{13}}{4}}", "\\frac12, \\frac{-1+\\sqrt{13}}{4}, \\frac{-1-\\sqrt{13}}{4}",
     True), ("\\boxed{(x, y) = (5, 8)}", "(5,8)", True), ("\\boxed{x + y = 5}", "x - y = 5", False),
    # escaping accidents: a form feed where "\f" began "\frac", doubled backslashes
    ("\\boxed{\x0crac{1}{2}}", "0.5", True), ("$\\\\frac{1}{2}$", "\\frac12", True),
    # a box followed by a word was once an error
    ("\\boxed{5} apples", "5", True),
])
def test_issue10_answer_classes(response, gold, expected):
    r = math_reward(RewardInput("math", "", response, gold))
    assert r.status in ("ok", "unparsable"), r
    assert (r.value == 1.0) is expected, r


@pytest.mark.parametrize("response,gold", [
    ("\\boxed{3 + 10^{-18}}", "3"), ("\\boxed{10^{14}+1}", "10^{14}"), ("\\boxed{\\frac{1}{2004!}}", "\\frac{1}{2006!}"),
    ("\\boxed{1-\\frac{1}{e}}", "1+\\frac{1}{e}"), ("\\boxed{0.3333}", "\\frac{1}{3}"), ("\\boxed{7.8}", "7.78"),
    ("\\boxed{0.54}", "0.5"), ("\\boxed{8}", "7.78"),
    # vanishes at any fixed small set of integer or simple rational points
    ("\\boxed{x + (x-1)(x-2)(x-3)(x-4)(x-5)(x-6)}", "x"),
    ("\\boxed{x + (37x-29)(17x+23)(13x-71)(41x-5)}", "x"), ("\\boxed{\\sin(\\pi x) + x}", "x"),
])
def test_issue10_no_false_correct(response, gold):
    r = math_reward(RewardInput("math", "", response, gold))
    assert r.value == 0.0, r


@pytest.mark.parametrize("response,gold", [
    ("\\boxed{\\frac{70}{9}}", "7.78"), ("\\boxed{\\sqrt{2}}", "1.414"), ("\\boxed{[1/3, 1/4]}", "[0.333, 0.25]"),
    ("\\boxed{\\sin^2 x + \\cos^2 x}", "1"), ("\\boxed{\\frac{x}{7}+\\frac{2}{7}}", "\\frac{x+2}{7}"),
    ("\\boxed{\\sec^2(y)}", "\\tan^2(y)+1"), ("\\boxed{0.0833333333333333}", "\\frac{1}{12}"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"),
])
def test_issue10_exact_and_rounded_matches(response, gold):
    r = math_reward(RewardInput("math", "", response, gold))
    assert r.value == 1.0, r


# --- issue 10, second pass: failure classes of the dev split of Math-Verify's own suite ----------

@pytest.mark.parametrize("response,gold,expected", [
    ("$(5,2),(7,2)$", "$p=5,q=2;p=7,q=2$", True), ("$(7,2),(5,2)$", "$p=5,q=2;p=7,q=2$", True),
    ("$(2,5),(2,7)$", "$p=5,q=2;p=7,q=2$", False), ("$(5,2)$", "$p=5,q=2;p=7,q=2$", False),
    ("$p=7, q=2; p=5, q=2$", "$p=5,q=2;p=7,q=2$", True),
    # named values are never a set: x=1, y=2 is not x=2, y=1 (it used to be {1, 2} on both sides)
    ("\\boxed{x=2, y=1}", "x=1, y=2", False), ("\\boxed{y=2, x=1}", "x=1, y=2", True),
    ("\\boxed{(1,2)}", "x=1, y=2", True), ("\\boxed{(2,1)}", "x=1, y=2", False),
])
def test_issue10_named_solutions_are_tuples(response, gold, expected):
    r = math_reward(RewardInput("math", "", response, gold))
    assert (r.value == 1.0) is expected, r


@pytest.mark.parametrize("response,gold,expected", [
    ("$(0,1)$", "$0<f(x)<1$", True), ("$(0,1)$", "$1>g(t)>0$", True), ("$(0,1]$", "$0<f(x)\\le 1$", True),
    ("$[0,1)$", "$0<f(x)<1$", False), ("$(0,2)$", "$0<f(x)<1$", False),
    ("$(0,1)$", "$0<x^2<1$", False),  # a condition on x (x in (-1,0) u (0,1)), not a range of values
])
def test_issue10_range_of_a_function_is_an_interval(response, gold, expected):
    r = math_reward(RewardInput("math", "", response, gold))
    assert (r.value == 1.0) is expected, r


def test_issue10_labelled_boxes_with_prose_between():
    gold = "$y_{1}=-2 x^{2}+4 x+3, y_{2}=3 x^{2}+12 x+10$"
    resp = "\\($y_1 = \\boxed{-2(x - 1)^2 + 5} \\) and \\( y_2 = \\boxed{3(x + 2)^2 - 2} \\) "
    assert extract_answer(resp) == ("y_1 = -2(x - 1)^2 + 5, y_2 = 3(x + 2)^2 - 2", "boxed")
    assert math_reward(RewardInput("math", "", resp, gold)).value == 1.0
    swapped = resp.replace("y_1", "y_3").replace("y_2", "y_1").replace("y_3", "y_2")
    assert math_reward(RewardInput("math", "", swapped, gold)).value == 0.0
    # the same label twice is a self-correction (last box wins); prose between boxes still breaks a run
    assert extract_answer("x = \\boxed{2} and x = \\boxed{3}") == ("3", "boxed")
    assert extract_answer("a = \\boxed{2}. But then we see b = \\boxed{3}") == ("3", "boxed")


@pytest.mark.parametrize("text,answer", [
    ("d = 90/n. Therefore, there are 12 distinct arithmetic sequences that meet the three given conditions. "
     "I hope it is correct. <|im_start|>user", "12"),
    ("Each box holds 4. So, she needs 7 boxes in all.", "7"),
    ("Therefore, there are at most 12 sequences.", None),  # hedged
    ("Therefore, the 3rd term is the largest.", None),  # an ordinal
    ("Therefore, 12 of the 15 sequences work.", None),  # two numbers
    ("Therefore, $x = 12$ is not the answer.", None),  # a formula (and a negation)
])
def test_issue10_conclusion_sentence(text, answer):
    assert extract_answer(text, chain=("conclusion",))[0] == answer  # the rule alone
    if answer:
        assert extract_answer(text) == (answer, "conclusion")


def test_identity_points_are_seeded_per_call():
    from rewards import math_equiv

    math_equiv.seed_for_call("x", "x + 0")
    a = math_equiv._seed
    math_equiv.seed_for_call("x", "x + 0")
    assert math_equiv._seed == a  # reproducible verdicts
    math_equiv.seed_for_call("x", "x + 0 ")
    assert math_equiv._seed != a  # but no fixed point set an answer could be built around


@pytest.mark.parametrize("response,gold,expected", [("t^r", "8", 0.0), ("a^b", "b^a", 0.0),
                                                    ("2^{x} \\cdot 2^{y}", "2^{x+y}", 1.0)])
def test_symbolic_power_at_random_points_is_fast(response, gold, expected):
    """A symbolic exponent (t^r, from a 3-character demo answer) was substituted exactly: a rational to
    a rational power with 6-digit denominators, an integer root of a huge number, past the 5 s sandbox
    deadline. The points are evaluated numerically now."""
    t0 = time.perf_counter()
    r = math_reward(RewardInput("math", "", response, gold))
    assert r.value == expected, r
    assert time.perf_counter() - t0 < 2.0  # was > 8 s for t^r before


def test_extraction_chain_is_explicit_and_switchable():
    text = "Work: 3 and 4.\nThe answer is 7."
    assert extract_answer(text) == ("7", "answer_is")
    assert extract_answer(text, chain=("boxed",)) == (None, "no_answer")
    r = math_reward(RewardInput("math", "", text, "7"), extract=["boxed", "last_number"])
    assert r.value == 1.0 and r.detail.startswith("rule=last_number")
    r = math_reward(RewardInput("math", "", text, "7"), explain=True)
    assert r.detail == "rule=answer_is: integer | gold='7' | answer='7'"
    with pytest.raises(ValueError, match="unknown extraction rule"):
        extract_answer(text, chain=("boxes",))


CORPUS = ROOT / "tests" / "data" / "math_corpus.jsonl"
CORPUS_LABELS = ROOT / "tests" / "data" / "math_corpus_labels.jsonl"


def test_real_output_corpus_is_big_sourced_and_split():
    rows = [json.loads(x) for x in CORPUS.read_text().splitlines() if x.strip()]
    labels = {d["id"]: d for d in map(json.loads, CORPUS_LABELS.read_text().splitlines())}
    assert len(rows) >= 3000 and len({r["source"] for r in rows}) >= 5
    assert all(r["licence"] and r["style"] and r["split"] in ("dev", "heldout") for r in rows)
    assert {r["source"] for r in rows if r["split"] == "heldout"} == {r["source"] for r in rows}
    assert set(labels) == {r["id"] for r in rows}
    assert sum(1 for d in labels.values() if d["triage"] != "agreed") >= 150  # every disagreement triaged


@pytest.mark.timeout(300)
def test_real_output_corpus_triaged_cases():
    """All hand-triaged cases plus a fixed sample of agreed ones, in-process: precision first."""
    rows = {r["id"]: r for r in map(json.loads, CORPUS.read_text().splitlines())}
    labels = [json.loads(x) for x in CORPUS_LABELS.read_text().splitlines()]
    picked = [d for d in labels if d["triage"] != "agreed" and isinstance(d["label"], bool)]
    picked += [d for d in labels if d["triage"] == "agreed"][::25]
    fp = fn = 0
    for d in picked:
        r = rows[d["id"]]
        got = math_reward(RewardInput("math", "", r["response"], r["gold"])).value == 1.0
        fp += got and not d["label"]
        fn += d["label"] and not got
    assert fp <= len(picked) // 100, (fp, fn)
    assert fp + fn <= len(picked) * 4 // 100, (fp, fn)


def test_rewards_check_shows_rule_and_explains(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"task": "math", "prompt": "", "gold": "7/3",
                               "response": "Final Answer: The final answer is $\\frac{7}{3}$. I hope it is correct."}) + "\n")
    out = subprocess.run([sys.executable, "-m", "rewards.cli", "--input", str(src), "--rewards", "math", "--explain"],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.splitlines()[0])["components"]["math"]
    assert rec["value"] == 1.0 and rec["rule"] == "answer_is"
    assert "gold='7/3'" in rec["detail"] and "answer='\\\\frac{7}{3}'" in rec["detail"]
    assert "math rules answer_is=1" in out.stderr and "line 1 math=1" in out.stderr
