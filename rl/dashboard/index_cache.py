"""The rollout index (rollouts.py) kept on disk between server starts, outside the run directory.

Indexing a store reads a few scalar columns of every partition: seconds at a million rollouts on an
idle machine, minutes on a loaded one, at every start of `unigrpo dashboard`. So once a large store
is indexed, the index is written to one Arrow IPC file

    $UNIGRPO_DASHBOARD_CACHE/<sha256(run path)[:16]>-<run name>.arrow
    (default ~/.cache/unigrpo/dashboard, or $XDG_CACHE_HOME/unigrpo/dashboard; "off" disables it)

holding every partition's index rows and, in the schema metadata, a manifest: per partition its
path (relative to rollouts/), size and mtime_ns, step and per-step stats. The next start reads it and
keeps a partition's rows only if the file is still there with the same size and mtime; a changed
partition (a resume rewrote it) is read again, a removed one dropped, a new one indexed. The dashboard
never writes inside a run directory: a cache folder inside the run is refused.

Small stores (under MIN_ROLLOUTS) index in about a second and are not cached; a live run's cache is
rewritten at most every SAVE_EVERY_S. A cache that cannot be read or written is ignored (the index is
then built from the Parquet files, as without one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

CACHE_ENV = "UNIGRPO_DASHBOARD_CACHE"
FORMAT = 2              # bump when the index's columns change: older cache files are then ignored
MIN_ROLLOUTS = 50_000   # smaller stores are indexed from Parquet at every start (about a second)
SAVE_EVERY_S = 60.0     # a live run adds a partition a step: rewrite its cache at most this often
PRUNE_AFTER_DAYS = 30   # cache files of runs not opened for this long are removed when another is written
_PART = "file"          # the index's column naming the partition of a row (rollouts.py Snapshot): the manifest entry


def cache_root() -> Path | None:
    """Where cache files go, or None when $UNIGRPO_DASHBOARD_CACHE is "off"."""
    env = os.environ.get(CACHE_ENV, "")
    if env.lower() in ("off", "0", "none"):
        return None
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "unigrpo" / "dashboard"


def cache_file(run_dir: Path) -> Path | None:
    """The cache file of one run, keyed by its resolved path; None when disabled or inside the run."""
    root = cache_root()
    if root is None:
        return None
    run = Path(run_dir).resolve()
    root = root.resolve()
    if root == run or run in root.parents:  # never write inside a run directory
        return None
    key = hashlib.sha256(str(run).encode()).hexdigest()[:16]
    return root / f"{key}-{re.sub(r'[^A-Za-z0-9._-]', '_', run.name)[:60]}.arrow"


class IndexCache:
    """load() -> {path: (key, step, stats, table)}; maybe_save(snapshot) after an indexing pass."""

    def __init__(self, run_dir: Path, store: Path) -> None:
        self.path = cache_file(run_dir)
        self.store = store
        self.saved_at = -SAVE_EVERY_S  # the first complete index is written at once
        self.saved = None  # the manifest last written or read: nothing to write while it is unchanged

    def load(self) -> dict[Path, tuple[tuple[int, int], int, dict, pa.Table]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            os.utime(self.path)  # "last used", for pruning
            with pa.OSFile(str(self.path)) as source:  # read into memory: no mapping held open
                table = ipc.open_file(source).read_all()
            meta = json.loads(table.schema.metadata[b"unigrpo"])
            if meta.get("format") != FORMAT:
                return {}
            parts = meta["parts"]
            table = table.replace_schema_metadata(None)
            ids = table.column(_PART).to_numpy()
            rows = table.drop_columns([_PART])
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return {}  # unreadable or from another version: rebuilt from the Parquet files
        out, start = {}, 0
        for i, p in enumerate(parts):  # rows are stored partition after partition, in manifest order
            n = int(p["rows"])
            if n and not (ids[start] == i == ids[start + n - 1]):
                return {}
            out[self.store / p["path"]] = ((int(p["size"]), int(p["mtime_ns"])), int(p["step"]), p["stats"],
                                           _drop_null_columns(rows.slice(start, n)))
            start += n
        self.saved = _manifest([(path, v[0]) for path, v in out.items()], self.store)
        return out

    def maybe_save(self, snapshot, force: bool = False) -> bool:
        """Write the snapshot's index (rollouts.py Snapshot: one table, rows partition after partition,
        `file` = the partition's position in snapshot.files) when the store is large enough, it changed
        since the last write, and SAVE_EVERY_S passed (or force). Atomic: a temporary file renamed over
        the old one. The snapshot's own table is written, so no second copy of the index is made."""
        if self.path is None:
            return False
        table, files = snapshot.table, snapshot.files
        manifest = _manifest([(p.path, p.key) for p in files], self.store)
        if len(table) < MIN_ROLLOUTS or manifest == self.saved:
            return False
        if not force and time.monotonic() - self.saved_at < SAVE_EVERY_S:
            return False
        meta = {"format": FORMAT, "run": str(self.store.parent.resolve()), "parts": [
            {"path": str(p.path.relative_to(self.store)), "size": p.key[0], "mtime_ns": p.key[1], "step": p.step,
             "stats": p.stats, "rows": int(snapshot.starts[i + 1] - snapshot.starts[i])} for i, p in enumerate(files)]}
        table = table.replace_schema_metadata({"unigrpo": json.dumps(meta)})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".arrow")
            try:
                with os.fdopen(fd, "wb") as fh, ipc.new_file(fh, table.schema) as writer:
                    writer.write_table(table)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            return False  # a read-only home, a full disk: the dashboard works without a cache
        self.saved, self.saved_at = manifest, time.monotonic()
        _prune(self.path.parent)
        return True


def _prune(folder: Path) -> None:
    """Remove cache files not used for PRUNE_AFTER_DAYS (a run deleted or moved leaves its file behind)."""
    old = time.time() - PRUNE_AFTER_DAYS * 86400
    for f in folder.glob("*.arrow"):
        try:
            if f.stat().st_mtime < old:
                f.unlink()
        except OSError:
            pass


def _manifest(parts: list[tuple[Path, tuple[int, int]]], store: Path) -> list:
    return sorted((str(path.relative_to(store)), key) for path, key in parts)


def _drop_null_columns(t: pa.Table) -> pa.Table:
    """A partition's own columns: the status and value columns of components it did not have were filled with
    nulls when the partitions were concatenated; indexing it afresh would not have them."""
    keep = [c for c in t.column_names if not (c.startswith(("s:", "v:")) and t.column(c).null_count == len(t))]
    return t.select(keep)
