"""Token traces of the learner's update, stored beside the rollout store (issue #21; docs/dashboard.md).

For a sample of each step's rollouts the learner records, per masked token t and inner iteration n, the
terms its UniGRPO loss used (trainer/token_trace.py: logp, logp_old, ratio, clipped, kl, entropy,
advantage), and the group adds the mask ratio p_{i,n} and the response position. Here they become one
Parquet partition per step, runs/<name>/token_traces/step=N/part-0.parquet, one row per (token,
iteration), sorted by (group, gi, position, iteration), with what the sampler recorded for the same token:

    logp_sampler = log confidence[position]   the sampler's probability of the token when it unmasked it
                                              (rollout/text_sampler.py: untempered softmax over its support);
                                              null for early-stop EOS fill (never sampled) and confidence 0

Which rollouts: `run.trace_groups` = K traces the first K groups (by group id, i.e. the prompt's position in
the step's batch, which the data order already randomises) of the groups the update trains on; 0 none;
-1 every group (debug: the store then grows by more than the rollouts themselves).

Size: columns are int16/int8/float16 where the values allow (positions < 32768; ratios, log-probs of the
loss and the sampler stay float32: they are what the ratio, the clip and the mismatch are read from),
zstd-compressed, floats byte-stream split. Under 20 bytes per (token, iteration), so a traced rollout
costs < 20 x sum_n k_{i,n} bytes (k_{i,n} masked tokens of iteration n; ~ 20 x mu x |o_i| / 2 under the
stratified schedule): tests/test_token_traces.py checks the bound, benchmarks/token_traces.py measures it
against the rollout store, docs/dashboard.md states both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TRACES_DIR = "token_traces"

SCHEMA = pa.schema([
    ("step", pa.int32()), ("group", pa.int16()), ("gi", pa.int16()), ("version", pa.int32()),
    ("position", pa.int16()), ("iteration", pa.int8()), ("response_len", pa.int16()),
    ("mask_ratio", pa.float16()), ("advantage", pa.float16()),
    ("logp", pa.float32()), ("logp_old", pa.float32()), ("logp_version", pa.float32()),
    ("logp_sampler", pa.float32()), ("ratio", pa.float32()), ("clipped", pa.int8()),
    ("kl", pa.float16()), ("entropy", pa.float16()),
])


def traced_rows(groups: np.ndarray, k: int) -> np.ndarray:
    """[N] bool: the rows of the first k distinct group ids (every row for k = -1, none for 0)."""
    groups = np.asarray(groups)
    if k < 0:
        return np.ones(len(groups), bool)
    return np.isin(groups, np.unique(groups)[:k])


def trace_table(step: int, records: list[Any], trace: dict[str, np.ndarray]) -> pa.Table:
    """The partition of one step. records[i] is batch row i (rollout.record.RolloutRecord: group,
    group_index, policy_version, confidence, early_filled); `trace` is LearnerGroup.update's
    "token_trace" (trainer/token_trace.py merge_ranks)."""
    rows, pos = trace["row"], trace["position"]
    sampler = np.full(len(rows), np.nan, np.float32)
    for i in np.unique(rows):
        at = rows == i
        conf = np.asarray(records[i].confidence, np.float64)
        early = np.asarray(records[i].early_filled or [False] * len(conf), bool)
        p = pos[at]
        inside = p < len(conf)
        vals = np.full(len(p), np.nan)
        c = conf[p[inside]]
        ok = (c > 0) & ~early[p[inside]]
        vals[np.flatnonzero(inside)[ok]] = np.log(c[ok])
        sampler[at] = vals
    meta = {name: np.array([getattr(records[i], attr) for i in rows], dtype=np.int64)
            for name, attr in (("group", "group"), ("gi", "group_index"), ("version", "policy_version"))}
    columns = {"step": np.full(len(rows), step), **meta, "position": pos, "iteration": trace["iteration"],
               "response_len": trace["response_len"], "mask_ratio": trace["mask_ratio"],
               "advantage": trace["advantage"], "logp": trace["logp"], "logp_old": trace["logp_old"],
               "logp_version": trace["logp_version"], "logp_sampler": sampler, "ratio": trace["ratio"],
               "clipped": trace["clipped"], "kl": trace["kl"], "entropy": trace["entropy"]}
    order = np.lexsort((columns["iteration"], pos, meta["gi"], meta["group"]))
    arrays = []
    for field in SCHEMA:
        values = np.asarray(columns[field.name])[order]
        if pa.types.is_floating(field.type):  # NaN = absent (no reference model, not a stale row, not sampled)
            with np.errstate(over="ignore"):  # float16 beyond 65504 (a k3 KL that exploded) is stored as inf,
                cast = values.astype(field.type.to_pandas_dtype())  # which the dashboard shows as absent
            arrays.append(pa.array(cast, mask=np.isnan(values)))
        else:
            arrays.append(pa.array(values.astype(field.type.to_pandas_dtype())))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_traces(root: Path, step: int, table: pa.Table) -> Path:
    part = Path(root) / f"step={step}"
    part.mkdir(parents=True, exist_ok=True)
    tmp = part / "part-0.tmp"
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    # floats: byte-stream split (exponent bytes together) compresses log-probs ~30% better than dictionaries
    pq.write_table(table, tmp, compression="zstd", use_dictionary=[c for c in table.column_names if c not in floats],
                   column_encoding=dict.fromkeys(floats, "BYTE_STREAM_SPLIT"))
    out = part / "part-0.parquet"
    tmp.replace(out)  # a reader never sees a half-written partition
    return out


def read_traces(root: Path, step: int, filters: list | None = None) -> pa.Table:
    return pq.read_table(Path(root) / f"step={step}" / "part-0.parquet", filters=filters)
