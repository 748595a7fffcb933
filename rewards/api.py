"""Data types shared by every reward, the worker pool and the CLI.

A reward is either
  * a function ``fn(inp: RewardInput, **kwargs) -> float | RewardResult`` (called once per sample), or
  * a class ``Cls(**kwargs)`` whose instances are called with a batch:
    ``obj(batch: list[RewardInput]) -> list[float | RewardResult]``.
A class may set ``kind = "model"`` to be placed on the model actors (GPU/CPU, in-process) instead of
the sandboxed CPU workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# invalid: the reward returned a non-finite value or one beyond its bound (`max_abs`); worth 0
STATUSES = ("ok", "timeout", "error", "unparsable", "invalid")

# The paper's weights (MMaDA §2.3.2): correctness 2.0, format 0.5, CLIP 0.1 x score.
DEFAULT_WEIGHTS = {"math": 2.0, "format": 0.5, "clip": 0.1}
DEFAULT_TIMEOUT_S = 5.0
# |value| above this is not a reward but a bug (1e300 would overflow the weighted total to inf and the
# advantages to NaN); per reward with `max_abs`
DEFAULT_MAX_ABS = 1e6


@dataclass
class RewardInput:
    task: str
    prompt: str
    response: str
    gold: str | None = None
    image: np.ndarray | None = None  # uint8 HxWx3
    metadata: dict = field(default_factory=dict)


@dataclass
class RewardResult:
    value: float
    status: str = "ok"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"value": self.value, "status": self.status, "detail": self.detail}


@dataclass
class ScoredSample:
    components: dict[str, RewardResult]
    total: float


def coerce_result(raw: Any, max_detail: int = 500) -> RewardResult:
    """Turn whatever a reward returned into a RewardResult; anything odd becomes an error, not a crash."""
    if isinstance(raw, RewardResult):
        value, status, detail = raw.value, raw.status, raw.detail
    elif isinstance(raw, bool) or isinstance(raw, (int, float, np.integer, np.floating)):
        value, status, detail = float(raw), "ok", ""
    else:
        return RewardResult(0.0, "error", f"reward returned {type(raw).__name__}, expected a float")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return RewardResult(0.0, "error", "reward value is not a number")
    if not math.isfinite(value):
        return RewardResult(0.0, "invalid", f"reward value is not finite: {value}")
    if status != "ok":
        value = 0.0  # a non-ok component never contributes
    return RewardResult(value, status, str(detail)[:max_detail])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def default_weight(name: str) -> float:
    """A reward's weight when its config leaves it unset: the paper's for its own rewards, else 1."""
    return DEFAULT_WEIGHTS.get(name, 1.0)


@dataclass
class RewardSpec:
    name: str
    weight: float | None = None  # None: default_weight(name)
    tasks: list[str] | None = None  # None: applies to every task
    timeout_s: float = DEFAULT_TIMEOUT_S
    kwargs: dict = field(default_factory=dict)
    path: str | None = None  # "module:function" or "module:Class"; None: built-in or entry point
    max_abs: float = DEFAULT_MAX_ABS

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = default_weight(self.name)

    def applies_to(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def to_dict(self) -> dict:
        return {
            "name": self.name, "weight": self.weight, "tasks": self.tasks, "timeout_s": self.timeout_s,
            "kwargs": dict(self.kwargs), "path": self.path, "max_abs": self.max_abs,
        }

    def bound(self, r: RewardResult) -> RewardResult:
        """A value that is not finite or beyond ``max_abs`` becomes a counted ``invalid`` result worth 0.
        Applied by the caller of the sandbox, whatever the worker replied."""
        if r.status == "ok" and not (math.isfinite(r.value) and abs(r.value) <= self.max_abs):
            return RewardResult(0.0, "invalid", f"value {r.value!r} outside [-{self.max_abs:g}, {self.max_abs:g}]")
        return r

    @classmethod
    def from_dict(cls, d: Any, where: str = "reward") -> RewardSpec:
        """Validate a config entry; errors name the field and the reason."""
        if isinstance(d, str):  # shorthand: just a name
            d = {"name": d}
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        known = {"name", "weight", "tasks", "timeout_s", "kwargs", "path", "max_abs"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.name: expected a non-empty string, got {name!r}")
        weight = d.get("weight")  # unset (or null in a resolved run config): the reward's own default
        weight = default_weight(name) if weight is None else weight
        if not _is_number(weight):
            raise ValueError(f"{where}.weight: expected a number, got {weight!r}")
        tasks = d.get("tasks")
        if tasks is not None:
            if isinstance(tasks, str):
                tasks = [tasks]
            if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
                raise ValueError(f"{where}.tasks: expected a list of strings or null, got {tasks!r}")
        timeout = d.get("timeout_s")
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        if not _is_number(timeout) or timeout <= 0:
            raise ValueError(f"{where}.timeout_s: expected a positive number, got {timeout!r}")
        max_abs = d.get("max_abs", DEFAULT_MAX_ABS)
        if not _is_number(max_abs) or max_abs <= 0:
            raise ValueError(f"{where}.max_abs: expected a positive number, got {max_abs!r}")
        kwargs = d.get("kwargs") or {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"{where}.kwargs: expected a mapping with string keys, got {kwargs!r}")
        path = d.get("path")
        if path is not None and (not isinstance(path, str) or path.count(":") != 1 or path.startswith(":")
                                 or path.endswith(":")):
            raise ValueError(f"{where}.path: expected 'module:attribute', got {path!r}")
        return cls(name=name, weight=float(weight), tasks=list(tasks) if tasks is not None else None,
                   timeout_s=float(timeout), kwargs=dict(kwargs), path=path, max_abs=float(max_abs))


def specs_from_config(cfg: Any) -> list[RewardSpec]:
    """Parse ``{"rewards": [...]}`` (or a bare list) into specs, naming the index in errors."""
    items = cfg.get("rewards") if isinstance(cfg, dict) else cfg
    if not isinstance(items, list) or not items:
        raise ValueError("rewards: expected a non-empty list of reward specs")
    specs = [RewardSpec.from_dict(d, where=f"rewards[{i}]") for i, d in enumerate(items)]
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"rewards: duplicate reward name {dup[0]!r}")
    return specs
