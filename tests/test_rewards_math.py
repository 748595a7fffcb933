"""Math reward: the labelled answer set, extraction, hostile inputs, and the no-eval rule."""

import json
import os
import re
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
