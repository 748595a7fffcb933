"""The rollout store: one Parquet partition per RL step under runs/<name>/rollouts/step=N/.

One `rollout.record.RolloutRecord` (sampling, rewards, advantage) per row, with the Arrow schema derived
from that dataclass, so every partition has the same columns and types; the dashboard, evaluation and
replay read these files back (docs/architecture.md, "Data of one step").
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from rl.dashboard.flags import TokenRanges, flags_table
from rl.token_traces import TRACES_DIR, write_traces
from rollout.record import RolloutRecord, arrow_schema


class RolloutStore:
    def __init__(self, run_dir: Path, kind: str = "rollouts", ranges: TokenRanges | None = None) -> None:
        self.root = Path(run_dir) / kind  # "rollouts", or "evals" for held-out evaluations
        self.root.mkdir(parents=True, exist_ok=True)
        self.flags_root = Path(run_dir) / f"{kind}_flags"  # rl/dashboard/flags.py: one row per rollout
        self.ranges = ranges  # the policy's EOS id and token ranges: the cut and odd-id flags need them
        self.traces_root = Path(run_dir) / TRACES_DIR  # rl/token_traces.py: the learner's per-token terms

    def append(self, step: int, records: list[RolloutRecord], traces: pa.Table | None = None) -> Path:
        """The step's records (and flags); `traces`, if given, to token_traces/step=N/ (rl/token_traces.py)."""
        part = self.root / f"step={step}"
        part.mkdir(parents=True, exist_ok=True)
        rows = [r.to_row() for r in records]
        table = pa.Table.from_pylist(rows, schema=arrow_schema())
        out = part / "part-0.parquet"
        tmp = out.with_suffix(".tmp")
        self._write_flags(step, records)  # first: the dashboard reads a partition's flags when it appears
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(out)  # a reader never sees a half-written partition
        if traces is not None:
            write_traces(self.traces_root, step, traces)
        return out

    def _write_flags(self, step: int, records: list[RolloutRecord]) -> None:
        part = self.flags_root / f"step={step}"
        part.mkdir(parents=True, exist_ok=True)
        tmp = part / "part-0.tmp"
        pq.write_table(flags_table(step, records, self.ranges), tmp, compression="zstd")
        tmp.replace(part / "part-0.parquet")

    def read_flags(self, step: int) -> list[dict]:
        return pq.read_table(self.flags_root / f"step={step}" / "part-0.parquet").to_pylist()

    def read_step(self, step: int) -> list[dict]:
        """The rows of one step as dicts (JSON fields as text); RolloutRecord.from_row makes records."""
        return pq.read_table(self.root / f"step={step}" / "part-0.parquet").to_pylist()

    def read_all(self) -> pa.Table:
        # the partition key must have the type of the `step` column the rows carry (int64)
        partitioning = ds.partitioning(pa.schema([("step", pa.int64())]), flavor="hive")
        return ds.dataset(self.root, format="parquet", partitioning=partitioning).to_table()

    def truncate_after(self, step: int) -> None:
        """On resume, forget partitions the interrupted run wrote after its last checkpoint."""
        for part in [*self.root.glob("step=*"), *self.flags_root.glob("step=*"), *self.traces_root.glob("step=*")]:
            if int(part.name.split("=", 1)[1]) > step:
                for f in part.iterdir():
                    f.unlink()
                part.rmdir()


class BackgroundWriter:
    """Writes a step's records while the next step generates. At most one write is in flight: `submit`
    and `flush` join the previous one first, so a checkpoint never precedes its rollouts, and a failed
    write raises in the driver, at the next join."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-store")
        self._pending: Future | None = None

    def submit(self, step: int, records: list[RolloutRecord], traces: pa.Table | None = None) -> None:
        self.flush()
        self._pending = self._pool.submit(self.store.append, step, records, traces)

    def flush(self) -> None:
        """Wait for the write in flight; its error, if any, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def settle(self) -> None:
        """Let a write in flight finish or fail, ignoring its error (a restart truncates after it)."""
        with suppress(Exception):
            self.flush()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
