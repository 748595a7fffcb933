"""Fault injection, reward side: values that would poison the advantages, plugins whose import exits,
hangs or allocates, replacement workers that start slowly, plugins that print without end, and input
lines that are not valid text. Each test injects the fault from outside and checks the run survives.
(Reward actors killed by PID: tests/test_faults_actors.py.)"""

import io
import json
import math
import time
from pathlib import Path

import pytest

from rewards.api import RewardInput, RewardSpec
from rewards.engine import LocalScorer
from rewards.registry import RewardImportError, probe_kinds
from rewards.sandbox import MAX_OUTPUT_BYTES, Call, SandboxPool
from rl.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
PLUG = "tests.plugins.faulty_rewards"


def _inp(resp="\\boxed{1}", gold="1"):
    return RewardInput("math", "q", resp, gold)


def test_absurd_and_non_finite_values_are_counted_invalid_worth_zero():
    specs = [RewardSpec("math", weight=2.0),
             RewardSpec("huge", weight=2.0, path=f"{PLUG}:huge"),
             RewardSpec("not_finite", path=f"{PLUG}:not_finite"),
             RewardSpec("huge_result", path=f"{PLUG}:huge_result"),
             RewardSpec("eleven", path=f"{PLUG}:eleven", max_abs=10.0),  # a per-reward bound
             RewardSpec("eleven_ok", path=f"{PLUG}:eleven", max_abs=100.0)]
    scorer = LocalScorer(specs)
    try:
        out = scorer.score([_inp("\\boxed{1}"), _inp("inf"), _inp("-inf"), _inp("nan")])
    finally:
        scorer.close()
    for s in out:
        assert math.isfinite(s.total)
        for name in ("huge", "huge_result", "eleven"):
            assert s.components[name].status == "invalid" and s.components[name].value == 0.0
        assert s.components["eleven_ok"].status == "ok" and s.components["eleven_ok"].value == 11.0
    assert out[0].total == pytest.approx(2.0 * 1.0 + 1.0 + 11.0)  # math + not_finite(1.0) + eleven_ok
    assert [s.components["not_finite"].status for s in out] == ["ok", "invalid", "invalid", "invalid"]
    counts = scorer.stats.to_dict()["counts"]
    assert counts["huge"]["invalid"] == 4 and counts["not_finite"]["invalid"] == 3


@pytest.mark.parametrize("module, why", [
    ("import_exits", "died (exit code 3)"),
    ("import_hangs", "did not finish within timeout_s=1"),
    ("import_allocates", "memory limit exceeded"),
])
def test_plugin_import_is_contained_and_reported(module, why):
    t0 = time.monotonic()
    with pytest.raises(RewardImportError) as err:
        probe_kinds([RewardSpec("math"), RewardSpec("bad", path=f"tests.plugins.{module}:reward", timeout_s=1.0)])
    assert str(err.value).startswith("reward 'bad' failed to import:") and why in str(err.value)
    assert time.monotonic() - t0 < 30  # start-up of one worker plus a 1 s deadline


def test_plugin_kwargs_that_do_not_fit_are_reported_before_the_run():
    with pytest.raises(RewardImportError, match="reward 'mine' failed to import: .*does not accept kwargs"):
        probe_kinds([RewardSpec("mine", path="rewards.math_reward:math_reward", kwargs={"bogus": 1})])
    kinds = probe_kinds([RewardSpec("mine", path="rewards.math_reward:math_reward",
                                    kwargs={"last_number_fallback": False})])
    assert kinds == {"mine": "rule"}


def test_bad_plugin_import_is_exit_2_for_rewards_check_and_train(tmp_path, capsys):
    dump = tmp_path / "in.jsonl"
    dump.write_text(json.dumps({"task": "math", "prompt": "q", "response": "\\boxed{1}", "gold": "1"}) + "\n")
    cfg = tmp_path / "rewards.yaml"
    cfg.write_text("rewards:\n  - {name: bad, path: 'tests.plugins.import_exits:reward'}\n")
    assert cli_main(["rewards", "check", "--input", str(dump), "--config", str(cfg)]) == 2
    assert "reward 'bad' failed to import" in capsys.readouterr().err
    code = cli_main(["train", f"run.dir={tmp_path / 'runs'}", "run.name=bad",
                     "rewards.functions=[{name: bad, path: 'tests.plugins.import_exits:reward'}]"])
    assert code == 2 and "reward 'bad' failed to import" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing started, nothing left behind


def test_deadline_covers_the_call_only_not_a_replacement_workers_start():
    """After a timeout the worker is replaced; its start-up (sympy, ~1 s) must not time out the next,
    correct answers, and a small timeout must not time out a cold pool's first calls."""
    pool = SandboxPool(num_procs=1)  # cold: not warmed up
    try:
        math_call = Call(RewardSpec("math").to_dict(), _inp("\\boxed{7}", "7"), 0.5)
        hang = Call(RewardSpec("slow", path=f"{PLUG}:slow_ok", kwargs={"seconds": 60}).to_dict(), _inp(), 0.5)
        res = pool.run([math_call, hang, math_call, hang, math_call, math_call])
        assert [r.status for r in res] == ["ok", "timeout", "ok", "timeout", "ok", "ok"]
        assert pool.restarts == 2
    finally:
        pool.close()


def test_plugin_output_is_capped_per_call():
    log = io.StringIO()
    pool = SandboxPool(num_procs=1, log=log)
    try:
        spec = RewardSpec("chatty", path=f"{PLUG}:chatty", kwargs={"megabytes": 20}, timeout_s=60).to_dict()
        res = pool.run([Call(spec, _inp(), 60), Call(spec, _inp(), 60)])
    finally:
        pool.close()
    assert [r.status for r in res] == ["ok", "ok"]
    text = log.getvalue()
    assert text.count("more bytes of output dropped") == 2  # 2 x 40 MB printed, 2 x 8 KB kept
    assert len(text) < 4 * MAX_OUTPUT_BYTES


def test_rewards_check_keeps_going_after_bad_text_lines(tmp_path):
    good = json.dumps({"task": "math", "prompt": "q", "response": "\\boxed{2}", "gold": "2"}).encode()
    lines = [good,
             b'{"task": "math", "prompt": "q", "response": "\xff\xfe bad bytes", "gold": "2"}',
             b'{"task": "math", "prompt": "q", "response": "lone \\ud800 surrogate", "gold": "2"}',
             good]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    assert cli_main(["rewards", "check", "--input", str(src), "--output", str(dst), "--rewards", "math"]) == 0
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in out] == [1, 2, 3, 4]
    assert "UTF-8" in out[1]["error"] and "surrogate" in out[2]["error"]
    assert out[0]["total"] == out[3]["total"] == 2.0  # math, weight 2
