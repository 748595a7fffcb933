"""run.loggers: TensorBoard, W&B (offline) and MLflow (a local file store) get the metrics jsonl gets."""

from __future__ import annotations

import pytest

import rl.loggers as loggers
from rl.config import ConfigError, load_config
from rl.loggers import MetricSinks

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
