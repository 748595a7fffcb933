"""`Prompt` in, `RolloutRecord` out: what a rollout worker is given and what it returns, typed end to end.

A `Prompt` is one dataset row as the samplers need it (built by rl/data.py and the tasks in rl/tasks).
`RolloutRecord` is one sampled response, written down once. The rollout worker fills the sampling fields
and what it was given (prompt id, where the prompt sat in the batch as `group`, question and gold
answer), the driver adds rewards and the advantage, `trainer.batch.batch_from_rollouts`
turns records into a TrainBatch, and `rl.store.RolloutStore` writes them as one Parquet row each with
the Arrow schema derived below (the dashboard and replay read that schema back). To carry something new
(a task kind, an image field), add a field here with a default: the worker, the store and the schema
follow from this one definition.

    prompt_id       the dataset's id of the prompt; group: its position in the step's batch (a prompt
                    drawn twice in one batch makes two groups); group_index: 0..G-1 within the group
    task            "math", "t2i", ... (which sampler, which rewards)
    seed, policy_version   what it was sampled with: the version counts learner updates
    prompt_ids      text: the unpadded chat prompt; mmu: <|mmu|><|soi|>codes<|eoi|> + chat prompt;
                    t2i: the conditional layout up to and including <|soi|>
    prompt_mask     attention mask of prompt_ids (0 on t2i [iPAD])
    response_ids    text: all gen_length ids exactly as sampled, EOS padding included (the learner scores
                    the very sequence that was sampled); t2i: the N image token ids (code + image_offset)
    suffix_ids      tokens the sampler saw after the response (t2i: [<|eoi|>]; text: []): a training row
                    holds them too, visible and never masked
    response_text   decoded up to the first EOS, special tokens skipped ("" for t2i)
    image_codes     t2i: the N generated codes in [0, codebook_size); mmu: the input image's codes; else None
    image           t2i: the decoded pixels; mmu: the input image; uint8 H x W x 3 (what image rewards
                    receive, e.g. CLIP on an MMU caption); not stored
    image_png       t2i / mmu: PNG bytes of the generated / input image (the store and the dashboard)
    unmask_step, confidence, early_filled   the denoising trajectory, one value per response position
    num_forwards    model forwards this sample took part in
    sampler         the sampler settings (a dict, stored as JSON); timings: {"gen_s", "batch_size"}
    worker          who sampled it: "rollout-K" (the K-th rollout worker), "elastic-XXXXXX" (an elastic extra),
                    "rank-K" (a colocated learner rank); "" in stores written before the field existed
    question, gold  the prompt text and the reference answer (rewards read them)
    step, reward, reward_components, advantage   filled by the driver after scoring
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

JSON_FIELDS = ("sampler", "timings", "reward_components")  # dicts, stored as JSON text


def task_kind(task: str) -> str:
    """Which layout and sampler a task uses: 'mmu' and 't2i' by name, every other task is text."""
    return task if task in ("mmu", "t2i") else "text"


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    task: str
    question: str  # the caption for t2i
    answer: str | None
    image_codes: tuple[int, ...] | None = None  # mmu: the input image, encoded once while loading
    think: bool = False  # text: ask for <think>...</think> reasoning (data.think)

    @property
    def kind(self) -> str:
        return task_kind(self.task)


@dataclass
class RolloutRecord:
    prompt_id: str
    group_index: int
    task: str
    policy_version: int
    prompt_ids: list[int]
    prompt_mask: list[int]
    response_ids: list[int]
    response_text: str = ""
    seed: int = 0
    group: int = 0
    suffix_ids: list[int] = field(default_factory=list)
    image_codes: list[int] | None = None
    image: Any = field(default=None, metadata={"stored": False})  # numpy pixels travel, never stored
    image_png: bytes | None = None
    unmask_step: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    early_filled: list[bool] = field(default_factory=list)
    num_forwards: int = 0
    sampler: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    question: str = ""
    gold: str | None = None
    step: int = 0
    reward: float | None = None
    reward_components: dict[str, Any] = field(default_factory=dict)
    advantage: float | None = None

    def to_row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k in STORED}
        for key in JSON_FIELDS:
            row[key] = json.dumps(row[key], default=float)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any], strict: bool = False) -> RolloutRecord:
        """A record from a stored row (JSON fields as text or dicts). strict: unknown keys are an error
        (writing); otherwise they are dropped (reading a store written by a later version)."""
        known = {f.name for f in fields(cls)}
        if strict and set(row) - known:
            raise KeyError(f"not RolloutRecord fields: {sorted(set(row) - known)}")
        values = {k: v for k, v in row.items() if k in known}
        for key in JSON_FIELDS:
            if isinstance(values.get(key), str):
                values[key] = json.loads(values[key])
        return cls(**values)


_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_(), bytes: pa.binary()}


def _arrow_type(hint) -> pa.DataType:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and type(None) in typing.get_args(hint)):
        return _arrow_type(args[0])  # Optional[X]: nullable X
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if origin is dict:
        return pa.string()  # JSON text
    return _ARROW[hint]


STORED = tuple(f.name for f in fields(RolloutRecord) if f.metadata.get("stored", True))


def arrow_schema() -> pa.Schema:
    """The Parquet schema of the rollout store, derived from RolloutRecord's fields and types."""
    hints = typing.get_type_hints(RolloutRecord)
    return pa.schema([pa.field(name, _arrow_type(hints[name])) for name in STORED])
