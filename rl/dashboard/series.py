"""metrics.jsonl, read incrementally: each refresh parses only the bytes appended since the last one.

A run appends one JSON line per step. A resumed run truncates the file to its checkpoint and appends
again; a half-written last line is left for the next refresh; a line that is not a JSON object is
reported (with its line number) and skipped, never fatal.

Series are served downsampled to at most `max_points` buckets (mean per bucket; the bucket's step is
its last step), so the cost of an overview request does not grow with the length of the run.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import threading
from pathlib import Path

import numpy as np

MAX_POINTS = 500  # points per series sent to a chart (~450 px wide)
_TAIL = 64  # bytes before the read offset remembered to notice a rewrite of the file


def _scalar(v):
    """Numbers stay numbers; a list of numbers (one per inner iteration) becomes its mean."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return float(sum(v) / len(v))
    return None


class MetricsReader:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._reset()
        self.epoch = 0  # bumped whenever the file was rewritten: clients then reload everything

    def _reset(self) -> None:
        self._offset = 0
        self._ino = None
        self._tail = b""
        self._lineno = 0
        self.steps: list[int] = []
        self.columns: dict[str, list[float]] = {}
        self.problems: list[str] = []

    def refresh(self) -> None:
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.steps or self.problems:
                self._reset()
                self.epoch += 1
            return
        with open(self.path, "rb") as fh:
            rewritten = st.st_ino != self._ino or st.st_size < self._offset
            if not rewritten and self._offset:
                fh.seek(self._offset - len(self._tail))
                rewritten = fh.read(len(self._tail)) != self._tail
            if rewritten and self._ino is not None:
                self._reset()
                self.epoch += 1
            self._ino = st.st_ino
            if st.st_size == self._offset:
                return
            fh.seek(self._offset)
            data = fh.read(st.st_size - self._offset)
        end = data.rfind(b"\n")
        if end < 0:
            return  # a line still being written
        chunk = data[: end + 1]
        self._offset += end + 1
        self._tail = chunk[-_TAIL:] if len(chunk) >= _TAIL else (self._tail + chunk)[-_TAIL:]
        for raw in chunk.splitlines():
            self._lineno += 1
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._problem(f"metrics.jsonl line {self._lineno}: not valid JSON, skipped")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                self._problem(f"metrics.jsonl line {self._lineno}: no integer 'step', skipped")
                continue
            self._append(row)

    def _problem(self, msg: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(msg)

    def _append(self, row: dict) -> None:
        n = len(self.steps)
        step = row["step"]
        if n and step <= self.steps[-1]:  # a step logged again: the later line wins
            i = self.steps.index(step) if step in self.steps else None
            if i is not None:
                for col in self.columns.values():
                    col[i] = math.nan
                for key, v in row.items():
                    if key != "step" and (x := _scalar(v)) is not None:
                        self.columns.setdefault(key, [math.nan] * n)[i] = x
                return
        self.steps.append(step)
        for key, v in row.items():
            if key == "step":
                continue
            x = _scalar(v)
            if x is None:
                continue
            col = self.columns.get(key)
            if col is None:
                col = self.columns[key] = [math.nan] * n  # a metric that appears later (schema growth)
            col.append(x)
        for col in self.columns.values():
            if len(col) < n + 1:
                col.append(math.nan)

    # ------------------------------------------------------------------ queries
    def snapshot(self, keys: list[str] | None = None, since: int = 0, epoch: int | None = None,
                 max_points: int = MAX_POINTS) -> dict:
        """Series for `keys` (all when None). With the client's epoch and row count, and a run short
        enough not to be downsampled, only the rows after `since` are sent (append=True)."""
        with self._lock:
            n = len(self.steps)
            names = sorted(self.columns) if keys is None else [k for k in keys if k in self.columns]
            append = epoch == self.epoch and 0 < since <= n and n <= max_points
            lo = since if append else 0
            arrays = self._arrays()  # converted once per new step, not per request
            steps = arrays["step"][lo:]
            cols = {k: arrays[k][lo:] for k in names}
            wall = arrays["wall"][lo:]
            problems = list(self.problems)
        downsampled = len(steps) > max_points
        if downsampled:
            edges = np.linspace(0, len(steps), max_points + 1).astype(int)
            steps = steps[edges[1:] - 1]
            wall = wall[edges[1:] - 1]
            if cols:  # every series at once: one reduceat over a (series x steps) matrix
                means = _bucket_mean(np.stack(list(cols.values())), edges)
                cols = dict(zip(cols, means))
        return {
            "epoch": self.epoch,
            "count": n,
            "append": append,
            "downsampled": downsampled,
            "step": _json_list(steps),
            "wall": _json_list(wall),
            "series": {k: _json_list(v) for k, v in cols.items()},
            "keys": sorted(self.columns),
            "problems": problems,
        }

    def window(self, prefixes: tuple[str, ...], step: int | None = None, count: int = 8) -> dict:
        """The raw rows (never bucketed) of the `count` steps up to `step` (default: the last one), for the
        series whose names start with one of `prefixes`: e.g. the timeline's span/* and time/*."""
        with self._lock:
            hi = len(self.steps) if step is None else bisect.bisect_right(self.steps, step)
            lo = max(0, hi - max(1, count))
            names = sorted(k for k in self.columns if k.startswith(prefixes))
            return {"step": self.steps[lo:hi],
                    "series": {k: [None if math.isnan(x) else x for x in self.columns[k][lo:hi]] for k in names}}

    def _arrays(self) -> dict[str, np.ndarray]:
        key = (self.epoch, len(self.steps))
        cached = getattr(self, "_array_cache", None)
        if cached is None or cached[0] != key:
            arrays = {k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items()}
            arrays["step"] = np.asarray(self.steps, dtype=np.float64)
            arrays["wall"] = self._wall_time(0)
            self._array_cache = cached = (key, arrays)
        return cached[1]

    def _wall_time(self, lo: int) -> np.ndarray:
        """Seconds since the first step: the logged wall clock (time/unix) when present, otherwise the
        running sum of step times."""
        unix = self.columns.get("time/unix")
        if unix is not None and not math.isnan(unix[0]):
            t = np.asarray(unix, dtype=np.float64)
            t = t - t[0]
        else:
            dt = np.nan_to_num(np.asarray(self.columns.get("time/step_s", [0.0] * len(self.steps)), dtype=np.float64))
            t = np.cumsum(dt)
        return t[lo:]

    def last(self) -> dict:
        with self._lock:
            if not self.steps:
                return {}
            return {"step": self.steps[-1], **{k: v[-1] for k, v in self.columns.items() if not math.isnan(v[-1])}}


def _bucket_mean(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of each bucket [edges[i], edges[i+1]) along the last axis, ignoring NaN (NaN if all are)."""
    ok = ~np.isnan(v)
    sums = np.add.reduceat(np.where(ok, v, 0.0), edges[:-1], axis=-1)
    counts = np.add.reduceat(ok.astype(np.float64), edges[:-1], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _json_list(a: np.ndarray) -> list:
    """NaN/inf are not JSON: they travel as null."""
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()
