"""The warm start (rl/warm_start.py, trainer/sft.py): SFT rows laid out as the sampler sees them, and the
multimodal demo's t2i set teaches the parts of a caption, not the task."""

from pathlib import Path

import numpy as np
import torch

from policy.image_io import tensor_to_uint8
from policy.loading import load_policy
from policy.palette_tokenizer import load_image_tokenizer
from policy.prompts import t2i_prompt_ids, t2i_uncond_prompt_ids
from rewards.api import RewardInput
from rewards.examples.region_colour import region_colour
from rl import builders
from rl.config import load_config
from rl.data import build_run_dataset
from rl.tasks import shapes
from rl.warm_start import MARKER, run_warm_start, warm_start_sets
from rollout.image_sampler import generate_image
from trainer.sft import Example, sft_batch

ROOT = Path(__file__).resolve().parent.parent


def test_sft_batch_left_pads_hides_the_prompt_mask_and_never_scores_the_suffix():
    ids, attn, resp = sft_batch([Example([5, 6], [7, 8, 9]), Example([1, 2, 3, 4], [7, 8], [0, 0, 1, 1], [99])], 0)
    assert ids.tolist() == [[0, 0, 5, 6, 7, 8, 9], [1, 2, 3, 4, 7, 8, 99]]
    assert attn.tolist() == [[0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]]
    assert resp.tolist() == [[False, False, False, False, True, True, True],
                             [False, False, False, False, True, True, False]]


def test_t2i_warm_start_teaches_colours_and_positions_not_the_captions(tmp_path):
    """configs/tiny_multimodal.yaml's own warm start: afterwards the policy paints "a red image" red and puts
    "a white square in the top left" there, but draws the task's captions ("a red square in the top left")
    hardly better than the untrained policy: their IoU reward is what RL has to raise. Its text and mmu
    sets are the format only."""
    cfg = load_config(ROOT / "configs" / "tiny_multimodal.yaml", [f"run.dir={tmp_path}"])
    assert cfg.model.warm_start.tasks == ["text", "mmu", "t2i"]
    dataset = build_run_dataset(cfg)
    sets = warm_start_sets(cfg, dataset)
    images = sets["images"]
    n = builders.num_image_tokens(cfg)
    assert len(images) == 8 and all(len(codes) == n for _, codes in images)
    # text and mmu: every training question once, with another row's answer (right only by chance)
    for kind, rows in (("text", [(q, a) for q, a in sets["pairs"]]), ("mmu", [(q, a) for _, q, a in sets["mmu"]])):
        gold = dataset.prompts_of_kind(kind)
        assert [q for q, _ in rows] == [p.question for p in gold] and sorted(a for _, a in rows) == sorted(p.answer for p in gold)
        agree = np.mean([a == p.answer for (_, a), p in zip(rows, gold)])
        assert agree < 0.4, (kind, agree)  # chance: 1/9 (text), 1/4 (mmu)
    assert [c for c, _, _ in sets["mmu"]] == [p.image_codes for p in dataset.prompts_of_kind("mmu")]
    task_captions = {shapes.caption(c, q) for c in shapes.COLOURS for q in shapes.QUADRANTS}
    assert not {caption for caption, _ in images} & task_captions

    path = builders.build_policy(cfg, tmp_path)
    info = run_warm_start(cfg, dataset, path)
    assert info["loss_last10"] < 0.1 * info["loss_first10"] and (path / MARKER).is_file()
    assert run_warm_start(cfg, dataset, path) is None  # once

    policy = load_policy(path)
    tok, layout, palette = policy.tokenizer, policy.layout, load_image_tokenizer("palette")
    image_cfg = cfg.rollout.image

    def draw(captions):
        conds = [t2i_prompt_ids(tok, layout, c, n, image_cfg.max_text_len) for c in captions]
        uncond, uncond_mask = t2i_uncond_prompt_ids(tok, layout, n, image_cfg.max_text_len)
        out = generate_image(policy.model, torch.tensor([c for c, _ in conds]), torch.tensor([m for _, m in conds]),
                             torch.tensor([uncond]), torch.tensor([uncond_mask]), layout, builders.image_sampler_config(cfg),
                             torch.Generator().manual_seed(0))
        return [np.asarray(img) for img in tensor_to_uint8(palette.decode(out.codes))]

    def iou(img, colour, quadrant):
        gold = shapes.region_gold(colour, quadrant)
        return region_colour(RewardInput("t2i", "", "", gold, image=img), metric="iou").value

    reps = 4
    for colour in shapes.COLOURS:  # the colour words: most pixels of the canvas in that colour
        rgb = np.array(shapes.NAMED_COLOURS[colour])
        share = np.mean([(np.abs(img.astype(int) - rgb) <= 48).all(-1).mean() for img in draw([f"a {colour} image"] * reps)])
        assert share >= 0.8, (colour, share)
    white = [iou(img, "white", q) for q in shapes.QUADRANTS for img in draw([shapes.caption("white", q)] * reps)]
    assert np.mean(white) >= 0.8, white  # the position words
    task = [(c, q) for c in shapes.COLOURS for q in shapes.QUADRANTS]
    drawn = draw([shapes.caption(c, q) for c, q in task for _ in range(reps)])
    scores = [iou(img, c, q) for img, (c, q) in zip(drawn, [t for t in task for _ in range(reps)])]
    assert np.mean(scores) <= 0.2, np.mean(scores)  # the combination is not taught (RL reaches ~0.35)
