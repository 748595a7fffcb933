"""Metric sinks besides metrics.jsonl, chosen by `run.loggers` (jsonl stays the source of truth: the
dashboard, resume and the reward plot read it).

    tensorboard  torch.utils.tensorboard.SummaryWriter -> RUN_DIR/tensorboard   (tensorboard --logdir)
    wandb        wandb.init(dir=RUN_DIR)   offline unless WANDB_MODE says otherwise; only when installed
    mlflow       mlflow -> MLFLOW_TRACKING_URI, default file:RUN_DIR/mlruns;    only when installed

Every sink gets the same numeric scalars per step; a sink that fails is reported once and dropped, it
never stops the run.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def missing(loggers: list[str]) -> list[str]:
    """Selected loggers whose package is not installed (checked before any actor starts)."""
    return [name for name in loggers if name in MODULES and importlib.util.find_spec(MODULES[name]) is None]


def _scalars(values: dict) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


class TensorBoardSink:
    def __init__(self, run_dir: Path, run_name: str, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, run_name: str, config: dict) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "unigrpo"), name=run_name, dir=str(run_dir),
                              config=config, mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowSink:
    def __init__(self, run_dir: Path, run_name: str, config: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        if "MLFLOW_TRACKING_URI" not in os.environ:  # a local file store in the run directory
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", (run_dir / "mlruns").resolve().as_uri()))
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "unigrpo"))
        self.run = mlflow.start_run(run_name=run_name)
        flat = {k: str(v)[:500] for k, v in _flatten(config).items()}
        for i in range(0, len(flat), 100):  # MLflow takes at most 100 params a call
            mlflow.log_params(dict(list(flat.items())[i : i + 100]))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MLflowSink}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


class MetricSinks:
    def __init__(self, loggers: list[str], run_dir: Path, run_name: str, config: dict) -> None:
        self.sinks = {}
        for name in loggers:
            if name in SINKS:
                self.sinks[name] = SINKS[name](Path(run_dir), run_name, config)

    def log(self, step: int, values: dict) -> None:
        scalars = _scalars(values)
        for name, sink in list(self.sinks.items()):
            try:
                sink.log(step, scalars)
            except Exception as exc:  # noqa: BLE001 - a metrics service must not stop training
                print(f"unigrpo: logger {name} failed ({type(exc).__name__}: {exc}); dropped it", file=sys.stderr)
                self.sinks.pop(name)

    def close(self) -> None:
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                pass
        self.sinks = {}
