"""The dashboard's reader of the learner's token traces (rl/token_traces.py writes them).

    rollout(run_dir, step, group, gi)   one rollout's traced tokens, for the replay page's overlay
    TraceSummaries.mismatch(run_dir)    per step, for the overview's mismatch chart:
        |log pi_v(o_t) - log q(o_t)|  over the traced (token, iteration) pairs where both exist, with
            log pi_v  the learner's log-prob of the token under the weights that sampled it, on that
                      iteration's random mask (logp_version for a stale row, else logp_old)
            log q     the sampler's own log-prob of it when it unmasked it (logp_sampler, log confidence)
        its mean, p90, p99 and max; the mean entropy of pi_theta and the clip fraction; and the mean entropy
        by response position over the last ENTROPY_WINDOW traced steps.
        |log pi_old(o_t) - log pi_v(o_t)|  (lag_*) asynchronous rollouts' policy lag on the same mask and
            context: the learner's weights at the update's start against the version that sampled a
            stale row (both exact; where logp_version exists); its mean, p99, max and the stale pairs.

The two log-probs condition on different contexts (docs/dashboard.md, "Token traces"), so the mismatch is
not zero even for a perfect learner: it is a per-run baseline to watch for jumps.
Each step's summary is computed once per partition file (size, mtime) and kept; a resume that removes
partitions removes their summaries.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rl.token_traces import TRACES_DIR, read_traces

ENTROPY_WINDOW = 50  # steps the entropy-by-position curve averages over
OVERLAY_COLUMNS = ("position", "iteration", "mask_ratio", "logp", "logp_old", "logp_version", "logp_sampler",
                   "ratio", "clipped", "kl", "entropy")


def _floats(values) -> list:
    return [None if v is None or not np.isfinite(v) else round(float(v), 5) for v in values]


def rollout(run_dir: Path, step: int, group: int, gi: int) -> dict:
    """The traced tokens of one rollout (columns as lists, rows sorted by position then iteration), or
    traced: false with the (group, gi) pairs of the step that were traced."""
    root = Path(run_dir) / TRACES_DIR
    path = root / f"step={step}" / "part-0.parquet"
    if not path.exists():
        return {"traced": False, "step": step, "group": group, "gi": gi, "traced_rollouts": []}
    t = read_traces(root, step)
    sel = t.filter(pc.and_(pc.equal(t["group"], group), pc.equal(t["gi"], gi)))
    if not sel.num_rows:
        pairs = t.select(["group", "gi"]).group_by(["group", "gi"]).aggregate([]).sort_by([("group", "ascending"),
                                                                                        ("gi", "ascending")])
        return {"traced": False, "step": step, "group": group, "gi": gi,
                "traced_rollouts": [[r["group"], r["gi"]] for r in pairs.to_pylist()[:64]]}
    out = {"traced": True, "step": step, "group": group, "gi": gi,
           "response_len": int(sel["response_len"][0].as_py()), "advantage": _floats([sel["advantage"][0].as_py()])[0],
           "version": int(sel["version"][0].as_py()), "iterations": int(pc.max(sel["iteration"]).as_py()) + 1}
    for name in OVERLAY_COLUMNS:
        values = sel[name].to_pylist()
        out[name] = values if name in ("position", "iteration", "clipped") else _floats(
            [np.nan if v is None else v for v in values])
    return out


def step_summary(t) -> dict:
    """One step's mismatch, entropy and clip figures (module doc); entropy sums by position."""
    old = t["logp_old"].to_numpy(zero_copy_only=False)
    version = t["logp_version"].to_numpy(zero_copy_only=False)
    learner = np.where(np.isnan(version), old, version)
    gap = np.abs(learner - t["logp_sampler"].to_numpy(zero_copy_only=False))
    gap = gap[np.isfinite(gap)]
    lag = np.abs(old - version)
    lag = lag[np.isfinite(lag)]  # stale rows only: logp_version is NaN where the row was sampled by pi_old
    entropy = t["entropy"].to_numpy(zero_copy_only=False).astype(np.float64)
    pos = t["position"].to_numpy(zero_copy_only=False).astype(np.int64)
    ok = np.isfinite(entropy)
    size = int(pos.max()) + 1 if len(pos) else 0
    clipped = t["clipped"].to_numpy(zero_copy_only=False)
    return {
        "tokens": int(t.num_rows), "pairs": int(len(gap)),
        "mismatch_mean": float(gap.mean()) if len(gap) else None,
        "mismatch_p90": float(np.quantile(gap, 0.9)) if len(gap) else None,
        "mismatch_p99": float(np.quantile(gap, 0.99)) if len(gap) else None,
        "mismatch_max": float(gap.max()) if len(gap) else None,
        "lag_pairs": int(len(lag)), "lag_mean": float(lag.mean()) if len(lag) else None,
        "lag_p99": float(np.quantile(lag, 0.99)) if len(lag) else None, "lag_max": float(lag.max()) if len(lag) else None,
        "entropy_mean": float(entropy[ok].mean()) if ok.any() else None,
        "clip_frac": float((clipped != 0).mean()) if len(clipped) else None,
        "_entropy_sum": np.bincount(pos[ok], entropy[ok], size), "_entropy_count": np.bincount(pos[ok], None, size),
    }


class TraceSummaries:
    """Per-step summaries of every run's traces, each computed once per partition file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], dict]] = {}

    def _summary(self, path: Path) -> dict:
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        summary = step_summary(pq.read_table(path, columns=["position", "logp_old", "logp_version", "logp_sampler",
                                                            "entropy", "clipped"]))
        with self._lock:
            self._cache[path] = (key, summary)
        return summary

    def mismatch(self, run_dir: Path) -> dict:
        root = Path(run_dir) / TRACES_DIR
        parts = sorted((int(p.parent.name.split("=", 1)[1]), p) for p in root.glob("step=*/part-0.parquet"))
        with self._lock:  # partitions a resume removed
            for gone in [p for p in self._cache if p.is_relative_to(root) and not p.exists()]:
                del self._cache[gone]
        steps = []
        for step, path in parts:
            try:
                steps.append((step, self._summary(path)))
            except (OSError, ValueError) as exc:  # a partition removed or rewritten while read: next poll
                steps.append((step, {"error": str(exc)[:200]}))
        window = [s for _, s in steps if "_entropy_sum" in s][-ENTROPY_WINDOW:]
        size = max((len(s["_entropy_sum"]) for s in window), default=0)
        e_sum, e_cnt = np.zeros(size), np.zeros(size)
        for s in window:
            e_sum[:len(s["_entropy_sum"])] += s["_entropy_sum"]
            e_cnt[:len(s["_entropy_count"])] += s["_entropy_count"]
        return {
            "steps": [{"step": step, **{k: v for k, v in s.items() if not k.startswith("_")}} for step, s in steps],
            "entropy_by_position": {"position": [int(i) for i in np.flatnonzero(e_cnt)],
                                    "entropy": [float(e_sum[i] / e_cnt[i]) for i in np.flatnonzero(e_cnt)],
                                    "steps": len(window)},
        }
