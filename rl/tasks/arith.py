"""The demo task (`data.task: toy_arith`): templated addition word problems with a held-out split, and
its warm-start set.

    "Mia has 3 cups and gets 4 more. How many now?"  ->  "7"

Pairs (a, b): for every sum in SUMS, PAIRS_PER_SUM pairs of digits 1..9 (seeded), so every answer is
equally common. That matters for RL from reward alone: with the full grid of sums the commonest answer
is right for a fifth of the prompts, and a policy that cannot yet read the numbers is pulled onto it
within ~20 steps, after which every group has zero reward variance and learning stops (measured,
docs/learner.md). With balanced answers no single answer beats chance (1 / len(SUMS)).

Prompts: every (name, object, a, b) of NAMES x OBJECTS x pairs. All names have three letters and all
objects four, so every prompt has the same length and the numbers sit at the same positions. The split
is by prompt: a seeded 20% is held out and never trained on; its questions are new wordings (name and
object) of sums the training prompts also ask, so held-out accuracy measures whether the policy reads
and adds the numbers in any wording, not recall of a prompt.

Warm start (`warm_start_pairs`), the SFT every real UniGRPO run starts from, with none of the task:
  - the training questions paired with the answers of *other* training questions (`format_pairs` of
    rl/tasks/base.py, a seeded permutation): the answer format (a number, then EOS) and the answer
    distribution, but no information about which answer belongs to which question;
  - two reading questions per training prompt, "How many had?" -> a and "How many got?" -> b: the
    policy learns to find each number in the sentence (as any pretrained model can), never to add them.
After it the policy answers the held-out "How many now?" questions at chance (tests/test_demo_task.py);
RL has to learn the addition.
"""

from __future__ import annotations

import re

import numpy as np

from rl.data import ImageEncoder
from rl.tasks.base import format_pairs
from rl.tasks.text_files import MathFiles
from rollout.record import Prompt

NAMES = ("Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy")
OBJECTS = ("pens", "cats", "cups", "hats", "keys")
SUMS = range(4, 11)  # answers 4..10: chance is 1/7
PAIRS_PER_SUM = 3  # (1,3) (2,2) (3,1) is all that sums to 4
HELDOUT_FRACTION = 0.2
TEMPLATE = "{name} has {a} {obj} and gets {b} more. How many {ask}?"
ASK_SUM, ASK_FIRST, ASK_SECOND = "now", "had", "got"  # one length: the numbers keep their positions
_PROMPT = re.compile(TEMPLATE.replace(".", r"\.").replace("?", r"\?")
                     .format(name=r"\w+", obj=r"\w+", a=r"(\d+)", b=r"(\d+)", ask=ASK_SUM))


def digit_pairs(seed: int = 0) -> list[tuple[int, int]]:
    """PAIRS_PER_SUM seeded pairs of digits 1..9 for every sum in SUMS."""
    rng = np.random.default_rng([seed, 7])
    pairs = []
    for s in SUMS:
        candidates = [(a, s - a) for a in range(1, 10) if 1 <= s - a <= 9]
        pick = sorted(rng.choice(len(candidates), PAIRS_PER_SUM, replace=False))
        pairs += [candidates[i] for i in pick]
    return pairs


def arith_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows {id, question, answer}; the split is a seeded permutation of all prompts."""
    rows = [{"question": TEMPLATE.format(name=name, obj=obj, a=a, b=b, ask=ASK_SUM), "answer": str(a + b)}
            for name in NAMES for obj in OBJECTS for a, b in digit_pairs(seed)]
    for i, r in enumerate(rows):
        r["id"] = f"arith-{i}"
    order = np.random.default_rng([seed, 11]).permutation(len(rows))
    cut = int(round(len(rows) * (1 - HELDOUT_FRACTION)))
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


def reading_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """For every demo prompt among `pairs`: "How many had?" -> a and "How many got?" -> b."""
    out = []
    for question, _ in pairs:
        m = _PROMPT.fullmatch(question)
        if m:
            stem = question[: -len(f"{ASK_SUM}?")]
            out += [(f"{stem}{ASK_FIRST}?", m.group(1)), (f"{stem}{ASK_SECOND}?", m.group(2))]
    return out


def warm_start_pairs(pairs: list[tuple[str, str]], seed: int = 0) -> list[tuple[str, str]]:
    """The warm-start set for (question, answer) training pairs: `format_pairs`, plus `reading_pairs`."""
    return format_pairs(pairs, seed) + reading_pairs(pairs)


def arith_prompts(seed: int, task: str) -> tuple[list[Prompt], list[Prompt]]:
    """`arith_rows` as (train, held-out) prompts carrying `task`."""
    return tuple([Prompt(prompt_id=r["id"], task=task, question=r["question"], answer=r["answer"]) for r in rows]
                 for rows in arith_rows(seed))


class ToyArith(MathFiles):
    """Prompts and held-out split from `data.seed`; eval.files, the console's score and the reward are
    math's; the warm start adds the reading pairs."""

    name = "toy_arith"
    builtin = True
    has_heldout = True

    def prompts(self, source, seed: int, images: ImageEncoder | None = None) -> list[Prompt]:
        return arith_prompts(seed, self.reward_task)[0]

    def heldout(self, source) -> list[Prompt]:
        return arith_prompts(source.seed, self.reward_task)[1]

    def warm_start_pairs(self, pairs: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
        return warm_start_pairs(pairs, seed)
