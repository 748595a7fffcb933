"""The embedded toy task (`data.task: toy_copy`): "Repeat the number: 7" -> "7".

An untrained tiny policy gets it right only when a random digit happens to come last; a policy that
learns to read the prompt always does. `data.toy_size` prompts, no held-out split; scored like math.
"""

from __future__ import annotations

import random

from rl.data import ImageEncoder
from rl.tasks.text_files import MathFiles
from rollout.record import Prompt


def copy_prompts(size: int, seed: int, task: str) -> list[Prompt]:
    """`size` seeded prompts carrying `task`, ids toy-0 .. toy-{size - 1}."""
    rng = random.Random(seed)
    rows = []
    for i in range(size):
        n = rng.randrange(1, 10)  # no 0: "000" would equal 0 and reward a degenerate all-zeros answer
        rows.append(Prompt(prompt_id=f"toy-{i}", task=task, question=f"Repeat the number: {n}", answer=str(n)))
    return rows


class ToyCopy(MathFiles):
    name = "toy_copy"
    builtin = True

    def prompts(self, source, seed: int, images: ImageEncoder | None = None) -> list[Prompt]:
        return copy_prompts(source.toy_size, seed, self.reward_task)
