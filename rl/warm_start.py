"""The warm start: seconds of SFT that teach the tiny policy parts of its tasks, never a task itself.

Every real UniGRPO run starts from an SFT model; a freshly built tiny policy knows nothing, and from
nothing RL finds no reward to follow. `model.warm_start.tasks` picks the kinds whose sets to train on
together (trainer/sft.py); each kind's task supplies its set (rl/tasks, `Task.warm_start_set`):

    text  the training questions paired with other questions' answers: the answer format, not the
          mapping; for the demo's sums also "How many had?" -> a (reading one number)   (rl/tasks/arith.py)
    mmu   the same for image questions: each image and question with another row's answer  (rl/tasks/mmu.py)
    t2i   "a red image" -> all red, "a white square in the top left" -> a white square: colour words and
          position words, never together; the task's captions combine them              (rl/tasks/t2i.py)
"""

from __future__ import annotations

import json
from pathlib import Path

from rl.data import TASK_KINDS, ImageEncoder
from rl.tasks import get_task

MARKER = "warm_start.json"  # written into the policy directory once the warm start has run
SFT_SETS = {"text": "pairs", "mmu": "mmu", "t2i": "images"}  # each kind's argument of trainer/sft.warm_start


def warm_start_sets(cfg, dataset) -> dict[str, list]:
    """The warm-start examples of `cfg.model.warm_start.tasks`: {"pairs": [(question, answer)],
    "mmu": [(image codes, question, answer)], "images": [(caption, image codes)]}."""
    ws = cfg.model.warm_start
    sets = {name: [] for name in SFT_SETS.values()}
    for kind in (k for k in TASK_KINDS if k in ws.tasks):
        name, _ = cfg.data.task_source(kind)
        sets[SFT_SETS[kind]] = get_task(name).warm_start_set(dataset.prompts_of_kind(kind), ws.seed,
                                                             lambda: _image_encoder(cfg))
    return sets


def _image_encoder(cfg) -> ImageEncoder:
    """The run's image tokenizer at rollout.image.resolution (what the rollouts' images are made of)."""
    from policy.palette_tokenizer import load_image_tokenizer

    return ImageEncoder(load_image_tokenizer(cfg.model.image_tokenizer), cfg.rollout.image.resolution)


def run_warm_start(cfg, dataset, policy_path: str | Path) -> dict | None:
    """SFT the policy at `policy_path` in place on the warm-start sets; once (None when it already ran)."""
    from trainer.sft import warm_start

    marker = Path(policy_path) / MARKER
    if marker.exists():
        return None
    ws = cfg.model.warm_start
    sets = warm_start_sets(cfg, dataset)
    info = warm_start(str(policy_path), sets["pairs"], cfg.rollout.text.gen_length, ws.steps, ws.batch_size, ws.lr,
                      ws.seed, think=cfg.data.think, images=sets["images"], max_text_len=cfg.rollout.image.max_text_len,
                      mmu=sets["mmu"])
    marker.write_text(json.dumps(info))
    return info
