"""Text tasks read from files: `math` (every row has a gold answer, scored by the math reward) and `custom`
(answers optional; a row may name its own task, which routes it to the rewards that select that task).

    data: {task: math, files: [train.parquet], question_field: question, answer_field: answer}

The built-in text tasks (rl/tasks/repeat.py, rl/tasks/arith.py) are math tasks with generated prompts:
they share the evaluation on files, the warm start and the console's score defined here.
"""

from __future__ import annotations

from collections.abc import Callable

from rl.data import ImageEncoder, load_prompt_files
from rl.tasks.base import Task, format_pairs
from rollout.record import Prompt

# the math reward scores 1 for the right answer, so its mean over a step's rollouts is the answer accuracy
ANSWER_ACCURACY = ("acc", "reward/math/mean")


class MathFiles(Task):
    name = "math"
    kind = "text"
    reward_task = "math"
    console_metric = ANSWER_ACCURACY

    def read_files(self, files: list[str], source, images: ImageEncoder | None = None) -> list[Prompt]:
        return load_prompt_files(files, self.reward_task, source.question_field, source.answer_field,
                                 require_answer=self.requires_answer)

    def warm_start_set(self, prompts: list[Prompt], seed: int, encoder: Callable[[], ImageEncoder]) -> list:
        """(question, answer) pairs of the training prompts with answers (`warm_start_pairs`)."""
        pairs = self.warm_start_pairs([(p.question, p.answer) for p in prompts if p.answer], seed)
        if not pairs:
            raise ValueError("model.warm_start.tasks: text needs text prompts with answers "
                             "(data.task toy_arith, math, ...)")
        return pairs

    def warm_start_pairs(self, pairs: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
        """Each question with another question's answer: the answer format, not the mapping."""
        return format_pairs(pairs, seed)


class CustomFiles(MathFiles):
    name = "custom"
    reward_task = "custom"  # the rows' default task; a row's own "task" field overrides it
    requires_answer = False
