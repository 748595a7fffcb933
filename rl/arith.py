"""The demo task: templated addition word problems with a held-out split, and its format-only SFT set.

    "Mia has 3 cups and gets 4 more. How many now?"  ->  "7"

Prompts: every (name, object, a, b) of NAMES x OBJECTS x [1, MAX]^2. All names have three letters and
all objects four, so every prompt has the same length and the numbers sit at the same positions (a
tiny policy learns to read them within the demo's budget). The split is by prompt: a seeded 20% is
held out and never trained on; its questions are new wordings (name and object) of sums the training
prompts also ask, so held-out accuracy measures whether the policy reads and adds the numbers in any
wording, not recall of a prompt.

Warm start (`format_pairs`): the training prompts paired with the answers of *other* training prompts
(a seeded permutation). Masked-diffusion SFT on them teaches the answer format (a number, then EOS)
and the marginal distribution of answers, but carries no information about which answer belongs to
which question: the SFT policy answers near chance, and RL has to learn the addition.
"""

from __future__ import annotations

import numpy as np

NAMES = ("Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy")
OBJECTS = ("pens", "cats", "cups", "hats", "keys")
MAX_TERM = 5  # a, b in [1, MAX_TERM]: answers 2..10
HELDOUT_FRACTION = 0.2
TEMPLATE = "{name} has {a} {obj} and gets {b} more. How many now?"


def arith_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows {id, question, answer}; the split is a seeded permutation of all prompts."""
    rows = []
    for name in NAMES:
        for obj in OBJECTS:
            for a in range(1, MAX_TERM + 1):
                for b in range(1, MAX_TERM + 1):
                    rows.append({"question": TEMPLATE.format(name=name, obj=obj, a=a, b=b), "answer": str(a + b)})
    for i, r in enumerate(rows):
        r["id"] = f"arith-{i}"
    order = np.random.default_rng([seed, 11]).permutation(len(rows))
    cut = int(round(len(rows) * (1 - HELDOUT_FRACTION)))
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


def format_pairs(pairs: list[tuple[str, str]], seed: int = 0) -> list[tuple[str, str]]:
    """(question, answer of another question): the format and answer distribution, none of the task.
    Works for any (question, answer) list, so any text task can be warm-started this way."""
    perm = np.random.default_rng([seed, 13]).permutation(len(pairs))
    return [(q, pairs[j][1]) for (q, _), j in zip(pairs, perm)]
