"""LoRA adapters on the MMaDA model: wrapping (learner), naming (the wire), merging (rollout, export).

A targeted projection W (d_out x d_in) of every block keeps its pre-trained weight W0 frozen and learns
a low-rank update (Hu et al. 2021, through `peft`):

    W x  =  W0 x + s * B (A x),        A: r x d_in (random init), B: d_out x r (zero init), s = alpha / r

so the policy starts exactly at the base (B = 0), and only A and B are trained, stored and published:
r * (d_in + d_out) numbers per projection instead of d_in * d_out.

Three views of one adapted model, each defined once here:
  training     `wrap(model, settings)`: the peft model (its forward keeps MMadaModelLM's signature:
               PeftModel passes every argument through, `lm_head` and `config` read through)
  reference    `base_view(peft_model)`: the same module with the adapters disabled = the frozen base
               policy pi_ref, without a second copy of the weights
  wire/export  `adapter_tensors` (names `<MMaDA module>.lora_A` / `.lora_B`, e.g.
               `model.transformer.blocks.0.q_proj.lora_A`) and `merged_tensors` (every weight in the
               reference MMaDA layout, targeted ones merged: W = W0 + s * B A)

`AdapterApplier` is the receiving end (rollout workers): it keeps W0 of the targeted projections at the
first publication and sets W = merge(W0, A, B, s) at every one, with the very `merge` the export uses, so
a worker samples from exactly the weights an exported policy holds (bit for bit), at the speed of an
unadapted model (no extra matmuls per denoising step). Cost: one copy of the targeted base weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# the projections of an MMaDA / LLaDA block (policy/model.py); the LM head (`model.transformer.ff_out`) and
# the embeddings are never adapted
BLOCK_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
WIRE_SUFFIXES = (".lora_A", ".lora_B")
PEFT_PREFIX = "base_model.model."
ADAPTER = "default"  # peft's name of the one adapter
ADAPTER_DIR = "adapter"  # in a checkpoint: the adapters as a peft adapter directory
BASE_FILE = "unigrpo_base.json"  # in ADAPTER_DIR: the base policy directory the adapters belong to


@dataclass
class LoraSettings:
    """`learner.lora`: None in the config = full fine-tuning."""

    rank: int = 16
    alpha: float = 32.0  # s = alpha / rank
    dropout: float = 0.0  # on the adapter's input while training (pi_old / pi_ref passes run without it)
    target_modules: tuple[str, ...] = BLOCK_PROJECTIONS

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        unknown = sorted(set(self.target_modules) - set(BLOCK_PROJECTIONS))
        if unknown or not self.target_modules:
            raise ValueError(f"target_modules {list(self.target_modules)}: expected a non-empty subset of "
                             f"{list(BLOCK_PROJECTIONS)}")
        if self.rank < 1:
            raise ValueError(f"rank={self.rank}: expected >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: expected 0 <= dropout < 1")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def module_regex(self) -> str:
        """peft's target: the named projections inside blocks only (a bare `ff_out` would also match the head)."""
        return r".*\.blocks\.\d+\.(" + "|".join(map(re.escape, self.target_modules)) + r")"


def projection_shapes(config) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of each block projection of an MMaDA config (policy/model.py's LLaDABlock)."""
    d, kv, h = config.d_model, config.n_kv_heads * config.head_dim, config.mlp_hidden_size
    return {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "attn_out": (d, d),
            "ff_proj": (h, d), "up_proj": (h, d), "ff_out": (d, h)}


def adapter_numel(config, settings: LoraSettings) -> int:
    """Numbers in one set of adapters, from shapes: n_layers * sum over targets of r * (d_in + d_out)."""
    shapes = projection_shapes(config)
    return config.n_layers * sum(settings.rank * sum(shapes[t]) for t in settings.target_modules)


# ---- training side -------------------------------------------------------------------------------------
def wrap(model: nn.Module, settings: LoraSettings, seed: int = 0) -> nn.Module:
    """The peft model: base frozen, adapters trainable. A's random init is drawn from `seed` (every rank
    draws the same adapters, and the caller's RNG stream is left as it was)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.module_regex(), bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def is_adapted(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class BaseView:
    """The adapted model with its adapters disabled: the frozen base policy (pi_ref), no second copy.
    Called like the model; every other attribute (`lm_head`, `config`) is the model's."""

    def __init__(self, peft_model: nn.Module) -> None:
        self._peft_model = peft_model

    def __call__(self, *args, **kwargs):
        with self._peft_model.disable_adapter():
            return self._peft_model(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._peft_model, name)


def base_view(peft_model: nn.Module) -> BaseView:
    return BaseView(peft_model)


def reference_name(peft_name: str) -> str:
    """peft's parameter name -> the MMaDA layout's (`base_model.model.X.base_layer.weight` -> `X.weight`)."""
    return peft_name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def _adapted_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(MMaDA module name, peft LoRA layer) of every adapted projection, in model order."""
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and ADAPTER in getattr(module, "lora_A", {}):
            yield name.removeprefix(PEFT_PREFIX), module


def adapter_entries(model: nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(wire name, dtype, shape) of every adapter tensor, in the order `adapter_tensors` yields them."""
    return [(name, t.dtype, tuple(t.shape)) for name, t in _adapter_params(model)]


def _adapter_params(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, module in _adapted_modules(model):
        yield name + ".lora_A", module.lora_A[ADAPTER].weight
        yield name + ".lora_B", module.lora_B[ADAPTER].weight


def adapter_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(wire name, CPU copy) of every adapter tensor: what one publication sends."""
    for name, t in _adapter_params(model):
        yield name, t.detach().cpu().clone()


def adapter_scale(model: nn.Module) -> float:
    scales = {float(m.scaling[ADAPTER]) for _, m in _adapted_modules(model)}
    if len(scales) != 1:
        raise ValueError(f"adapters with different scales {sorted(scales)}: expected one alpha / rank")
    return scales.pop()


def merge(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """W = W0 + s * B A, computed in fp32, in W0's dtype (the one merge of the learner's export and the workers)."""
    delta = b.to(torch.float32) @ a.to(torch.float32)
    return (w0.to(torch.float32) + scale * delta).to(w0.dtype)


@torch.no_grad()
def merged_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(MMaDA name, CPU tensor) of every weight of the merged policy: the reference layout, no adapter names."""
    adapted = dict(_adapted_modules(model))
    scale = adapter_scale(model) if adapted else 0.0
    for name, p in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        out = reference_name(name)
        module = adapted.get(out.removesuffix(".weight")) if out.endswith(".weight") else None
        w = p.detach()
        if module is not None:
            w = merge(w, module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight, scale)
        yield out, w.cpu().clone()


@contextmanager
def adapters_disabled(model: nn.Module):
    """The base policy inside the block when `model` is adapted; the model as it is otherwise."""
    if is_adapted(model):
        with model.disable_adapter():
            yield
    else:
        yield


# ---- checkpoints and export ------------------------------------------------------------------------------
def save_adapter(peft_model: nn.Module, directory: Path, base_path: str | Path) -> Path:
    """peft's adapter directory (adapter_config.json, adapter_model.safetensors) plus the base it adapts."""
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(directory))
    (directory / BASE_FILE).write_text(json.dumps({"base_policy": str(Path(base_path).resolve())}))
    return directory


def base_of(adapter_dir: Path) -> Path:
    """The base policy directory the adapters in `adapter_dir` were trained on."""
    return Path(json.loads((adapter_dir / BASE_FILE).read_text())["base_policy"])


def load_adapted(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """`model` (the base policy) with the adapters of `adapter_dir` (from `save_adapter`)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir))


# ---- receiving side ------------------------------------------------------------------------------------
def split_adapter_state(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{`X.lora_A`: A, `X.lora_B`: B, ...} -> {X: (A, B)}; every module needs both."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in state.items():
        suffix = next((s for s in WIRE_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise KeyError(f"{name!r} is not an adapter tensor (expected a name ending in {WIRE_SUFFIXES})")
        modules.setdefault(name.removesuffix(suffix), {})[suffix] = t
    broken = sorted(m for m, parts in modules.items() if len(parts) != 2)
    if broken:
        raise KeyError(f"adapters without both lora_A and lora_B: {broken[:5]}")
    return {m: (parts[".lora_A"], parts[".lora_B"]) for m, parts in modules.items()}


class AdapterApplier:
    """A rollout worker's adapters: W0 of the targeted projections kept at the first publication; every
    publication sets W = merge(W0, A, B, s). One set of targets per run (a new set is refused)."""

    def __init__(self) -> None:
        self.base: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self, model: nn.Module, state: Mapping[str, torch.Tensor], scale: float) -> None:
        pairs = split_adapter_state(state)
        if self.base and set(pairs) != set(self.base):
            raise KeyError(f"adapters for {len(pairs)} modules, this worker holds the base of {len(self.base)}: "
                           f"new {sorted(set(pairs) - set(self.base))[:3]}, gone {sorted(set(self.base) - set(pairs))[:3]}")
        modules = dict(model.named_modules())
        problems = []
        for name, (a, b) in pairs.items():
            lin = modules.get(name)
            if not isinstance(lin, nn.Linear):
                problems.append(f"{name}: no such projection")
            elif tuple(a.shape) != (a.shape[0], lin.in_features) or tuple(b.shape) != (lin.out_features, a.shape[0]):
                problems.append(f"{name}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit a "
                                f"{lin.out_features} x {lin.in_features} projection")
        if problems:  # nothing is changed unless every adapter fits
            raise ValueError(f"adapters do not match the model: {problems[:5]} ({len(problems)})")
        if not self.base:
            self.base = {name: modules[name].weight.detach().clone() for name in pairs}
        for name, (a, b) in pairs.items():
            w = modules[name].weight
            w.copy_(merge(self.base[name], a.to(w.device), b.to(w.device), scale))
