"""run.loggers: TensorBoard, W&B (offline) and MLflow (a local file store) get the metrics jsonl gets,
and a table of a few of each step's rollouts (run.tracker_samples), read back from the files each tool
writes offline."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dashboard_runs import XSS
from dashboard_runs import records as fake_records

import rl.loggers as loggers
from rl.config import ConfigError, load_config
from rl.loggers import SAMPLE_TEXT_CHARS, MetricSinks
from rollout.record import RolloutRecord

STEPS = [{"reward/mean": 0.25, "learner/kl": 0.01, "policy_version": 1, "note": "text is skipped", "x": float("nan")},
         {"reward/mean": 0.75, "learner/kl": 0.02, "policy_version": 2}]


def test_tensorboard_wandb_and_mlflow_receive_the_scalars(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sinks = MetricSinks(["jsonl", "tensorboard", "wandb", "mlflow"], tmp_path, "t", {"run": {"steps": 2}})
    try:
        for step, m in enumerate(STEPS, 1):
            sinks.log(step, m)
        assert set(sinks.sinks) == {"tensorboard", "wandb", "mlflow"}  # none failed and was dropped
        run_id = sinks.sinks["mlflow"].run.info.run_id
    finally:
        sinks.close()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, 0.25), (2, 0.75)]
    assert "note" not in acc.Tags()["scalars"] and "x" not in acc.Tags()["scalars"]

    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "learner/kl")] == [(1, 0.01), (2, 0.02)]
    assert client.get_run(run_id).data.params["run.steps"] == "2"


def test_loggers_are_validated_before_anything_starts(monkeypatch):
    with pytest.raises(ConfigError, match=r"run\.loggers.*must include jsonl"):
        load_config(None, ["run.loggers=[tensorboard]"])
    with pytest.raises(ConfigError, match=r"run\.loggers"):
        load_config(None, ["run.loggers=[jsonl,neptune]"])
    monkeypatch.setitem(loggers.MODULES, "wandb", "a_module_that_is_not_installed")
    with pytest.raises(ConfigError, match=r"run\.loggers.*wandb not installed \(pip install wandb\)"):
        load_config(None, ["run.loggers=[jsonl,wandb]"])
    assert load_config(None, ["run.loggers=[jsonl,tensorboard,jsonl]"]).run.loggers == ["jsonl", "tensorboard"]


def logged_tables(run_dir: Path, mlflow_run_id: str) -> dict[str, dict[int, tuple[list, list]]]:
    """{tool: {step: (columns, rows)}} as read back from what TensorBoard, W&B and MLflow wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    tag = "samples/text_summary"  # add_text("samples", ...)
    tb = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)} if tag in acc.Tags()["tensors"] else {}

    wb = {}
    for f in run_dir.glob("wandb/offline-run-*/files/media/table/samples_*.table.json"):
        table = json.loads(f.read_text())
        wb[int(f.name.split("_")[1])] = (table["columns"], table["data"])

    ml = {}
    for f in run_dir.glob(f"mlruns/*/{mlflow_run_id}/artifacts/samples/step_*.json"):
        table = json.loads(f.read_text())
        ml[int(f.stem.split("_")[1])] = (table["columns"], table["data"])
    return {"tensorboard": tb, "wandb": wb, "mlflow": ml}


def open_sinks(tmp_path, monkeypatch, samples):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return MetricSinks(["jsonl", "tensorboard", "wandb", "mlflow"], tmp_path, "t", {}, samples=samples)


def test_a_table_of_each_steps_rollouts_reaches_every_tracker(tmp_path, monkeypatch):
    steps = {}
    for step in (1, 2):
        recs = [RolloutRecord.from_row(r, strict=True) for r in fake_records(step, groups=3, G=4, xss=True)]
        recs[4].response_text = "a | b\nsecond line " + "x" * 2000  # group 1's first response: long, a pipe
        steps[step] = recs
    sinks = open_sinks(tmp_path, monkeypatch, samples=2)
    try:
        for step, recs in steps.items():
            sinks.log(step, {"reward/mean": 0.5}, recs[::-1])  # any order: the first of each group is picked
        assert set(sinks.sinks) == {"tensorboard", "wandb", "mlflow"}
        run_id = sinks.sinks["mlflow"].run.info.run_id
    finally:
        sinks.close()
    tables = logged_tables(tmp_path, run_id)

    for step, recs in steps.items():
        first, second = recs[0], recs[4]  # group 0 and group 1, response 0: two prompts, not group 2
        for tool in ("wandb", "mlflow"):
            columns, rows = tables[tool][step]
            assert columns == ["step", "group", "response_index", "prompt", "response", "reward", "advantage",
                               "reward/math"]
            got = [dict(zip(columns, row)) for row in rows]
            assert [(r["step"], r["group"], r["response_index"]) for r in got] == [(step, 0, 0), (step, 1, 0)], tool
            assert got[0]["prompt"] == first.question and got[0]["response"] == first.response_text
            assert got[0]["reward"] == first.reward and got[0]["advantage"] == pytest.approx(first.advantage)
            assert got[0]["reward/math"] == first.reward_components["math"]["value"]
            assert got[1]["response"] == second.response_text[:SAMPLE_TEXT_CHARS] + "..."
        md = tables["tensorboard"][step]
        assert len(md.splitlines()) == 2 + 2  # header, rule, two rows: a response's line break is a <br>
        assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in md and "<script>" not in md  # shows as text
        assert "a \\| b<br>second line" in md and "x" * (SAMPLE_TEXT_CHARS - 30) in md
        assert f"| {step} | 0 | 0 |" in md
    assert XSS[0] in tables["wandb"][1][1][0][4]  # the other tools keep the text as it is


def test_no_table_without_records_or_with_tracker_samples_0(tmp_path, monkeypatch):
    assert load_config(None, []).run.tracker_samples == 4
    recs = [RolloutRecord.from_row(r, strict=True) for r in fake_records(1)]
    sinks = open_sinks(tmp_path, monkeypatch, samples=0)
    try:
        sinks.log(1, {"reward/mean": 0.5}, recs)
        sinks.log(2, {"reward/mean": 0.5})
        run_id = sinks.sinks["mlflow"].run.info.run_id
    finally:
        sinks.close()
    assert logged_tables(tmp_path, run_id) == {"tensorboard": {}, "wandb": {}, "mlflow": {}}


@pytest.mark.slow  # a real two-step run: Ray, the rollout, reward and learner actors
def test_a_real_runs_rollouts_are_in_the_trackers_tables(ray_cluster, tmp_path, monkeypatch):
    from rl.driver import Driver

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(None, ["rollout.text.gen_length=8", "rollout.text.steps=4", "rollout.text.block_length=8",
                             "data.prompts_per_step=3", "rollout.group_size=2", "run.plot=false", "run.steps=2",
                             f"run.dir={tmp_path}", "run.name=trk", "run.tracker_samples=2",
                             "run.loggers=[jsonl,tensorboard,wandb,mlflow]"])
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        driver.train()
        run_id = driver.sinks.sinks["mlflow"].run.info.run_id if "mlflow" in driver.sinks.sinks else None
    finally:
        driver.shutdown()
    run_dir = tmp_path / "trk"
    assert run_id is not None
    tables = logged_tables(run_dir, run_id)
    for step in (1, 2):
        stored = pq.read_table(run_dir / "rollouts" / f"step={step}").to_pylist()
        first = {r["group"]: r for r in sorted(stored, key=lambda r: r["group_index"], reverse=True)}
        want = [first[g] for g in sorted(first)[:2]]
        for tool in ("wandb", "mlflow"):
            columns, rows = tables[tool][step]
            got = [dict(zip(columns, row)) for row in rows]
            assert [(r["prompt"], r["response"], r["group"]) for r in got] == \
                [(w["question"][:SAMPLE_TEXT_CHARS], w["response_text"][:SAMPLE_TEXT_CHARS], w["group"]) for w in want]
            assert [r["reward"] for r in got] == pytest.approx([w["reward"] for w in want])
            assert [r["advantage"] for r in got] == pytest.approx([w["advantage"] for w in want])
        assert f"| {step} | {want[0]['group']} | 0 |" in tables["tensorboard"][step]
