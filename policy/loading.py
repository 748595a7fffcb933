"""Load a policy directory (a downloaded MMaDA-8B or a tiny test policy) through one code path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from policy.config import MMadaConfig
from policy.model import MMadaModelLM
from policy.vocab import VocabLayout

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class Policy:
    model: MMadaModelLM
    tokenizer: PreTrainedTokenizerBase
    layout: VocabLayout


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_tokenizer_and_layout(path: str | Path) -> tuple[PreTrainedTokenizerBase, VocabLayout]:
    path = Path(path)
    config = MMadaConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    layout = VocabLayout.from_model_config(config)
    layout.check_tokenizer(tokenizer)
    return tokenizer, layout


def load_policy(path: str | Path, dtype: str | torch.dtype = "float32", device: str = "cpu") -> Policy:
    """config.json + safetensors weights + tokenizer from a local directory; vocabulary cross-checked."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a policy directory: no config.json")
    tokenizer, layout = load_tokenizer_and_layout(path)
    model = MMadaModelLM.from_pretrained(path, dtype=resolve_dtype(dtype)).to(device)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer, layout=layout)
