"""CLIP reward on a tiny CLIP built from a config, trained a few contrastive steps, saved to disk and
loaded through the same from_pretrained path as openai/clip-vit-large-patch14."""

import json

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from rewards.api import RewardInput, RewardSpec
from rewards.clip_reward import ClipReward, ImagePreprocessor
from rewards.engine import LocalScorer

COLORS = {"red": (230, 20, 20), "green": (20, 200, 30), "blue": (20, 30, 220), "yellow": (240, 230, 20)}


def _tokenizer() -> CLIPTokenizer:
    vocab, merges = {}, []
    chars = sorted(set(bytes_to_unicode().values()))
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for w in list(COLORS) + ["image", "photo"]:
        toks = list(w[:-1]) + [w[-1] + "</w>"]
        while len(toks) > 1:
            merges.append((toks[0], toks[1]))
            vocab.setdefault(toks[0] + toks[1], len(vocab))
            toks = [toks[0] + toks[1]] + toks[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _image(color, rng):
    img = np.tile(np.array(color, np.uint8), (40, 56, 1)).astype(np.int16)
    return np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_clip")
    tok = _tokenizer()
    v = tok.get_vocab()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(v), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=v["<|endoftext|>"],
                         bos_token_id=v["<|startoftext|>"], pad_token_id=v["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    (d / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    model = CLIPModel(cfg)
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
