"""`TrainBatch`: what the driver hands the learner for one UniGRPO update.

Every row is one response o_i to a prompt q, laid out as [left-padded prompt | response]:

    input_ids      [N, L] int64   prompt then response tokens (prompts left-padded)
    attention_mask [N, L] or None 1 = real token; None = every token visible (how MMaDA was trained)
    response_mask  [N, L] bool    positions eligible for masking (the response tokens, never the prompt)
    advantages     [N]    float32 A_i, the same for every token of o_i
    is_image       [N]    bool    log-probs over the image-code slice of the vocabulary for these rows
    group_ids      [N]    int64   optional: which prompt group a response belongs to (bookkeeping only)

Plain numpy arrays, so a batch crosses Ray's object store cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


class BatchError(ValueError):
    """A TrainBatch whose arrays do not fit together."""


@dataclass
class TrainBatch:
    input_ids: np.ndarray
    response_mask: np.ndarray
    advantages: np.ndarray
    is_image: np.ndarray | None = None
    attention_mask: np.ndarray | None = None
    group_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.input_ids = np.asarray(self.input_ids, dtype=np.int64)
        self.response_mask = np.asarray(self.response_mask, dtype=bool)
        self.advantages = np.asarray(self.advantages, dtype=np.float32)
        n = self.input_ids.shape[0] if self.input_ids.ndim == 2 else -1
        self.is_image = np.zeros(max(n, 0), bool) if self.is_image is None else np.asarray(self.is_image, bool)
        if self.attention_mask is not None:
            self.attention_mask = np.asarray(self.attention_mask, dtype=np.int64)
        if self.group_ids is not None:
            self.group_ids = np.asarray(self.group_ids, dtype=np.int64)
        self.validate()

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def validate(self) -> None:
        if self.input_ids.ndim != 2:
            raise BatchError(f"input_ids must be [N, L], got shape {self.input_ids.shape}")
        n, length = self.input_ids.shape
        if n == 0:
            raise BatchError("TrainBatch has no rows")
        if self.response_mask.shape != (n, length):
            raise BatchError(f"response_mask has shape {self.response_mask.shape}, expected {(n, length)}")
        if self.attention_mask is not None and self.attention_mask.shape != (n, length):
            raise BatchError(f"attention_mask has shape {self.attention_mask.shape}, expected {(n, length)}")
        for name in ("advantages", "is_image", "group_ids"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise BatchError(f"{name} has shape {value.shape}, expected ({n},)")
        if not np.isfinite(self.advantages).all():
            raise BatchError("advantages contain NaN or inf")
        empty = np.flatnonzero(self.response_mask.sum(1) == 0)
        if len(empty):
            raise BatchError(f"rows {empty[:8].tolist()} have no response token to mask (response_mask all False)")
        if self.attention_mask is not None and (self.response_mask & (self.attention_mask == 0)).any():
            raise BatchError("response_mask marks padding positions (attention_mask == 0) as response tokens")

    def select(self, rows: np.ndarray | slice) -> TrainBatch:
        """The sub-batch of the given rows (a slice or an index array)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainBatch(**{k: (None if v is None else v[rows]) for k, v in values.items()})

    def shard_bounds(self, rank: int, world: int) -> tuple[int, int]:
        """Contiguous rows [start, stop) of `rank`; shard sizes differ by at most one row."""
        if not 0 <= rank < world:
            raise BatchError(f"rank {rank} is outside world size {world}")
        if self.num_rows < world:
            raise BatchError(f"a batch of {self.num_rows} rows cannot be split across {world} ranks")
        base, extra = divmod(self.num_rows, world)
        start = rank * base + min(rank, extra)
        return start, start + base + (1 if rank < extra else 0)

    def shard(self, rank: int, world: int) -> TrainBatch:
        start, stop = self.shard_bounds(rank, world)
        return self.select(slice(start, stop))
