"""CLIP reward on a tiny CLIP built from a config, trained a few contrastive steps, saved to disk and
loaded through the same from_pretrained path as openai/clip-vit-large-patch14."""


import numpy as np
import pytest
import torch
from transformers import CLIPModel

from rewards.api import RewardInput, RewardSpec
from rewards.clip_reward import ClipReward, ImagePreprocessor
from rewards.engine import LocalScorer
from rewards.tiny_clip import tiny_clip_config, tiny_clip_tokenizer, write_preprocessor_config

COLORS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (20, 30, 220), "yellow": (240, 230, 20)}


def _tokenizer():
    return tiny_clip_tokenizer(list(COLORS) + ["image", "photo"])


def _image(color, rng):
    img = np.tile(np.array(color, np.uint8), (40, 56, 1)).astype(np.int16)
    return np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_clip")
    tok = _tokenizer()
    write_preprocessor_config(d)
    model = CLIPModel(tiny_clip_config(tok))
    pre = ImagePreprocessor(str(d))
    rng = np.random.default_rng(0)
    names = list(COLORS)
    texts = tok([f"a {n} image" for n in names], padding=True, return_tensors="pt")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):  # a few contrastive steps on (color image, color caption) pairs
        px = torch.from_numpy(pre([_image(COLORS[n], rng) for n in names]))
        loss = model(input_ids=texts["input_ids"], attention_mask=texts["attention_mask"], pixel_values=px,
                     return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def test_matching_pairs_score_above_shuffled(clip_dir):
    reward = ClipReward(model_path=clip_dir)
    rng = np.random.default_rng(1)
    names = list(COLORS)
    imgs = [_image(COLORS[n], rng) for n in names]
    match = reward([RewardInput("mmu", "describe", f"a {n} image", None, im) for n, im in zip(names, imgs)])
    shuffled = reward([RewardInput("mmu", "describe", f"a {names[(i + 1) % 4]} image", None, im)
                       for i, im in enumerate(imgs)])
    assert all(r.status == "ok" for r in match + shuffled)
    assert all(0.0 <= r.value <= 100.0 for r in match + shuffled)
    assert np.mean([r.value for r in match]) > np.mean([r.value for r in shuffled]) + 10
    assert sum(m.value > s.value for m, s in zip(match, shuffled)) >= 3
    # text-to-image: the prompt is the text; a sample without an image is reported, not crashed
    t2i = reward([RewardInput("t2i", "a red image", "", None, imgs[0]), RewardInput("t2i", "x", "", None, None)])
    assert t2i[0].status == "ok" and t2i[0].value == pytest.approx(match[0].value, rel=1e-4)
    assert t2i[1].status == "unparsable"


def test_clip_weight_in_scorer(clip_dir):
    scorer = LocalScorer([RewardSpec("clip", weight=0.1)], model_init={"model_path": clip_dir})
    img = _image(COLORS["blue"], np.random.default_rng(2))
    (s,) = scorer.score([RewardInput("mmu", "", "a blue image", None, img)])
    assert s.components["clip"].status == "ok"
    assert s.total == pytest.approx(0.1 * s.components["clip"].value)
