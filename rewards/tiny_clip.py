"""A tiny random CLIP directory in the openai/clip-vit-large-patch14 layout, built offline.

It stands in for the real CLIP only for size: the multimodal demo and the tests run the whole CLIP path
(decode -> Ray object store -> model reward actor -> batched CLIPModel -> weighted total) on CPU with
it. Its scores are those of random weights and mean nothing.

The tokenizer is byte-level BPE with no merges except for the given words (one token each), so no
vocabulary file has to be downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from rewards.clip_reward import CLIP_MEAN, CLIP_STD


def tiny_clip_tokenizer(words=()):
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab, merges = {}, []
    chars = sorted(set(bytes_to_unicode().values()))
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for w in words:
        toks = list(w[:-1]) + [w[-1] + "</w>"]
        while len(toks) > 1:
            merges.append((toks[0], toks[1]))
            vocab.setdefault(toks[0] + toks[1], len(vocab))
            toks = [toks[0] + toks[1]] + toks[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_clip_config(tokenizer, image_size: int = 32):
    from transformers import CLIPConfig

    v = tokenizer.get_vocab()
    return CLIPConfig(
        text_config=dict(vocab_size=len(v), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=v["<|endoftext|>"],
                         bos_token_id=v["<|startoftext|>"], pad_token_id=v["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)


def write_preprocessor_config(directory: str | Path, image_size: int = 32) -> None:
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size},
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}))


def build_tiny_clip(directory: str | Path, seed: int = 0, words=(), image_size: int = 32) -> Path:
    """Write a random tiny CLIP (config, safetensors, tokenizer, preprocessor config); return its path."""
    import torch
    from transformers import CLIPModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer(words)
    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config(tokenizer, image_size)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_preprocessor_config(directory, image_size)
    return directory
