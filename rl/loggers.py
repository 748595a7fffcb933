"""Metric sinks besides metrics.jsonl, chosen by `run.loggers` (jsonl stays the source of truth: the
dashboard, resume and the reward plot read it).

    tensorboard  torch.utils.tensorboard.SummaryWriter -> RUN_DIR/tensorboard   (tensorboard --logdir)
    wandb        wandb.init(dir=RUN_DIR)   offline unless WANDB_MODE says otherwise; only when installed
    mlflow       mlflow -> MLFLOW_TRACKING_URI, default file:RUN_DIR/mlruns;    only when installed

Every sink gets the same numeric scalars per step; a sink that fails is reported once and dropped, it
never stops the run.

Sample tables (`run.tracker_samples`, default 4): per step a few real rollouts of the step, the first
response of each of the first K groups (K different prompts), as columns step, group, response, prompt,
response text, total reward, advantage and one column per reward component; prompt and response are
cut to SAMPLE_TEXT_CHARS characters (a trailing "..." says so). TensorBoard gets them as a markdown
table (`add_text`, tag `samples`, the text escaped so markup in a model's output shows as text), W&B as
a `wandb.Table` (key `samples`), MLflow as a JSON table artifact `samples/step_NNNNNN.json`
({"columns", "data"}, the layout of `mlflow.log_table`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path

LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")
SAMPLE_TEXT_CHARS = 500  # characters of a prompt or response kept in a sample table
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


def sample_table(records: list, k: int) -> tuple[list[str], list[list]]:
    """(columns, rows): the first response of each of the first k groups of a step's records."""
    picked, seen = [], set()
    for r in sorted(records, key=lambda r: (r.group, r.group_index)):
        if r.group not in seen and len(picked) < k:
            seen.add(r.group)
            picked.append(r)
    comps = sorted({name for r in picked for name in (r.reward_components or {})})
    columns = ["step", "group", "response_index", "prompt", "response", "reward", "advantage",
               *(f"reward/{c}" for c in comps)]
    rows = [[int(r.step), int(r.group), int(r.group_index), _cut(r.question), _cut(r.response_text),
             _number(r.reward), _number(r.advantage), *(_component(r.reward_components.get(c)) for c in comps)]
            for r in picked]
    return columns, rows


def _cut(text) -> str:
    text = str(text or "")
    return text if len(text) <= SAMPLE_TEXT_CHARS else text[:SAMPLE_TEXT_CHARS] + "..."


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _component(c) -> float | None:
    """A stored component is {value, status, detail} (rewards/api.py), or a bare number."""
    return _number(c.get("value") if isinstance(c, dict) else c)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    """A markdown table whose cells show their text as text: HTML and markdown characters escaped,
    line breaks as <br> (TensorBoard renders markdown, then keeps only a few safe tags)."""
    def cell(v) -> str:
        text = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        text = re.sub(r"([\\`*_{}\[\]()#+!|~-])", r"\\\1", text)
        return text.replace("\r\n", "\n").replace("\n", "<br>")
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class TensorBoardSink:
    def __init__(self, run_dir: Path, run_name: str, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def log_samples(self, step: int, columns: list[str], rows: list[list]) -> None:
        self.writer.add_text("samples", markdown_table(columns, rows), global_step=step)
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

    def log_samples(self, step: int, columns: list[str], rows: list[list]) -> None:
        import wandb

        self.run.log({"samples": wandb.Table(columns=columns, data=rows)}, step=step)

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

    def log_samples(self, step: int, columns: list[str], rows: list[list]) -> None:
        # the layout of mlflow.log_table's JSON ("split"), written with log_dict: log_table needs pandas
        self.mlflow.log_dict({"columns": columns, "data": rows}, artifact_file=f"samples/step_{step:06d}.json")

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
    """samples: rows of the sample table per step (run.tracker_samples); 0: none."""

    def __init__(self, loggers: list[str], run_dir: Path, run_name: str, config: dict, samples: int = 0) -> None:
        self.samples = samples
        self.sinks = {}
        for name in loggers:
            if name in SINKS:
                self.sinks[name] = SINKS[name](Path(run_dir), run_name, config)

    def log(self, step: int, values: dict, records: list | None = None) -> None:
        """The step's scalars; with the step's records, also its sample table."""
        scalars = _scalars(values)
        table = sample_table(records, self.samples) if records and self.samples and self.sinks else None
        for name, sink in list(self.sinks.items()):
            try:
                sink.log(step, scalars)
                if table is not None:
                    sink.log_samples(step, *table)
            except Exception as exc:  # noqa: BLE001 - a metrics service must not stop training
                print(f"unigrpo: logger {name} failed ({type(exc).__name__}: {exc}); dropped it", file=sys.stderr)
                _close(self.sinks.pop(name))  # an MLflow run left active would refuse the next start_run

    def close(self) -> None:
        for sink in self.sinks.values():
            _close(sink)
        self.sinks = {}


def _close(sink) -> None:
    try:
        sink.close()
    except Exception:  # noqa: BLE001 - closing a failed sink is best effort
        pass
