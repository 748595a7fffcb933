"""Garbled-output flags and sampler cost, computed once per rollout when its step is stored.

A diverging run (a precision bug, a collapsed policy) shows up first as text that loops or breaks.
Per response (issue #21):

    repetition   = 1 - |distinct word 3-grams| / |word 3-grams|     (0 for fewer than 3 words)
    nonprintable = #(chars that are neither printable nor whitespace, or U+FFFD) / #chars
    length       = text: ids before the first EOS; image: all N ids
    cut          = text: no EOS among the gen_length ids (the output ran into the length limit)
    odd_ids      = #ids outside the task's range: text ids >= the text vocabulary or == [MASK] (before the
                   EOS); image ids outside [image_offset, image_offset + codebook_size)
    flagged      = repetition > REPETITION_LIMIT or nonprintable > NONPRINTABLE_LIMIT or cut or odd_ids > 0

length, cut and odd_ids need the vocabulary layout (the driver passes it to rl/store.py as
`TokenRanges`); without one they are null and do not flag. Also the sampler's cost: forwards (NFE =
num_forwards), response tokens, the denoising step at which the last position was unmasked (unmask_step
max; the early-stop position), and gen_s where measured.
Rows are written beside the rollout store by `rl.store.RolloutStore.append` (runs/<name>/<kind>_flags/step=N/).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rollout.record import task_kind

REPETITION_LIMIT = 0.5
NONPRINTABLE_LIMIT = 0.05
# the reasons a rollout is flagged, as bits of the dashboard index's `flags` column (rl/dashboard/rollouts.py)
REASONS = {"repetition": 1, "nonprintable": 2, "odd_ids": 4, "cut": 8}

SCHEMA = pa.schema(
    [
        ("step", pa.int64()), ("prompt_id", pa.string()), ("group", pa.int64()),
        ("group_index", pa.int64()), ("repetition", pa.float64()), ("nonprintable", pa.float64()),
        ("min_token_id", pa.int64()), ("max_token_id", pa.int64()), ("flagged", pa.bool_()),
        ("num_forwards", pa.int64()), ("tokens", pa.int64()), ("last_unmask_step", pa.int64()),
        ("gen_s", pa.float64()), ("length", pa.int64()), ("cut", pa.bool_()), ("odd_ids", pa.int64()),
    ]
)


@dataclass(frozen=True)
class TokenRanges:
    """Where a response's ids should lie, from the policy's `policy.vocab.VocabLayout`."""

    eos_id: int
    mask_id: int
    text_end: int  # text ids are [0, text_end)
    image_lo: int  # image ids are [image_lo, image_hi)
    image_hi: int

    @classmethod
    def from_layout(cls, layout) -> TokenRanges:
        return cls(eos_id=layout.eos_id, mask_id=layout.mask_id, text_end=layout.text_vocab_size,
                   image_lo=layout.image_offset, image_hi=layout.image_offset + layout.codebook_size)

    def check(self, task: str, ids: list[int]) -> tuple[int, bool, int]:
        """(length, cut, odd_ids) of one response."""
        if task_kind(task) == "t2i":
            return len(ids), False, sum(1 for i in ids if not self.image_lo <= i < self.image_hi)
        length = ids.index(self.eos_id) if self.eos_id in ids else len(ids)
        odd = sum(1 for i in ids[:length] if i < 0 or i >= self.text_end or i == self.mask_id)
        return length, self.eos_id not in ids and bool(ids), odd


def repetition(text: str, n: int = 3) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def nonprintable(text: str) -> float:
    bad = sum(1 for c in text if c == "\ufffd" or not (c.isprintable() or c.isspace()))
    return bad / len(text) if text else 0.0


def flag_row(step: int, rec: Any, ranges: TokenRanges | None = None) -> dict[str, Any]:
    rep, nonp = repetition(rec.response_text), nonprintable(rec.response_text)
    ids = rec.response_ids
    length, cut, odd = ranges.check(rec.task, ids) if ranges is not None else (None, None, None)
    return {
        "step": step, "prompt_id": rec.prompt_id, "group": rec.group, "group_index": rec.group_index,
        "repetition": rep, "nonprintable": nonp,
        "min_token_id": min(ids) if ids else None, "max_token_id": max(ids) if ids else None,
        "flagged": rep > REPETITION_LIMIT or nonp > NONPRINTABLE_LIMIT or bool(cut) or bool(odd),
        "num_forwards": rec.num_forwards, "tokens": len(ids),
        "last_unmask_step": max(rec.unmask_step) if rec.unmask_step else None,
        "gen_s": rec.timings.get("gen_s"), "length": length, "cut": cut, "odd_ids": odd,
    }


def flags_table(step: int, records: list, ranges: TokenRanges | None = None) -> pa.Table:
    return pa.Table.from_pylist([flag_row(step, r, ranges) for r in records], schema=SCHEMA)


def reason_bits(t: pa.Table) -> pa.Array:
    """The REASONS bits of every row of a flag table (files written before `cut` / `odd_ids` existed
    have neither: those bits stay 0)."""
    n = t.num_rows
    bits = pa.array([0] * n, pa.int8())
    tests = {"repetition": lambda c: pc.greater(c, REPETITION_LIMIT),
             "nonprintable": lambda c: pc.greater(c, NONPRINTABLE_LIMIT),
             "odd_ids": lambda c: pc.greater(c, 0), "cut": lambda c: c}
    for name, bit in REASONS.items():
        if name in t.column_names:
            hit = pc.fill_null(tests[name](t.column(name)), False)
            bits = pc.if_else(hit, pc.bit_wise_or(bits, pa.scalar(bit, pa.int8())), bits)
    return bits


def flag_file(partition: Path) -> Path:
    """The flag file beside a rollout partition: <run>/<kind>/step=N/part-0.parquet -> <run>/<kind>_flags/step=N/."""
    store = partition.parent.parent
    return store.parent / f"{store.name}_flags" / partition.parent.name / "part-0.parquet"


def index_columns(partition: Path, group: np.ndarray, gi: np.ndarray) -> dict[str, np.ndarray]:
    """The flag figures of one rollout partition, row-aligned with it, for the dashboard's index:
    flags (REASONS bits), length, last_unmask (the early-stop position) and gen_s; -1 / NaN where
    unknown (no flag file, written before a column existed, or rows that do not match (group, gi)).
    The store writes the flag file before the partition, so a partition that exists has its flags."""
    n = len(group)
    out = {"flags": np.full(n, -1, np.int8), "length": np.full(n, -1, np.int32),
           "last_unmask": np.full(n, -1, np.int32), "gen_s": np.full(n, np.nan, np.float32)}
    try:
        t = pq.read_table(flag_file(partition))
    except (OSError, pa.ArrowInvalid):
        return out
    if t.num_rows != n or not (np.array_equal(t.column("group").to_numpy(zero_copy_only=False), group)
                               and np.array_equal(t.column("group_index").to_numpy(zero_copy_only=False), gi)):
        return out
    out["flags"] = reason_bits(t).to_numpy(zero_copy_only=False).astype(np.int8)
    for key, col, fill, dtype in (("length", "length", -1, np.int32), ("last_unmask", "last_unmask_step", -1, np.int32),
                                  ("gen_s", "gen_s", np.nan, np.float32)):
        if col in t.column_names:
            out[key] = pc.fill_null(pc.cast(t.column(col), pa.float64()), fill).to_numpy().astype(dtype)
    return out


def per_step(run_dir, kind: str = "rollouts") -> list[dict]:
    """Per stored step: rollouts, flagged share and the share of each reason, mean repetition and
    non-printable share, mean NFE and tokens (/api/run/<id>/flags). Steps without flags are absent."""
    out = []
    parts = sorted(Path(run_dir, f"{kind}_flags").glob("step=*/part-0.parquet"),
                   key=lambda p: int(p.parent.name.split("=", 1)[1]))
    for path in parts:
        try:
            t = pq.read_table(path)
        except (OSError, pa.ArrowInvalid):
            continue  # half-written or removed by a resume: the next request sees it
        if not t.num_rows:
            continue
        bits = reason_bits(t).to_numpy(zero_copy_only=False)
        row = {"step": int(path.parent.name.split("=", 1)[1]), "rollouts": t.num_rows,
               "flagged_share": float((bits > 0).mean())}
        row |= {f"{name}_share": float(((bits & bit) > 0).mean()) for name, bit in REASONS.items()}
        for key, col in (("repetition", "repetition"), ("nonprintable", "nonprintable"), ("nfe", "num_forwards"),
                         ("tokens", "tokens")):
            row[key] = pc.mean(t.column(col)).as_py()
        out.append(row)
    return out
