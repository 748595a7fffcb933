"""Load a policy directory (a downloaded MMaDA-8B or a tiny test policy) through one code path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from policy.config import MMadaConfig
from policy.model import MMadaModelLM
from policy.vocab import VocabLayout

WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".index.json")
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


def weight_files(policy_path: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or shards with an index)."""
    path = Path(policy_path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return {name: path / f for name, f in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open

    single = path / "model.safetensors"
    with safe_open(str(single), "pt") as f:
        return dict.fromkeys(f.keys(), single)


def load_model_to_device(path: str | Path, dtype: torch.dtype, device: str | torch.device) -> MMadaModelLM:
    """The model built on the meta device (no random init, no memory), given its dtype there, allocated
    once on `device`, and filled from the safetensors files read straight onto `device` (a GPU worker
    never holds a host copy of the weights). Every parameter must come from the checkpoint."""
    from safetensors.torch import load_file

    path = Path(path)
    with torch.device("meta"):
        model = MMadaModelLM(MMadaConfig.from_pretrained(path))
    model = model.to(dtype).to_empty(device=device)
    files = sorted(set(weight_files(path).values()))
    loaded: set[str] = set()
    for f in files:
        state = load_file(str(f), device=str(device))
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise KeyError(f"{f}: weights the model does not have: {result.unexpected_keys[:5]}")
        loaded |= set(state)
        del state
    missing = sorted(set(dict(model.named_parameters())) - loaded)
    if missing:
        raise KeyError(f"{path}: the checkpoint lacks {missing[:5]} ({len(missing)} parameters)")
    return model


def load_policy(path: str | Path, dtype: str | torch.dtype = "float32", device: str = "cpu") -> Policy:
    """config.json + safetensors weights + tokenizer from a local directory; vocabulary cross-checked."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a policy directory: no config.json")
    tokenizer, layout = load_tokenizer_and_layout(path)
    model = load_model_to_device(path, resolve_dtype(dtype), device)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer, layout=layout)


def save_policy(directory: str | Path, config: MMadaConfig, state: dict[str, torch.Tensor], source: str | Path) -> Path:
    """A `load_policy`-loadable directory: config.json, model.safetensors (`state`, MMaDA names) and the
    tokenizer files of the policy directory `source` (every file there but config and weights)."""
    import shutil

    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", metadata={"format": "pt"})
    for f in Path(source).iterdir():
        if f.is_file() and f.name != "config.json" and not f.name.endswith(WEIGHT_FILES):
            shutil.copy2(f, out / f.name)
    return out
