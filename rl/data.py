"""Prompt datasets: local Parquet / JSONL files or the built-in toy task, behind a resumable cursor.

A row becomes a `Prompt` (id, task, question, gold answer). Bad rows are rejected while loading, with
the file and the row number, so a run never starts on data it would choke on an hour later.
The cursor (epoch, position, shuffle seed) is plain data saved with every checkpoint; the order of
epoch e is a permutation drawn from (seed, e), so a resumed run sees exactly the prompts the
uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

MAX_QUESTION_CHARS = 100_000


class DataError(ValueError):
    """A dataset file or row that cannot be used, naming the file and the row."""


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    task: str
    question: str
    answer: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Cursor:
    epoch: int = 0
    position: int = 0
    seed: int = 0


def toy_copy_task(size: int, seed: int = 0) -> list[Prompt]:
    """The embedded default: 'Repeat the number: 7' -> '7'. An untrained tiny policy gets it right only
    when a random digit happens to come last; a policy that learns to read the prompt always does."""
    rng = random.Random(seed)
    rows = []
    for i in range(size):
        n = rng.randrange(1, 10)  # no 0: "000" would equal 0 and reward a degenerate all-zeros answer
        rows.append(Prompt(prompt_id=f"toy-{i}", task="math", question=f"Repeat the number: {n}", answer=str(n)))
    return rows


def _rows_from_file(path: Path):
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        yield from enumerate(table.to_pylist(), start=1)
    elif path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")


def load_prompt_files(
    files: list[str], task: str, question_field: str = "question", answer_field: str = "answer"
) -> list[Prompt]:
    prompts: list[Prompt] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: data file does not exist")
        for row_no, row in _rows_from_file(path):
            where = f"{path}: row {row_no}"
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected an object with fields, got {type(row).__name__}")
            question = row.get(question_field)
            if not isinstance(question, str) or not question.strip():
                raise DataError(f"{where}: field {question_field!r} must be a non-empty string, got {question!r}")
            if len(question) > MAX_QUESTION_CHARS:
                raise DataError(f"{where}: field {question_field!r} is {len(question)} characters long")
            answer = row.get(answer_field)
            if task == "math":
                if isinstance(answer, int | float) and not isinstance(answer, bool):
                    answer = str(answer)
                if not isinstance(answer, str) or not answer.strip():
                    raise DataError(f"{where}: field {answer_field!r} (the gold answer) must be a non-empty "
                                    f"string or number, got {answer!r}")
            elif answer is not None and not isinstance(answer, str):
                answer = json.dumps(answer)
            row_task = row.get("task", task)
            prompts.append(Prompt(prompt_id=str(row.get("id", f"{path.stem}-{row_no}")), task=str(row_task),
                                  question=question, answer=answer))
    if not prompts:
        raise DataError(f"no prompts in {files}")
    return prompts


class PromptDataset:
    """Endless batches of prompts in a seeded per-epoch order, resumable from a `Cursor`."""

    def __init__(self, prompts: list[Prompt], shuffle: bool = True, seed: int = 0) -> None:
        if not prompts:
            raise DataError("the dataset is empty")
        self.prompts = prompts
        self.shuffle = shuffle
        self.cursor = Cursor(seed=seed)
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.prompts))
        return np.random.default_rng([self.cursor.seed, epoch]).permutation(len(self.prompts))

    def next_batch(self, size: int) -> list[Prompt]:
        batch = []
        while len(batch) < size:
            if self.cursor.position >= len(self.prompts):
                self.cursor.epoch += 1
                self.cursor.position = 0
                self._order = self._epoch_order(self.cursor.epoch)
            batch.append(self.prompts[self._order[self.cursor.position]])
            self.cursor.position += 1
        return batch

    def state_dict(self) -> dict:
        return asdict(self.cursor)

    def load_state_dict(self, state: dict) -> None:
        self.cursor = Cursor(**state)
        self._order = self._epoch_order(self.cursor.epoch)


def build_dataset(data_cfg) -> PromptDataset:
    if data_cfg.task == "toy_copy":
        prompts = toy_copy_task(data_cfg.toy_size, seed=data_cfg.seed)
    else:
        prompts = load_prompt_files(data_cfg.files, data_cfg.task, data_cfg.question_field, data_cfg.answer_field)
    return PromptDataset(prompts, shuffle=data_cfg.shuffle, seed=data_cfg.seed)
