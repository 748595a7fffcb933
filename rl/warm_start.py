"""The warm start: seconds of SFT that teach the tiny policy parts of its tasks, never a task itself.

Every real UniGRPO run starts from an SFT model; a freshly built tiny policy knows nothing, and from
nothing RL finds no reward to follow. `model.warm_start.tasks` picks the sets (trainer/sft.py trains on
them together):

    text  the training questions paired with other questions' answers: the answer format, not the
          mapping; for the demo's sums also "How many had?" -> a (reading one number)   (rl/arith.py)
    mmu   the same for image questions: each image and question with another row's answer
    t2i   "a red image" -> all red, "a white square in the top left" -> a white square: colour words and
          position words, never together; the task's captions combine them              (rl/shapes.py)
"""

from __future__ import annotations

import json
from pathlib import Path

from rl.arith import format_pairs, warm_start_pairs

MARKER = "warm_start.json"  # written into the policy directory once the warm start has run


def task_prompts(dataset, kind: str) -> list:
    """The prompts of one task kind in a PromptDataset or a MixtureDataset (rl/data.py)."""
    if hasattr(dataset, "datasets"):
        return list(dataset.datasets[kind].prompts) if kind in dataset.datasets else []
    return [p for p in getattr(dataset, "prompts", []) if p.kind == kind]


def warm_start_sets(cfg, dataset) -> dict[str, list]:
    """The warm-start examples of `cfg.model.warm_start.tasks`: {"pairs": [(question, answer)],
    "mmu": [(image codes, question, answer)], "images": [(caption, image codes)]}."""
    ws = cfg.model.warm_start
    sets = {"pairs": [], "mmu": [], "images": []}
    if "text" in ws.tasks:
        texts = [p for p in task_prompts(dataset, "text") if p.answer]
        sets["pairs"] = warm_start_pairs([(p.question, p.answer) for p in texts], ws.seed)
        if not sets["pairs"]:
            raise ValueError("model.warm_start.tasks: text needs text prompts with answers (data.task toy_arith, math, ...)")
    if "mmu" in ws.tasks:
        rows = [p for p in task_prompts(dataset, "mmu") if p.answer]
        if not rows:
            raise ValueError("model.warm_start.tasks: mmu needs mmu prompts with answers (data.mmu)")
        shuffled = format_pairs([(p.question, p.answer) for p in rows], ws.seed)
        sets["mmu"] = [(p.image_codes, q, a) for p, (q, a) in zip(rows, shuffled)]
    if "t2i" in ws.tasks:
        from policy.palette_tokenizer import load_image_tokenizer
        from rl import shapes
        from rl.data import ImageEncoder

        size = cfg.rollout.image.resolution
        encoder = ImageEncoder(load_image_tokenizer(cfg.model.image_tokenizer), size)
        sets["images"] = [(caption, encoder.encode(png, "warm start")) for caption, png in shapes.t2i_warm_start_rows(size)]
    return sets


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
