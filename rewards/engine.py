"""Pieces shared by the Ray pool and the in-process CLI: cache keys, task filtering, weighted totals,
status counting, and an in-process scorer (sandbox for rule rewards, direct calls for model rewards)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict, defaultdict

from rewards.api import STATUSES, RewardInput, RewardResult, RewardSpec, ScoredSample
from rewards.registry import load_reward, probe_kinds
from rewards.sandbox import Call, SandboxPool


def cache_key(spec: RewardSpec, inp: RewardInput) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([spec.name, spec.path, spec.kwargs], sort_keys=True, default=str).encode())
    for part in (inp.prompt, inp.response, inp.gold):
        b = (part if isinstance(part, str) else repr(part)).encode("utf-8", "replace")
        h.update(len(b).to_bytes(8, "little") + b)
    if inp.image is not None:  # image rewards depend on the pixels too
        h.update(str(getattr(inp.image, "shape", "")).encode())
        h.update(memoryview(inp.image.tobytes()))
    return h.hexdigest()


class ResultCache:
    """LRU of final results. Only deterministic outcomes (ok, unparsable) are kept: a timeout or an
    error can be transient (a loaded machine, a restarted actor) and deserves another try."""

    def __init__(self, max_items: int = 100_000):
        self.max_items = max_items
        self._d: OrderedDict[str, RewardResult] = OrderedDict()

    def get(self, key: str) -> RewardResult | None:
        r = self._d.get(key)
        if r is not None:
            self._d.move_to_end(key)
        return r

    def put(self, key: str, r: RewardResult) -> None:
        if r.status in ("ok", "unparsable") and self.max_items > 0:
            self._d[key] = r
            self._d.move_to_end(key)
            while len(self._d) > self.max_items:
                self._d.popitem(last=False)


class Stats:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATUSES, 0))
        self.seconds: dict[str, float] = defaultdict(float)
        self.cache_hits: dict[str, int] = defaultdict(int)
        self.retries = 0
        self.batches = 0

    def add(self, name: str, r: RewardResult) -> None:
        self.counts[name][r.status] += 1

    def to_dict(self) -> dict:
        return {
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "seconds": dict(self.seconds),
            "cache_hits": dict(self.cache_hits),
            "retries": self.retries,
            "batches": self.batches,
        }


def combine(specs: list[RewardSpec], batch: list[RewardInput],
            results: dict[str, list[RewardResult | None]]) -> list[ScoredSample]:
    out = []
    for i, inp in enumerate(batch):
        comps: dict[str, RewardResult] = {}
        total = 0.0
        for spec in specs:
            if not spec.applies_to(inp.task):
                continue
            r = results.get(spec.name, [None] * len(batch))[i] or RewardResult(0.0, "error", "not scored")
            comps[spec.name] = r
            if r.status == "ok":
                total += spec.weight * r.value
        out.append(ScoredSample(comps, total))
    return out

def score_model_reward(model, load_error: str | None, items: list[RewardInput]) -> list[RewardResult]:
    """A model reward's batch, with a failed load or a raising call turned into per-sample errors."""
    if load_error is not None:
        return [RewardResult(0.0, "error", load_error)] * len(items)
    try:
        return model.score_batch(items)
    except Exception as exc:
        return [RewardResult(0.0, "error", f"{type(exc).__name__}: {str(exc)[:300]}")] * len(items)


Pending = dict[tuple[str, int], str]  # (reward name, sample index) -> cache key, still to be scored


def start_batch(specs: list[RewardSpec], batch: list[RewardInput], cache: ResultCache, stats: Stats
                ) -> tuple[dict[str, list[RewardResult | None]], Pending]:
    """Fill in cached results; return them with the (reward, sample) pairs that still need scoring.
    Shared by the in-process scorer and the Ray reward pool so both cache and count the same way."""
    stats.batches += 1
    results: dict[str, list[RewardResult | None]] = {s.name: [None] * len(batch) for s in specs}
    pending: Pending = {}
    for spec in specs:
        for i, x in enumerate(batch):
            if not spec.applies_to(x.task):
                continue
            k = cache_key(spec, x)
            hit = cache.get(k)
            if hit is not None:
                results[spec.name][i] = hit
                stats.cache_hits[spec.name] += 1
            else:
                pending[(spec.name, i)] = k
    return results, pending


def add_seconds(stats: Stats, scored: list[tuple[str, int]], seconds: float) -> None:
    """Wall time shared by several rewards, split by each one's share of the calls."""
    for name in {n for n, _ in scored}:
        stats.seconds[name] += seconds * sum(1 for n, _ in scored if n == name) / len(scored)


def finish_batch(specs: list[RewardSpec], batch: list[RewardInput], results: dict[str, list[RewardResult | None]],
                 pending: Pending, cache: ResultCache, stats: Stats) -> list[ScoredSample]:
    """Bound the new results (non-finite or absurd values are `invalid`), cache them, count every status,
    and add up the weighted totals."""
    by_name = {s.name: s for s in specs}
    for (name, i), k in pending.items():
        r = results[name][i]
        if r is not None:
            results[name][i] = r = by_name[name].bound(r)
        cache.put(k, r)
    for spec in specs:
        for r in results[spec.name]:
            if r is not None:
                stats.add(spec.name, r)
    return combine(specs, batch, results)




class LocalScorer:
    """Scores in this process: rule rewards through a SandboxPool, model rewards called directly.
    Used by the CLI (no Ray needed); the Ray pool runs the same two halves in separate actors."""

    def __init__(self, specs: list[RewardSpec], num_procs: int = 1, model_init: dict | None = None,
                 cache: bool = True):
        self.specs = specs
        self.kinds = probe_kinds(specs)  # a plugin that cannot be imported: RewardImportError, now
        self.sandbox = SandboxPool(num_procs) if any(k == "rule" for k in self.kinds.values()) else None
        self.models: dict[str, object] = {}
        self.model_errors: dict[str, str] = {}
        for s in specs:
            if self.kinds[s.name] == "model":
                try:
                    self.models[s.name] = load_reward(s, extra_init=model_init)
                except Exception as exc:
                    self.model_errors[s.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.cache = ResultCache() if cache else ResultCache(0)
        self.stats = Stats()

    def score(self, batch: list[RewardInput]) -> list[ScoredSample]:
        results, pending = start_batch(self.specs, batch, self.cache, self.stats)
        rule = [(name, i) for name, i in pending if self.kinds[name] == "rule"]
        for spec in self.specs:
            todo = [i for name, i in pending if name == spec.name and self.kinds[name] == "model"]
            if todo:
                t0 = time.monotonic()
                for i, r in zip(todo, self._model_call(spec, [batch[i] for i in todo])):
                    results[spec.name][i] = r
                self.stats.seconds[spec.name] += time.monotonic() - t0
        if rule:
            by_name = {s.name: s for s in self.specs}
            t0 = time.monotonic()
            calls = [Call(by_name[n].to_dict(), batch[i], by_name[n].timeout_s) for n, i in rule]
            for (name, i), r in zip(rule, self.sandbox.run(calls)):
                results[name][i] = r
            add_seconds(self.stats, rule, time.monotonic() - t0)
        return finish_batch(self.specs, batch, results, pending, self.cache, self.stats)

    def _model_call(self, spec: RewardSpec, items: list[RewardInput]) -> list[RewardResult]:
        return score_model_reward(self.models.get(spec.name), self.model_errors.get(spec.name), items)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
