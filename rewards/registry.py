"""Finding a reward by name: built-ins, ``module:attr`` paths, and the ``unigrpo.rewards`` entry points.

Resolution order for a spec: its ``path`` if set, then the built-in table, then installed entry points.
Everything here runs inside the process that will call the reward (a sandbox worker or a model actor),
so a plugin that fails to import is reported as that reward's error, not as a crash of the caller;
``probe_kinds`` checks every plugin up front, in a sandbox worker, before a run starts.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from rewards.api import RewardInput, RewardResult, RewardSpec, coerce_result

ENTRY_POINT_GROUP = "unigrpo.rewards"

BUILTINS: dict[str, str] = {
    "math": "rewards.math_reward:math_reward",
    "format": "rewards.format_reward:format_reward",
    "choice": "rewards.choice_reward:choice_reward",
    "clip": "rewards.clip_reward:ClipReward",
}
# Where a reward runs: "rule" rewards in the killable subprocess pool, "model" rewards in-process on
# the model actors (they hold weights on a device and are batched).
BUILTIN_KINDS = {"math": "rule", "format": "rule", "choice": "rule", "clip": "model"}


def builtin_kind(name: str) -> str | None:
    """"rule" or "model" for a built-in reward, None for any other name (a plugin says when probed)."""
    return BUILTIN_KINDS.get(name)


def import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _entry_point(name: str) -> Any | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def entry_point_names() -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def resolve_target(spec: RewardSpec) -> Any:
    if spec.path:
        return import_path(spec.path)
    if spec.name in BUILTINS:
        return import_path(BUILTINS[spec.name])
    target = _entry_point(spec.name)
    if target is None:
        raise LookupError(
            f"unknown reward {spec.name!r}: not a built-in ({', '.join(sorted(BUILTINS))}), no 'path' "
            f"given, and no entry point named {spec.name!r} in group {ENTRY_POINT_GROUP!r}")
    return target


class RewardImportError(ValueError):
    """A reward plugin that cannot be imported or does not fit its spec: a configuration error."""


def probe_reward(spec: RewardSpec) -> RewardResult:
    """Import and check one reward (run inside a sandbox worker): status ok with its kind as detail
    ("rule" or "model"), or an error saying why. Rule classes are instantiated (as the worker would);
    model classes are only imported, their weights load on the model actors."""
    target = resolve_target(spec)
    kind = "model" if getattr(target, "kind", "rule") == "model" else "rule"
    if inspect.isclass(target):
        try:
            inspect.signature(target).bind(**spec.kwargs)
        except TypeError as exc:
            return RewardResult(0.0, "error", f"kwargs {sorted(spec.kwargs)} do not fit {target.__name__}: {exc}")
        if kind == "rule":
            load_reward(spec)
    elif callable(target):
        try:
            inspect.signature(target).bind(None, **spec.kwargs)
        except TypeError as exc:
            return RewardResult(0.0, "error", f"{getattr(target, '__name__', target)}(inp, **kwargs) does not "
                                              f"accept kwargs {sorted(spec.kwargs)}: {exc}")
        except ValueError:  # builtins without a signature
            pass
    else:
        return RewardResult(0.0, "error", f"resolves to a {type(target).__name__}, not a function or class")
    return RewardResult(0.0, "ok", kind)


def probe_kinds(specs: list[RewardSpec], mem_limit_mb: int | None = None) -> dict[str, str]:
    """Where each reward runs ("rule" or "model"), importing every plugin in a sandbox worker (same
    deadline and memory cap as a call), never in this process: a plugin whose import exits, hangs or
    allocates is reported as ``reward X failed to import: ...`` (a RewardImportError)."""
    from rewards.sandbox import DEFAULT_MEM_LIMIT_MB, Call, SandboxPool

    kinds = {s.name: BUILTIN_KINDS[s.name] for s in specs if s.path is None and s.name in BUILTIN_KINDS}
    todo = [s for s in specs if s.name not in kinds]
    if not todo:
        return kinds
    pool = SandboxPool(1, mem_limit_mb or DEFAULT_MEM_LIMIT_MB, preload=(), spares=0)
    try:
        results = pool.run([Call(s.to_dict(), None, s.timeout_s, op="probe") for s in todo])
    finally:
        pool.close()
    for s, r in zip(todo, results):
        if r.status != "ok":
            why = f"import did not finish within timeout_s={s.timeout_s:g}" if r.status == "timeout" else r.detail
            raise RewardImportError(f"reward {s.name!r} failed to import: {why}")
        kinds[s.name] = r.detail
    return kinds


@dataclass
class LoadedReward:
    """A reward made callable in one uniform way: one sample or a batch, always RewardResults."""

    spec: RewardSpec
    fn: Callable[..., Any]
    batched: bool

    def score_one(self, inp: RewardInput) -> RewardResult:
        if self.batched:
            out = self.fn([inp])
            return coerce_result(out[0]) if isinstance(out, (list, tuple)) and len(out) == 1 else \
                RewardResult(0.0, "error", "batched reward did not return one result per input")
        return coerce_result(self.fn(inp, **self.spec.kwargs))

    def score_batch(self, batch: list[RewardInput]) -> list[RewardResult]:
        if not self.batched:
            return [self.score_one(x) for x in batch]
        out = self.fn(batch)
        if not isinstance(out, (list, tuple)) or len(out) != len(batch):
            return [RewardResult(0.0, "error", "batched reward did not return one result per input")] * len(batch)
        return [coerce_result(r) for r in out]


def load_reward(spec: RewardSpec, extra_init: dict | None = None) -> LoadedReward:
    """Import and instantiate a reward. ``extra_init`` (e.g. the CLIP model path) fills in constructor
    arguments the spec's kwargs do not set, for classes that accept them."""
    target = resolve_target(spec)
    if inspect.isclass(target):
        kwargs = dict(spec.kwargs)
        if extra_init:
            params = inspect.signature(target).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
            for k, v in extra_init.items():
                if k not in kwargs and v is not None and (takes_any or k in params):
                    kwargs[k] = v
        return LoadedReward(spec, target(**kwargs), batched=True)
    if callable(target):
        return LoadedReward(spec, target, batched=False)
    raise TypeError(f"reward {spec.name!r} resolves to a {type(target).__name__}, not a function or class")
