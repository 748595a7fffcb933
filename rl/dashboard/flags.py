"""Garbled-output flags and sampler cost, computed once per rollout when its step is stored.

A diverging run (a precision bug, a collapsed policy) shows up first as text that loops or breaks.
Per response (issue #21):

    repetition   = 1 - |distinct word 3-grams| / |word 3-grams|     (0 for fewer than 3 words)
    nonprintable = #(chars that are neither printable nor whitespace, or U+FFFD) / #chars
    flagged      = repetition > REPETITION_LIMIT or nonprintable > NONPRINTABLE_LIMIT

and the sampler's cost: forwards (NFE = num_forwards), response tokens, the denoising step at which the
last position was unmasked (unmask_step max; the early-stop position), and gen_s where measured.
Also min/max response token id (an id range far from the task's usual one is a hint; no flag yet).
Rows are written beside the rollout store by `rl.store.RolloutStore.append` (runs/<name>/flags/step=N/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

REPETITION_LIMIT = 0.5
NONPRINTABLE_LIMIT = 0.05

SCHEMA = pa.schema(
    [
        ("step", pa.int64()), ("prompt_id", pa.string()), ("group", pa.int64()),
        ("group_index", pa.int64()), ("repetition", pa.float64()), ("nonprintable", pa.float64()),
        ("min_token_id", pa.int64()), ("max_token_id", pa.int64()), ("flagged", pa.bool_()),
        ("num_forwards", pa.int64()), ("tokens", pa.int64()), ("last_unmask_step", pa.int64()),
        ("gen_s", pa.float64()),
    ]
)


def repetition(text: str, n: int = 3) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def nonprintable(text: str) -> float:
    bad = sum(1 for c in text if c == "\ufffd" or not (c.isprintable() or c.isspace()))
    return bad / len(text) if text else 0.0


def flag_row(step: int, rec: Any) -> dict[str, Any]:
    rep, nonp = repetition(rec.response_text), nonprintable(rec.response_text)
    ids = rec.response_ids
    return {
        "step": step, "prompt_id": rec.prompt_id, "group": rec.group, "group_index": rec.group_index,
        "repetition": rep, "nonprintable": nonp,
        "min_token_id": min(ids) if ids else None, "max_token_id": max(ids) if ids else None,
        "flagged": rep > REPETITION_LIMIT or nonp > NONPRINTABLE_LIMIT,
        "num_forwards": rec.num_forwards, "tokens": len(ids),
        "last_unmask_step": max(rec.unmask_step) if rec.unmask_step else None,
        "gen_s": rec.timings.get("gen_s"),
    }


def flags_table(step: int, records: list) -> pa.Table:
    return pa.Table.from_pylist([flag_row(step, r) for r in records], schema=SCHEMA)


def per_step(run_dir, kind: str = "rollouts") -> list[dict]:
    """Per stored step: rollouts, flagged share, mean repetition and non-printable share, mean NFE and
    tokens (the data of the flagged-share chart; /api/run/<id>/flags). Steps without flags are absent."""
    root = Path(run_dir) / f"{kind}_flags"
    if not any(root.glob("step=*/part-0.parquet")):
        return []
    t = ds.dataset(root, format="parquet", exclude_invalid_files=True).to_table(
        columns=["step", "flagged", "repetition", "nonprintable", "num_forwards", "tokens"])
    t = t.append_column("flagged_f", pc.cast(t["flagged"], pa.float64()))
    g = t.group_by("step").aggregate([("flagged_f", "mean"), ("repetition", "mean"), ("nonprintable", "mean"),
                                      ("num_forwards", "mean"), ("tokens", "mean"), ("step", "count")])
    g = g.sort_by("step")
    return [{"step": r["step"], "rollouts": r["step_count"], "flagged_share": r["flagged_f_mean"],
             "repetition": r["repetition_mean"], "nonprintable": r["nonprintable_mean"],
             "nfe": r["num_forwards_mean"], "tokens": r["tokens_mean"]} for r in g.to_pylist()]
