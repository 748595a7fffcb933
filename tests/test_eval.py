"""Held-out evaluation in the loop (rl/evaluation.py) and `unigrpo eval`, through the real CLI and actors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rl.config import ConfigError, load_config
from rl.evaluation import eval_summary

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "rl.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_eval_config_is_validated_before_anything_starts():
    cfg = load_config(None, ["eval.every=5", "eval.k=4"])
    assert cfg.eval.sampler_overrides() == {"temperature": 0.0, "use_cache": False, "threshold": None}
    with pytest.raises(ConfigError, match="eval.correct_rewards"):  # an eval set whose "correct" names no reward
        load_config(None, ["data.task=toy_arith", "eval.correct_rewards=[format]"])
    load_config(None, ["eval.correct_rewards=[format]"])  # toy_copy has no eval set: nothing is judged correct
    with pytest.raises(ConfigError, match="eval.every"):
        load_config(None, ["eval.every=0"])


def test_eval_summary_first_best_last():
    rows = [{"step": 0, "eval/accuracy": 0.1}, {"step": 1, "reward/mean": 0.5},
            {"step": 5, "eval/accuracy": 0.7}, {"step": 9, "eval/accuracy": 0.6}]
    s = eval_summary(rows)["eval"]["eval/accuracy"]
    assert (s["first"], s["best"], s["best_step"], s["last"], s["last_step"]) == (0.1, 0.7, 5, 0.6, 9)
    assert eval_summary([{"step": 1, "reward/mean": 0.5}]) == {}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_in_the_loop_and_unigrpo_eval(tmp_path):
    proc = cli("train", "configs/tiny.yaml", f"run.dir={tmp_path}", "run.name=ev", "data.task=toy_arith", "run.steps=3", "run.checkpoint_every=3",
               "data.prompts_per_step=2", "rollout.group_size=2", "model.warm_start.steps=2",
               "eval.every=2", "eval.num_prompts=6", "eval.k=2", "run.plot=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ev"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]  # step 0, every 2, the last step
    assert all(r["eval/prompts"] == 6 and 0 <= r["eval/accuracy"] <= 1 for r in evals)
    assert all("eval/pass@2" in r and "eval/sample_accuracy" in r for r in evals)
    assert "held-out accuracy" in proc.stdout  # the console line
    # stored like rollouts: greedy rows (temperature 0, plain sampler) + k samples per prompt
    table = pq.read_table(run / "evals" / "step=2" / "part-0.parquet").to_pylist()
    assert len(table) == 6 + 6 * 2
    samplers = [json.loads(r["sampler"]) for r in table]
    assert all(s["temperature"] == 0.0 and not s["use_cache"] and s["threshold"] is None for s in samplers[:6])
    assert all(s["temperature"] == 1.0 for s in samplers[6:])
    assert {r["prompt_id"] for r in table[:6]} == {r["prompt_id"] for r in table[6:]}  # the same held-out prompts
    summary = json.loads((run / "summary.json").read_text())
    acc = summary["eval"]["eval/accuracy"]
    assert acc["first_step"] == 0 and acc["last_step"] == 3 and acc["best"] >= max(acc["first"], acc["last"])
    assert (run / "policy_init" / "warm_start.json").is_file()

    # `unigrpo eval` on the checkpoint, on a file, without training
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {a} pens and gets 1 more. How many now?",
                                        "answer": str(a + 1)}) + "\n" for a in range(1, 5)))
    proc = cli("eval", str(run / "checkpoints" / "step_3"), "--data", str(data), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["eval/prompts"] == 4 and 0.0 <= result["eval/accuracy"] <= 1.0
    assert result["policy"].endswith("step_3/policy")
    assert "eval/pass@2" in result  # the run's own config.yaml (found above the checkpoint) is used: k = 2
    assert len(pq.read_table(tmp_path / "out" / "evals" / "step=0" / "part-0.parquet")) == 4 + 4 * 2
    bad = cli("eval", str(tmp_path / "nothing-here"), "--data", str(data))
    assert bad.returncode == 2 and "config.json" in bad.stderr
