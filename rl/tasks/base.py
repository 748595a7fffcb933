"""The task interface: everything specific to one task, behind one small class.

A run trains on up to three task kinds at once (text, mmu, t2i: the prompt layouts of rl/data.py); the
text kind's prompts come from the task named by `data.task`, each image kind's from the task named
after its section (`data.mmu`, `data.t2i`). Generic code asks the registry (`rl.tasks.get_task`) and
calls the task; it never branches on a task's name:

    prompts(source, seed, images)     the training prompts                            rl/data.py
    heldout(source)                   a split never trained on: the eval set without eval.files
    eval_prompts(files, source)       eval.files, read as this task's prompts        rl/evaluation.py
    warm_start_set(prompts, seed, encoder)   what the warm start teaches of it        rl/warm_start.py
    warm_start_problem(source)        why it has no warm-start set here (None: it has one)   rl/config.py
    reward_task                       the `task` its prompts carry: the rewards that score them in training
                                      and evaluation (rewards.functions[].tasks) are the ones that select it
    console_metric                    (label, metric) the console line shows as its score    rl/metrics.py

`source` is the config section the task's prompts are described by: `data` for a text task, `data.mmu`
or `data.t2i` for an image task (rl/config.py `DataSection.task_source`). Tasks take sections and plain
values, never the whole run config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from rl.data import ImageEncoder
from rollout.record import Prompt


class Task(ABC):
    name: str  # what the config calls it: data.task for a text task, the section's key for an image task
    kind: str  # the prompt layout and sampler: text | mmu | t2i (rl/data.py TASK_KINDS)
    reward_task: str  # Prompt.task of its prompts
    requires_answer: bool = True  # every row of its files needs a gold answer
    builtin: bool = False  # its prompts are generated, not read from data.files
    has_heldout: bool = False  # `heldout` gives prompts: there is an eval set without eval.files
    console_metric: tuple[str, str] | None = None

    @abstractmethod
    def read_files(self, files: list[str], source, images: ImageEncoder | None = None) -> list[Prompt]:
        """Rows of Parquet/JSONL `files` as this task's prompts, with `source`'s field names."""

    def prompts(self, source, seed: int, images: ImageEncoder | None = None) -> list[Prompt]:
        """The training prompts: `source.files` (a built-in task generates them from `seed`). `images`
        encodes input images (mmu)."""
        return self.read_files(source.files, source, images)

    def heldout(self, source) -> list[Prompt]:
        """Prompts never trained on, evaluated when eval.files is empty ([]: no such split)."""
        return []

    def eval_prompts(self, files: list[str], source) -> list[Prompt]:
        """eval.files, read with the same fields and checks as this task's own files."""
        return self.read_files(files, source)

    @abstractmethod
    def warm_start_set(self, prompts: list[Prompt], seed: int, encoder: Callable[[], ImageEncoder]) -> list:
        """The warm start's examples for this task, in trainer/sft.warm_start's terms for its kind (text:
        (question, answer); mmu: (image codes, question, answer); t2i: (caption, image codes)), from the
        run's training prompts of this task. `encoder()` builds the run's image encoder (only a set with
        images calls it). Raises ValueError naming model.warm_start.tasks when there is nothing to teach."""

    def warm_start_problem(self, source) -> str | None:
        """Why this task has no warm-start set with `source` (None: it has one); checked with the config."""
        return None


def format_pairs(pairs: list[tuple[str, str]], seed: int = 0) -> list[tuple[str, str]]:
    """(question, answer of another question): the answer format and the answer distribution, none of the
    task. A seeded permutation, so it works for any (question, answer) list: every text task and mmu are
    warm-started this way."""
    perm = np.random.default_rng([seed, 13]).permutation(len(pairs))
    return [(q, pairs[j][1]) for (q, _), j in zip(pairs, perm)]
