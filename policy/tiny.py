"""Tiny stand-ins for MMaDA-8B: a character-level tokenizer and a small random policy.

They exist only for size. A tiny policy directory has exactly the shape of a downloaded MMaDA-8B
directory (config.json, safetensors weights, tokenizer files) and is loaded by the same
`policy.loading.load_policy` path; only the numbers differ. The tokenizer is character-level so that
a toy task's answers are reachable by an untrained model (every digit is one token).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from policy.config import MMadaConfig
from policy.model import MMadaModelLM
from policy.vocab import TASK_TOKENS, TEXT_SPECIAL_TOKENS, VocabLayout

UNK = "<|unk|>"
# Ordinary text pieces that MMaDA's LLaDA tokenizer spells with several tokens; one token each here so
# that a tiny model can produce the reasoning format at all.
TEXT_ADDED_TOKENS = ["<think>", "</think>"]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Printable ASCII + newline, one token per character, plus LLaDA's and MMaDA's special tokens."""
    chars = list(dict.fromkeys(string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")))
    vocab = {UNK: 0}
    for ch in chars:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    specials = list(TEXT_SPECIAL_TOKENS.values()) + list(TASK_TOKENS.values())
    tok.add_special_tokens(specials)
    tok.add_tokens(TEXT_ADDED_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        bos_token=TEXT_SPECIAL_TOKENS["bos_id"],
        eos_token=TEXT_SPECIAL_TOKENS["eos_id"],
        pad_token=TEXT_SPECIAL_TOKENS["eos_id"],
        mask_token=TEXT_SPECIAL_TOKENS["mask_id"],
        clean_up_tokenization_spaces=False,
    )


def tiny_config(
    layout: VocabLayout,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    mlp_hidden_size: int | None = None,
    max_sequence_length: int = 1024,
) -> MMadaConfig:
    return MMadaConfig(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        mlp_hidden_size=mlp_hidden_size or 3 * d_model,
        vocab_size=layout.vocab_size,
        max_sequence_length=max_sequence_length,
        mask_token_id=layout.mask_id,
        codebook_size=layout.codebook_size,
        eos_token_id=layout.eos_id,
        pad_token_id=layout.pad_id,
        bos_token_id=layout.bos_id,
        vocab_layout=layout.to_dict(),
        architectures=["MMadaModelLM"],
    )


@torch.no_grad()
def scaled_init_(model: torch.nn.Module) -> None:
    """Re-initialise for a model this small: Linear weights ~ N(0, 1 / fan_in), embeddings ~ N(0, 1).
    LLaDA's N(0, 0.02) is sized for d_model = 4096; at d_model = 64 it starts the model with near-uniform
    attention and tiny outputs, and even supervised training of the demo task sits on a plateau for over
    100 steps (docs/learner.md)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.normal_(0.0, module.weight.shape[1] ** -0.5)
        elif isinstance(module, torch.nn.Embedding):
            module.weight.normal_(0.0, 1.0)


def build_tiny_policy(
    directory: str | Path,
    codebook_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    init: str = "llada",
    **config_kwargs,
) -> Path:
    """Write a random tiny policy directory (config, weights, tokenizer); return its path.
    init: "llada" (the model's own N(0, 0.02)) or "scaled" (`scaled_init_`)."""
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer()
    layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=codebook_size)
    torch.manual_seed(seed)
    model = MMadaModelLM(tiny_config(layout, **config_kwargs))
    if init == "scaled":
        scaled_init_(model)
    elif init != "llada":
        raise ValueError(f"init must be 'llada' or 'scaled', got {init!r}")
    model = model.to(dtype)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
