"""The rollout store seen by the dashboard: a small in-memory index plus targeted Parquet reads.

The store is one directory per step (rollouts/step=N/*.parquet, see rl/store.py). Refreshing lists the
directories and reads only partitions that are new or changed (by size and mtime), and from them only
the few scalar columns the index keeps (step, group, reward, statuses, ...): about 40 bytes a rollout,
40 MB at a million. Filters, sorting and paging run on that index with pyarrow.compute; the page's
text, a group, or one trajectory is then read from the one or few files that hold it (projection
pushdown: only the columns asked for). So a request costs the same at 100k or 1M stored rollouts,
except a text search, which scans partitions newest-first under a time budget and says how far it got.

Every column is optional (older runs, other task kinds, a typed record with more fields): missing ones
read as null. A partition that cannot be read (truncated, half-written, not Parquet) is reported by
name and left out; it never takes a request down.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from rl.dashboard import flags
from rl.dashboard.index_cache import IndexCache

STATUSES = ("ok", "timeout", "error", "unparsable")
STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
BAD_BIT = {"timeout": 1, "error": 2, "unparsable": 4}
TEXT_PREVIEW = 240        # characters of prompt / response shown in a table row
TEXT_FULL = 20_000        # characters of one response shown in the group view (model output is unbounded)
TOKENS_SHOWN = 4096       # tokens of one response in the group view's token diff
SEARCH_BUDGET_S = 0.2     # a text search stops scanning older partitions after this long
PAGE_MAX = 200
# range filters: NAME_min (>=), NAME_lt (<), NAME_max (<=) on the index column of that name; "value" is the
# value of the reward component named by the `component` filter. A histogram bin is [lo, hi), the last [lo, hi].
RANGES = ("reward", "advantage", "length", "tokens", "nfe", "gen_s", "value")
RANGE_OPS = {"min": pc.greater_equal, "lt": pc.less, "max": pc.less_equal}
SORTS = ("reward", "advantage", "tokens", "length", "nfe", "gen_s", "version", "group")
INDEX_BATCH = 16      # partitions indexed in parallel between two checks of the refresh budget
_READERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dashboard-read")


class QueryError(ValueError):
    """A request the data cannot answer (unknown step, corrupt partition, bad filter): shown as a message."""


@dataclass
class Partition:
    path: Path
    key: tuple[int, int]
    step: int
    index: pa.Table | None = None
    problem: str | None = None
    stats: dict = field(default_factory=dict)


def _read(path: Path, wanted: list[str]) -> pa.Table:
    """Only the columns of `wanted` that this file has (projection pushdown)."""
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    return pf.read(columns=[c for c in wanted if c in names])


def _col(t: pa.Table, name: str, default=None):
    return t.column(name) if name in t.column_names else default


def _components(cell) -> dict:
    """reward_components is stored as JSON text ({name: {value, status, detail}}); tolerate anything."""
    if cell is None:
        return {}
    if isinstance(cell, dict):
        return cell
    try:
        parsed = json.loads(cell)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _component_statuses(cells, n: int) -> dict[str, tuple[pa.Array, pa.Array]]:
    """{component: (status string array, value float array)} from the reward_components JSON column,
    parsed by pyarrow's JSON reader in one go (a Python json.loads per row was half of the indexing time)."""
    if cells is None:
        return {}
    text = pc.fill_null(pc.cast(cells, pa.string()), "{}").to_pylist()
    try:
        parsed = pa_json.read_json(io.BytesIO("\n".join(x.replace("\n", " ") for x in text).encode()),
                                   read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 26))
        if parsed.num_rows != n:
            raise ValueError("row count")
        out = {}
        for name in parsed.column_names:
            col = parsed.column(name)
            fields = [f.name for f in col.type] if pa.types.is_struct(col.type) else []
            if "status" in fields:
                value = pc.struct_field(col, "value") if "value" in fields else pa.nulls(n, pa.float64())
                out[name] = (pc.cast(pc.struct_field(col, "status"), pa.string()), pc.cast(value, pa.float64()))
        return out
    except (pa.ArrowInvalid, ValueError, TypeError, pa.ArrowNotImplementedError):
        comps = [_components(c) for c in text]  # mixed shapes: the slow, forgiving way
        names = sorted({k for c in comps for k in c if isinstance(c[k], dict)})
        cell = [[c[k] if isinstance(c.get(k), dict) else {} for c in comps] for k in names]
        return {k: (pa.array([d.get("status") for d in ds], pa.string()),
                    pa.array([_num(d.get("value")) if isinstance(d.get("value"), (int, float)) else None for d in ds],
                             pa.float64()))
                for k, ds in zip(names, cell)}


def _index_partition(path: Path, step: int) -> tuple[pa.Table, dict]:
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    n = pf.metadata.num_rows
    cols = ["step", "group", "group_index", "task", "reward", "advantage", "policy_version", "prompt_id",
            "reward_components", "response_ids", "image_codes", "num_forwards", "worker"]
    t = pf.read(columns=[c for c in cols if c in names])
    if "image_png" in names:
        # the images themselves are not read: null counts from the footer say which row groups hold any
        has_image = np.zeros(n, dtype=bool)
        idx = pf.schema_arrow.names.index("image_png")
        start = 0
        for g in range(pf.metadata.num_row_groups):
            rg = pf.metadata.row_group(g)
            st = rg.column(idx).statistics
            if st is None or not st.has_null_count or st.null_count < rg.num_rows:
                has_image[start : start + rg.num_rows] = pc.is_valid(
                    pf.read_row_group(g, columns=["image_png"]).column(0)).to_numpy(zero_copy_only=False)
            start += rg.num_rows
    elif "image_codes" in names:
        has_image = pc.is_valid(t.column("image_codes")).to_numpy(zero_copy_only=False)
    else:
        has_image = np.zeros(n, dtype=bool)

    def ints(name, default):
        c = _col(t, name)
        if c is None:
            return np.full(n, default, dtype=np.int32)
        return pc.fill_null(pc.cast(c, pa.int64(), safe=False), default).to_numpy().astype(np.int32)

    def floats(name):
        c = _col(t, name)
        if c is None:
            return np.full(n, np.nan, dtype=np.float32)
        return pc.cast(c, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float32)

    steps = ints("step", step)
    tokens = (pc.fill_null(pc.list_value_length(t.column("response_ids")), 0).to_numpy().astype(np.int32)
              if "response_ids" in names else np.zeros(n, dtype=np.int32))
    statuses = _component_statuses(_col(t, "reward_components"), n)
    bad = np.zeros(n, dtype=np.int8)
    status_cols = {}
    for name, (st, value) in sorted(statuses.items()):
        status_cols["v:" + name] = value.to_numpy(zero_copy_only=False).astype(np.float32)  # null -> NaN
        codes = np.full(n, -1, dtype=np.int8)
        for label, code in STATUS_CODE.items():
            hit = pc.fill_null(pc.equal(st, label), False).to_numpy(zero_copy_only=False)
            codes[hit] = code
            bad[hit] |= BAD_BIT.get(label, 0)
        status_cols["s:" + name] = codes
    task = _col(t, "task")
    task = pc.cast(task, pa.string()) if task is not None else pa.nulls(n, pa.string())
    prompt_id = _col(t, "prompt_id")
    prompt_id = pc.cast(prompt_id, pa.string()) if prompt_id is not None else pa.nulls(n, pa.string())
    version = ints("policy_version", -1)
    worker = _col(t, "worker")
    worker = pc.cast(worker, pa.string()) if worker is not None else pa.nulls(n, pa.string())
    group = ints("group", -1)
    gi = ints("group_index", 0) if "group_index" in names else np.arange(n, dtype=np.int32)
    flag = flags.index_columns(path, group, gi)  # flags, length, last_unmask, gen_s (rl/dashboard/flags.py)
    flag["length"] = np.where(flag["length"] >= 0, flag["length"], tokens)  # all ids where no flag file says
    index = pa.table({
        "step": steps,
        "group": group,
        "gi": gi,
        "row": np.arange(n, dtype=np.int32),
        "task": task,
        "prompt_id": prompt_id,
        "reward": floats("reward"),
        "advantage": floats("advantage"),
        "version": version,
        "tokens": tokens,
        "image": has_image,
        "bad": bad,
        "worker": worker,
        "nfe": ints("num_forwards", -1),
        **flag,
        **status_cols,
    })
    bits, known = flag["flags"], flag["flags"] >= 0
    stats = {
        "step": int(step), "rollouts": n, "tokens": int(tokens.sum()),
        "version_min": int(version.min()) if n else -1, "version_max": int(version.max()) if n else -1,
        # the overview's flagged-share chart: rollouts with flags known, flagged, and flagged for each reason
        "flags_known": int(known.sum()), "flagged": int((bits > 0).sum()),
        **{f"flag_{name}": int(((bits & bit) > 0).sum()) for name, bit in flags.REASONS.items()},
    }
    return index, stats


@dataclass
class Snapshot:
    """The index and the partitions it points into, swapped as one object so a request never sees a
    table whose `file` column points into another list. Partitions are in step order and partition f
    holds table rows starts[f]:starts[f+1], so a step range or one step is a slice, not a scan."""

    table: pa.Table
    files: list[Partition]
    starts: np.ndarray
    steps: np.ndarray

    def rows(self, step_min: int | None = None, step_max: int | None = None) -> pa.Table:
        a = 0 if step_min is None else int(np.searchsorted(self.steps, step_min, "left"))
        b = len(self.files) if step_max is None else int(np.searchsorted(self.steps, step_max, "right"))
        if b <= a:
            return self.table.slice(0, 0)
        return self.table.slice(int(self.starts[a]), int(self.starts[b] - self.starts[a]))


EMPTY = Snapshot(pa.table({}), [], np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _indexed(item: tuple[int, Path, tuple[int, int]]) -> Partition:
    step, path, key = item
    part = Partition(path=path, key=key, step=step)
    try:
        part.index, part.stats = _index_partition(path, step)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, never fatal
        part.problem = f"{path.parent.name}/{path.name}: unreadable ({_describe(exc)})"
    return part


class RolloutIndex:
    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir) / "rollouts"
        self._lock = threading.Lock()
        self._parts: dict[Path, Partition] = {}
        self.snap = EMPTY
        self._summary: tuple[int, dict] | None = None
        self.version = 0
        self.pending = 0  # partitions seen but not yet indexed (first scan of a large store)
        self.cache = IndexCache(run_dir, self.root)  # the index kept on disk, outside the run (index_cache.py)
        self._cache_read = False

    # ------------------------------------------------------------------ refresh
    def _scan(self) -> dict[Path, tuple[int, tuple[int, int]]]:
        found = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return found
        for d in entries:
            if not d.name.startswith("step="):
                continue
            try:
                step = int(d.name.split("=", 1)[1])
                files = list(os.scandir(d.path))
            except (ValueError, OSError):
                continue
            for f in files:
                if f.name.endswith(".parquet"):
                    try:
                        st = f.stat()
                    except OSError:
                        continue  # removed between listing and stat (a resume truncating)
                    found[Path(f.path)] = (step, (st.st_size, st.st_mtime_ns))
        return found

    def refresh(self, budget_s: float | None = None) -> bool:
        """Index new or changed partitions; returns True when the index changed. With a budget, stops
        after that long and leaves the rest for the next call (the first scan of a large store).
        The first call starts from the on-disk cache: only partitions it lacks, or whose size or mtime
        changed, are read. Partitions are read INDEX_BATCH at a time in parallel (pyarrow releases the
        GIL while it reads, decompresses and parses the reward JSON)."""
        with self._lock:
            if not self._cache_read:
                self._cache_read = True
                for path, (key, step, stats, table) in self.cache.load().items():
                    self._parts[path] = Partition(path=path, key=key, step=step, index=table, stats=stats)
            found = self._scan()
            changed = bool(self._parts) and self.version == 0  # the cache's partitions, not yet served
            for path in [p for p in self._parts if p not in found]:
                del self._parts[path]
                changed = True
            todo = [(step, p, key) for p, (step, key) in found.items()
                    if p not in self._parts or self._parts[p].key != key]
            todo.sort(key=lambda x: x[0])
            t0 = time.perf_counter()
            done = 0
            while done < len(todo):
                batch = todo[done : done + INDEX_BATCH]
                for part in _READERS.map(_indexed, batch):
                    self._parts[part.path] = part
                changed = True
                done += len(batch)
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    break
            self.pending = len(todo) - done
            if changed:
                self._rebuild()
            if not self.pending:
                self.cache.maybe_save(self.snap)
            return changed

    def _rebuild(self) -> None:
        files = sorted((p for p in self._parts.values() if p.index is not None), key=lambda p: (p.step, str(p.path)))
        tables = [p.index for p in files]
        if not tables:
            self.snap = EMPTY
        else:
            table = pa.concat_tables(tables, promote_options="default")
            lengths = np.array([len(t) for t in tables])
            file_ids = np.repeat(np.arange(len(tables), dtype=np.int32), lengths)
            table = table.append_column("file", pa.array(file_ids)).combine_chunks()
            self.snap = Snapshot(table, files, np.concatenate([[0], np.cumsum(lengths)]),
                                 np.array([p.step for p in files], dtype=np.int64))
        self.version += 1

    # ------------------------------------------------------------------ status
    def problems(self) -> list[str]:
        return sorted(p.problem for p in self._parts.values() if p.problem)

    def summary(self) -> dict:
        """Counts for every page's header (polled): computed once per index version."""
        version, snap = self.version, self.snap
        if self._summary is None or self._summary[0] != version:
            self._summary = (version, self._summarise(snap))
        return {**self._summary[1], "pending": self.pending, "problems": self.problems()}

    def _summarise(self, snap: Snapshot) -> dict:
        t, files = snap.table, snap.files
        steps = [p.step for p in files]
        comps = [c[2:] for c in t.column_names if c.startswith("s:")]
        tasks = sorted(x for x in pc.unique(t.column("task")).to_pylist() if x) if len(t) else []
        workers = sorted(x for x in pc.unique(t.column("worker")).to_pylist() if x) if len(t) else []
        return {
            "rollouts": len(t), "partitions": len(files),
            "first_step": min(steps) if steps else None, "last_step": max(steps) if steps else None,
            "components": comps, "tasks": tasks, "workers": workers,
            "flags_known": sum(p.stats.get("flags_known", 0) for p in files),
            "images": int(pc.sum(t.column("image")).as_py() or 0) if len(t) else 0,
            "failures": int(pc.sum(pc.not_equal(t.column("bad"), 0)).as_py() or 0) if len(t) else 0,
        }

    def step_stats(self, max_points: int) -> list[dict]:
        """Per-step rollouts, tokens and policy versions (at most max_points steps, evenly spaced)."""
        files = self.snap.files
        if len(files) > max_points:
            files = [files[i] for i in np.linspace(0, len(files) - 1, max_points).astype(int)]
        return [p.stats for p in files]

    # ------------------------------------------------------------------ filters
    def _mask(self, t: pa.Table, f: dict):
        conds = []
        if f.get("step_min") is not None:
            conds.append(pc.greater_equal(t.column("step"), int(f["step_min"])))
        if f.get("step_max") is not None:
            conds.append(pc.less_equal(t.column("step"), int(f["step_max"])))
        if f.get("task"):
            conds.append(pc.equal(t.column("task"), str(f["task"])))
        for name in RANGES:
            for op, compare in RANGE_OPS.items():
                if f.get(f"{name}_{op}") is not None:
                    conds.append(compare(range_column(t, name, f.get("component")), float(f[f"{name}_{op}"])))
        if f.get("worker"):
            conds.append(pc.equal(t.column("worker"), str(f["worker"])))
        if f.get("flag"):
            conds.append(flag_mask(t.column("flags"), str(f["flag"])))
        if f.get("prompt_id"):
            conds.append(pc.equal(t.column("prompt_id"), str(f["prompt_id"])))
        if f.get("version") is not None:  # the policy_version the rollout was sampled with
            conds.append(pc.equal(t.column("version"), int(f["version"])))
        if f.get("image"):
            conds.append(t.column("image"))
        status = f.get("status")
        if status:
            comp, _, st = status.rpartition(":")
            if st == "failed":
                col = t.column("bad") if comp in ("", "any") else t.column(f"s:{comp}") if f"s:{comp}" in t.column_names else None
                if col is None:
                    raise QueryError(f"status filter {status!r}: no reward component {comp!r} in this run")
                conds.append(pc.greater(col, 0) if comp in ("", "any") else pc.greater(pc.fill_null(col, -1), 0))
            elif st in STATUS_CODE:
                if comp in ("", "any"):
                    if st == "ok":
                        conds.append(pc.equal(t.column("bad"), 0))
                    else:
                        conds.append(pc.not_equal(pc.bit_wise_and(t.column("bad"), BAD_BIT[st]), 0))
                elif f"s:{comp}" in t.column_names:
                    conds.append(pc.equal(pc.fill_null(t.column(f"s:{comp}"), -1), STATUS_CODE[st]))
                else:
                    raise QueryError(f"status filter {status!r}: no reward component {comp!r} in this run")
            else:
                raise QueryError(f"status filter {status!r}: expected COMPONENT:STATUS with STATUS one of "
                                 f"{', '.join(STATUSES)} or failed")
        if not conds:
            return None
        mask = conds[0]
        for c in conds[1:]:
            mask = pc.and_(mask, c)
        return pc.fill_null(mask, False)

    def _filtered(self, f: dict, snap: Snapshot | None = None) -> tuple[pa.Table, list[Partition]]:
        snap = snap or self.snap
        t = snap.rows(f.get("step_min"), f.get("step_max"))  # the step window is a slice
        if not len(t):
            return t, snap.files
        mask = self._mask(t, {**f, "step_min": None, "step_max": None})
        return (t if mask is None else t.filter(mask)), snap.files

    def matching(self, f: dict) -> pa.Table:
        """The index rows the filters keep (histograms.py counts them)."""
        return self._filtered(f)[0]

    # ------------------------------------------------------------------ reads
    def _fetch(self, files: list[Partition], refs: list[tuple[int, int]], wanted: list[str]) -> list[dict]:
        """Rows (file id, row) -> dicts of `wanted` columns, reading each file once (files in parallel:
        pyarrow releases the GIL while it reads and decompresses)."""
        by_file: dict[int, list[int]] = {}
        for fid, row in refs:
            by_file.setdefault(fid, []).append(row)

        def read(item):
            fid, rows = item
            part = files[fid]
            try:
                t = _read(part.path, wanted).take(pa.array(rows, pa.int64()))
            except FileNotFoundError:
                raise QueryError(f"step {part.step} was removed while reading (the run resumed or truncated); "
                                 "reload the page") from None
            except Exception as exc:  # noqa: BLE001
                raise QueryError(f"step={part.step}/{part.path.name}: unreadable ({_describe(exc)})") from None
            return [((fid, row), rec) for row, rec in zip(rows, t.to_pylist())]

        items = list(by_file.items())
        got: dict[tuple[int, int], dict] = {}
        results = _READERS.map(read, items) if len(items) > 2 else map(read, items)
        for pairs in results:
            got.update(pairs)
        return [got[r] for r in refs]

    def rollouts(self, f: dict, sort: str = "step", desc: bool = True, offset: int = 0, limit: int = 50) -> dict:
        limit = max(1, min(int(limit), PAGE_MAX))
        offset = max(0, int(offset))
        q = (f.get("q") or "").strip()
        if q:
            return self._search(f, q, limit)
        t, files = self._filtered(f)
        total = len(t)
        if total == 0:
            return {"total": 0, "rows": []}
        if sort in ("step", "", None):
            n = min(limit, max(0, total - offset))
            idx = (np.arange(total - 1 - offset, total - 1 - offset - n, -1) if desc
                   else np.arange(offset, offset + n))
            page = t.take(pa.array(idx, pa.int64())) if n else t.slice(0, 0)
        elif sort in SORTS:
            k = min(offset + limit, total)
            order = "descending" if desc else "ascending"
            top = pc.select_k_unstable(t, k=k, sort_keys=[(sort, order), ("step", "descending"), ("gi", "ascending")])
            page = t.take(top.slice(offset))
        else:
            raise QueryError(f"sort={sort!r}: expected step or one of {', '.join(SORTS)}")
        return {"total": total, "rows": self._page_rows(page, files)}

    def _page_rows(self, page: pa.Table, files: list[Partition]) -> list[dict]:
        refs = list(zip(page.column("file").to_pylist(), page.column("row").to_pylist()))
        texts = self._fetch(files, refs, ["question", "prompt", "response_text", "gold", "reward_components"])
        out = []
        for meta, text in zip(page.to_pylist(), texts):
            out.append(_row_view(meta, text))
        return out

    def _search(self, f: dict, q: str, limit: int) -> dict:
        """Text search in prompt / response / gold: newest partitions first, within SEARCH_BUDGET_S."""
        snap = self.snap
        before = f.get("before_step")
        hi = f.get("step_max")
        if before is not None:
            hi = int(before) - 1 if hi is None else min(int(hi), int(before) - 1)
        a = 0 if f.get("step_min") is None else int(np.searchsorted(snap.steps, f["step_min"], "left"))
        b = len(snap.files) if hi is None else int(np.searchsorted(snap.steps, hi, "right"))
        needle = q.lower()
        rest = {**f, "step_min": None, "step_max": None}
        t0 = time.perf_counter()
        matches: list[tuple[dict, dict]] = []
        scanned = None
        for fid in range(b - 1, a - 1, -1):  # newest partition first
            part = snap.files[fid]
            rows = snap.table.slice(int(snap.starts[fid]), int(snap.starts[fid + 1] - snap.starts[fid]))
            mask = self._mask(rows, rest)
            if mask is not None:
                rows = rows.filter(mask)
            if len(rows):
                try:
                    text = _read(part.path, ["question", "prompt", "response_text", "gold", "reward_components"])
                except Exception as exc:  # noqa: BLE001
                    raise QueryError(f"step={part.step}/{part.path.name}: unreadable ({_describe(exc)})") from None
                text = text.take(rows.column("row"))
                hit = None
                for c in ("question", "prompt", "response_text", "gold"):
                    if c in text.column_names:
                        m = pc.fill_null(pc.match_substring(pc.cast(text.column(c), pa.string()), needle,
                                                            ignore_case=True), False)
                        hit = m if hit is None else pc.or_(hit, m)
                if hit is not None:
                    matches += zip(rows.filter(hit).to_pylist(), text.filter(hit).to_pylist())
            scanned = part.step
            next_is_same_step = fid > a and snap.files[fid - 1].step == part.step
            if not next_is_same_step and (len(matches) >= limit or time.perf_counter() - t0 > SEARCH_BUDGET_S):
                break
        if b <= a:
            return {"total": 0, "rows": [], "search": {"complete": True, "scanned_down_to_step": None,
                                                       "next_before_step": None}}
        complete = scanned is None or scanned == int(snap.steps[a])
        return {
            "total": None,
            "rows": [_row_view(m, r) for m, r in matches[:limit]],
            "search": {"complete": complete, "scanned_down_to_step": scanned,
                       "next_before_step": None if complete else scanned},
        }

    def _locate(self, step: int, group: int, gi: int | None = None) -> tuple[pa.Table, list[Partition]]:
        snap = self.snap
        if not len(snap.table):
            raise QueryError("no rollouts stored yet")
        t, files = snap.rows(step, step), snap.files  # one step: a slice of its partition's rows
        conds = pc.and_(pc.equal(t.column("step"), int(step)), pc.equal(t.column("group"), int(group)))
        if gi is not None:
            conds = pc.and_(conds, pc.equal(t.column("gi"), int(gi)))
        sel = t.filter(conds)
        if not len(sel):
            what = f"step {step}, group {group}" + (f", response {gi}" if gi is not None else "")
            raise QueryError(f"no rollout at {what} (it may be in a partition that could not be read)")
        return sel, files

    def group(self, step: int, group: int) -> dict:
        sel, files = self._locate(step, group)
        refs = list(zip(sel.column("file").to_pylist(), sel.column("row").to_pylist()))
        recs = self._fetch(files, refs, ["prompt_id", "task", "question", "prompt", "gold", "response_text",
                                         "reward_components", "sampler", "response_ids"])
        metas = sel.to_pylist()
        # text responses: which tokens differ from the group's most common token at the same position
        ids = [[] if m["image"] else _unpadded(r.get("response_ids") or [])[:TOKENS_SHOWN] for m, r in zip(metas, recs)]
        differs = token_diff(ids)
        responses = []
        for meta, rec, row_ids, row_diff in zip(metas, recs, ids, differs):
            text = rec.get("response_text") or ""
            comps = _components(rec.get("reward_components"))
            responses.append({
                "gi": meta["gi"], "reward": _num(meta["reward"]), "advantage": _num(meta["advantage"]),
                "version": meta["version"], "tokens": meta["tokens"], "image": meta["image"], **_cost_view(meta),
                "response": text[:TEXT_FULL], "truncated": len(text) > TEXT_FULL,
                "extracted": _extracted(text),
                "components": {k: _component_view(v) for k, v in comps.items()},
                "ids": row_ids, "differs": row_diff,
            })
        responses.sort(key=lambda r: r["gi"])
        first = recs[0]
        rewards = [r["reward"] for r in responses if r["reward"] is not None]
        return {
            "step": step, "group": group, "prompt_id": first.get("prompt_id"), "task": first.get("task"),
            "prompt": _prompt(first), "gold": first.get("gold"),
            "reward_mean": float(np.mean(rewards)) if rewards else None,
            "reward_std": float(np.std(rewards)) if rewards else None,
            "best": max(rewards) if rewards else None, "worst": min(rewards) if rewards else None,
            "responses": responses,
        }

    def trajectory(self, step: int, group: int, gi: int) -> dict:
        sel, files = self._locate(step, group, gi)
        ref = (sel.column("file")[0].as_py(), sel.column("row")[0].as_py())
        rec = self._fetch(files, [ref], ["task", "question", "prompt", "response_ids", "response_text",
                                         "unmask_step", "confidence", "early_filled", "sampler", "image_codes",
                                         "num_forwards", "reward"])[0]
        meta = sel.to_pylist()[0]
        sampler = rec.get("sampler")
        try:
            sampler = json.loads(sampler) if isinstance(sampler, str) else (sampler or {})
        except ValueError:
            sampler = {}
        return {
            "step": step, "group": group, "gi": gi, "task": rec.get("task"), "prompt": _prompt(rec),
            "reward": _num(meta["reward"]), "image": meta["image"],
            "response_ids": rec.get("response_ids") or [], "response_text": (rec.get("response_text") or "")[:TEXT_FULL],
            "unmask_step": rec.get("unmask_step") or [],
            "confidence": [_num(c) for c in (rec.get("confidence") or [])],
            "early_filled": rec.get("early_filled") or [],
            "image_codes": rec.get("image_codes"),
            "sampler": sampler if isinstance(sampler, dict) else {},
            "num_forwards": rec.get("num_forwards"),
        }

    def image_png(self, step: int, group: int, gi: int) -> bytes:
        sel, files = self._locate(step, group, gi)
        ref = (sel.column("file")[0].as_py(), sel.column("row")[0].as_py())
        data = self._fetch(files, [ref], ["image_png"])[0].get("image_png")
        if not isinstance(data, bytes) or not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise QueryError(f"no image for step {step}, group {group}, response {gi}")
        return data

    def images(self, f: dict, offset: int = 0, limit: int = 48) -> dict:
        t, files = self._filtered({**f, "image": True})
        total, page = _newest_first(t, offset, limit)
        return {"total": total, "rows": self._page_rows(page, files) if len(page) else []}

    def failures(self, f: dict, offset: int = 0, limit: int = 50) -> dict:
        status = f.get("status") or "any:failed"
        t, files = self._filtered({**f, "status": status})
        total, page = _newest_first(t, offset, limit)
        if not len(page):
            return {"total": total, "rows": []}
        rows = self._page_rows(page, files)
        for r in rows:
            r["failed"] = {k: v for k, v in r["components"].items() if v["status"] != "ok"}
        return {"total": total, "rows": rows}

    def prompt_groups(self, prompt_id: str, limit: int = 100) -> list[dict]:
        """Every group of one prompt in this run (newest first): step, group, rewards of its G responses."""
        t = self.snap.table
        if not len(t) or not prompt_id:
            return []
        sel = t.filter(pc.fill_null(pc.equal(t.column("prompt_id"), prompt_id), False))
        sel = sel.select(["step", "group", "gi", "reward", "version"])
        groups: dict[tuple[int, int], dict] = {}
        for r in sel.to_pylist():
            g = groups.setdefault((r["step"], r["group"]), {"step": r["step"], "group": r["group"],
                                                             "version": r["version"], "rewards": []})
            g["rewards"].append(_num(r["reward"]))
        out = sorted(groups.values(), key=lambda g: (-g["step"], g["group"]))[:limit]
        for g in out:
            vals = [x for x in g["rewards"] if x is not None]
            g["mean"] = float(np.mean(vals)) if vals else None
        return out


# ---------------------------------------------------------------------- views
def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _prompt(rec: dict) -> str:
    return str(rec.get("question") or rec.get("prompt") or "")


def _component_view(v) -> dict:
    if not isinstance(v, dict):
        return {"value": _num(v) if isinstance(v, (int, float)) else None, "status": "ok", "detail": ""}
    return {"value": _num(v.get("value")) if isinstance(v.get("value"), (int, float)) else None,
            "status": str(v.get("status", "ok")), "detail": str(v.get("detail", ""))[:500]}


def _row_view(meta: dict, text: dict) -> dict:
    comps = _components(text.get("reward_components"))
    return {
        "step": meta["step"], "group": meta["group"], "gi": meta["gi"], "task": meta["task"],
        "reward": _num(meta["reward"]), "advantage": _num(meta["advantage"]), "version": meta["version"],
        "tokens": meta["tokens"], "image": meta["image"], "prompt_id": meta.get("prompt_id"), **_cost_view(meta),
        "prompt": _prompt(text)[:TEXT_PREVIEW],
        "response": (text.get("response_text") or "")[:TEXT_PREVIEW],
        "gold": str(text.get("gold") or "")[:TEXT_PREVIEW],
        "components": {k: _component_view(v) for k, v in comps.items()},
    }


def _unpadded(ids: list[int]) -> list[int]:
    """A response without its padding: trailing repeats of the last id (EOS) kept once."""
    end = len(ids)
    while end > 1 and ids[end - 2] == ids[-1]:
        end -= 1
    return ids[:end]


def token_diff(rows: list[list[int]]) -> list[list[bool]]:
    """Per response and position: whether its token differs from the most common token of the group's
    responses at that position (a tie goes to the smallest id; a shorter response, ended there, is not counted)."""
    out = [[False] * len(r) for r in rows]
    for pos in range(max((len(r) for r in rows), default=0)):
        present = [r[pos] for r in rows if pos < len(r)]
        counts = {}
        for tok in present:
            counts[tok] = counts.get(tok, 0) + 1
        mode = min(counts, key=lambda tok: (-counts[tok], tok))
        for i, r in enumerate(rows):
            if pos < len(r):
                out[i][pos] = r[pos] != mode
    return out


def _cost_view(meta: dict) -> dict:
    """Who sampled a rollout, what it cost, and why it is flagged (None: no flag file for its step)."""
    bits = meta["flags"]
    return {
        "worker": meta["worker"] or None, "length": meta["length"], "nfe": meta["nfe"] if meta["nfe"] >= 0 else None,
        "last_unmask": meta["last_unmask"] if meta["last_unmask"] >= 0 else None, "gen_s": _num(meta["gen_s"]),
        "flags": None if bits < 0 else [name for name, bit in flags.REASONS.items() if bits & bit],
    }


def range_column(t: pa.Table, name: str, component: str | None):
    """The index column a range filter or a histogram reads ("value": the component's v:NAME column)."""
    if name != "value":
        return t.column(name)
    if not component:
        raise QueryError("value_min / value_lt / value_max need component=NAME (a reward component)")
    if f"v:{component}" not in t.column_names:
        raise QueryError(f"component={component!r}: no reward component of that name in this run")
    return t.column(f"v:{component}")


def flag_mask(col, flag: str):
    """flag=any: flagged for some reason; none: flags known and none raised; a reason (repetition,
    nonprintable, odd_ids, cut): flagged for it. Rollouts without a flag file (flags -1) match none."""
    known = pc.greater_equal(col, 0)
    if flag == "any":
        return pc.greater(col, 0)
    if flag == "none":
        return pc.equal(col, 0)
    if flag not in flags.REASONS:
        raise QueryError(f"flag={flag!r}: expected any, none or one of {', '.join(flags.REASONS)}")
    return pc.and_(known, pc.not_equal(pc.bit_wise_and(col, pa.scalar(flags.REASONS[flag], pa.int8())), 0))


def _extracted(text: str) -> str | None:
    """The answer the math reward reads from a response (the same extractor, bounded input)."""
    from rewards.math_extract import extract_answer

    try:
        answer, _how = extract_answer(text[:TEXT_FULL])
    except Exception:  # noqa: BLE001 - a display aid only
        return None
    return answer


def _describe(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "truncated or corrupt Parquet file" if isinstance(exc, (pa.ArrowInvalid, OSError)) else type(exc).__name__
    return f"{kind}: {msg[:200]}" if msg else kind


def _newest_first(t: pa.Table, offset: int, limit: int) -> tuple[int, pa.Table]:
    """Rows `offset .. offset+limit` of `t` counted from its end (the newest first), and len(t)."""
    total = len(t)
    n = min(max(1, min(int(limit), PAGE_MAX)), max(0, total - offset))
    return total, t.take(pa.array(np.arange(total - 1 - offset, total - 1 - offset - n, -1), pa.int64()))
