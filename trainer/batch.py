"""`TrainBatch`: what the driver hands the learner for one UniGRPO update.

Every row is one response o_i to a prompt q, laid out as [left-padded prompt | response]:

    input_ids      [N, L] int64   prompt then response tokens (prompts left-padded)
    attention_mask [N, L] or None 1 = real token; None = every token visible (how MMaDA was trained)
    response_mask  [N, L] bool    positions eligible for masking (the response tokens, never the prompt)
    advantages     [N]    float32 A_i, the same for every token of o_i
    is_image       [N]    bool    log-probs over the image-code slice of the vocabulary for these rows
    group_ids      [N]    int64   optional: which prompt group a response belongs to (bookkeeping only)
    tasks          [N]    str     optional: each row's task (text / mmu / t2i), for per-task statistics
    trace          [N]    bool    optional: rows whose per-token loss terms the learner records
                                  (trainer/token_trace.py; rl/token_traces.py picks them)

Plain numpy arrays, so a batch crosses Ray's object store cheaply.

`batch_from_rollouts` builds the rows from rollout records so that each row is exactly the context
the sampler saw: the prompt with its own attention mask (t2i [iPAD] padding stays hidden), the
response, and whatever followed the response in the sampler's input (the <|eoi|> after an image
canvas), visible but never masked or scored:

    [pad ... pad | prompt (prompt_mask) | response (masked/scored) | suffix (seen) | pad ... pad]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol

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
    tasks: np.ndarray | None = None
    versions: np.ndarray | None = None  # the policy version that sampled each row (asynchronous rollouts)
    trace: np.ndarray | None = None  # rows to trace token by token (module doc)

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
        if self.tasks is not None:
            self.tasks = np.asarray(self.tasks, dtype=str)
        if self.trace is not None:
            self.trace = np.asarray(self.trace, dtype=bool)
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
        for name in ("advantages", "is_image", "group_ids", "tasks", "versions", "trace"):
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


class SampledRow(Protocol):
    """What a training row is built from (rollout.record.RolloutRecord has these; trainer/ does not
    import rollout/, the two sit side by side)."""

    task: str
    prompt_ids: list[int]
    prompt_mask: list[int]
    response_ids: list[int]
    suffix_ids: list[int]


def batch_from_rollouts(records: Sequence[SampledRow], advantages: np.ndarray,
                        tasks: list[str] | None = None, versions: list[int] | None = None) -> TrainBatch:
    """Rows laid out as the sampler saw them (module doc). Prompts are left-padded to one width, so every
    response starts at the same column; a t2i row scores the image-code slice of the vocabulary."""
    if not records:
        raise BatchError("no rollouts to train on")
    prompt_w = max(len(r.prompt_ids) for r in records)
    tail_w = max(len(r.response_ids) + len(r.suffix_ids) for r in records)
    n, width = len(records), prompt_w + tail_w
    input_ids = np.zeros((n, width), dtype=np.int64)  # padding id is irrelevant: hidden, never scored
    attention = np.zeros((n, width), dtype=np.int64)
    response_mask = np.zeros((n, width), dtype=bool)
    is_image = np.zeros(n, dtype=bool)
    for row, r in enumerate(records):
        p, o, suffix = r.prompt_ids, r.response_ids, list(r.suffix_ids)
        pm = r.prompt_mask
        if len(pm) != len(p):
            raise BatchError(f"rollout {row}: prompt_mask has {len(pm)} entries for {len(p)} prompt ids")
        tail = list(o) + suffix
        input_ids[row, prompt_w - len(p):prompt_w] = p
        attention[row, prompt_w - len(p):prompt_w] = pm
        input_ids[row, prompt_w:prompt_w + len(tail)] = tail
        attention[row, prompt_w:prompt_w + len(tail)] = 1
        response_mask[row, prompt_w:prompt_w + len(o)] = True
        is_image[row] = r.task == "t2i"
    return TrainBatch(input_ids=input_ids, attention_mask=attention, response_mask=response_mask,
                      advantages=np.asarray(advantages, dtype=np.float32), is_image=is_image,
                      tasks=None if tasks is None else np.asarray(tasks, dtype=str),
                      versions=None if versions is None else np.asarray(versions, dtype=np.int64))
