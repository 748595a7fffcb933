"""Histograms over the rollout index (reward, a reward component, advantage, response length, NFE,
generation time) for the rollouts a filter keeps (a step or step range, a task, a version, ...); every
bin carries the rollouts-page filter that lists exactly its rows.

Float fields: n bins between the smallest and largest value v,

    [e_0, e_1), [e_1, e_2), ..., [e_{n-1}, e_n]      e_0 = min v, e_n = max v (the last bin closed)

with every edge rounded to a float32 number, the type of the index's columns, so a comparison of a
value with an edge is exact whichever side is converted; the bin's filter is NAME_min=e_i&NAME_lt=e_{i+1}
(the last: NAME_max=e_n), the very comparisons that counted it. Integer fields (length, tokens, nfe):
bins [lo, lo + w) of integer width w = ceil((max - min + 1) / n). Rows without a value (NaN, or -1 for
an unknown NFE) are in no bin, and counted as `missing`.

`by` (version, worker or task) splits every bin by that column's value (at most MAX_SERIES values, the
most frequent; more is refused), each piece with its own filter, for stacked bars.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc

from rl.dashboard.rollouts import RANGES, QueryError, RolloutIndex, range_column

BINS = 20
MAX_BINS = 200
INTEGER = ("length", "tokens", "nfe")
BY = ("version", "worker", "task")
MAX_SERIES = 12


def float_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    if lo == hi:
        return np.array([lo, hi])
    edges = np.linspace(lo, hi, bins + 1).astype(np.float32).astype(np.float64)
    edges[0], edges[-1] = lo, hi
    return np.unique(edges)


def integer_edges(lo: int, hi: int, bins: int) -> np.ndarray:
    width = max(1, math.ceil((hi - lo + 1) / bins))
    return lo + width * np.arange(math.ceil((hi - lo + 1) / width) + 1)


def bin_of(values: np.ndarray, edges: np.ndarray, integer: bool) -> np.ndarray:
    if integer:
        return ((values - edges[0]) // (edges[1] - edges[0])).astype(np.int64)
    return np.minimum(np.searchsorted(edges, values, side="right") - 1, len(edges) - 2)


def bin_params(field: str, edges: np.ndarray, i: int, integer: bool) -> dict[str, str]:
    """The rollouts filter of bin i: exactly the rows bin_of puts there."""
    fmt = (lambda e: str(int(e))) if integer else (lambda e: repr(float(e)))
    last = i == len(edges) - 2 and not integer
    return {f"{field}_min": fmt(edges[i]), f"{field}_max" if last else f"{field}_lt": fmt(edges[i + 1])}


def histogram(index: RolloutIndex, f: dict, field: str, bins: int = BINS, by: str | None = None) -> dict:
    if field not in RANGES:
        raise QueryError(f"field={field!r}: expected one of {', '.join(RANGES)}")
    if by not in (None, "", *BY):
        raise QueryError(f"by={by!r}: expected one of {', '.join(BY)}")
    bins = max(1, min(int(bins), MAX_BINS))
    t = index.matching(f)
    integer = field in INTEGER
    out = {"field": field, "component": f.get("component") if field == "value" else None, "total": len(t),
           "missing": 0, "bins": [], "by": by or None, "series": []}
    if not len(t):
        return out
    raw = range_column(t, field, f.get("component"))
    values = raw.to_numpy(zero_copy_only=False).astype(np.float64)
    valid = values >= 0 if field == "nfe" else np.isfinite(values)
    out["missing"] = int((~valid).sum())
    values = values[valid]
    if not len(values):
        return out
    lo, hi = values.min(), values.max()
    edges = integer_edges(int(lo), int(hi), bins) if integer else float_edges(float(lo), float(hi), bins)
    which = bin_of(values, edges, integer)
    counts = np.bincount(which, minlength=len(edges) - 1)
    extra = {"component": f["component"]} if field == "value" else {}
    out["bins"] = [{"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": int(counts[i]),
                    "params": {**extra, **bin_params(field, edges, i, integer)}} for i in range(len(edges) - 1)]
    if by:
        keys = t.column(by).filter(valid)
        labels, codes = np.unique(np.asarray(keys.to_pylist(), dtype=object).astype(str), return_inverse=True)
        nulls = pc.is_null(keys).to_numpy(zero_copy_only=False)
        if len(labels) > MAX_SERIES:
            raise QueryError(f"by={by}: {len(labels)} values in these rollouts; at most {MAX_SERIES} can be "
                             "stacked (narrow the step range)")
        for k, label in enumerate(labels):
            hit = (codes == k) & ~nulls
            if hit.any():
                out["series"].append({"key": label, "params": {by: label},
                                      "counts": np.bincount(which[hit], minlength=len(edges) - 1).tolist()})
    return out
