"""Small builders for one DeepSpeed rank: config, optimizer, LR schedule, engines, micro-batches.

Each function does one thing; `trainer/learner.py` composes them. DeepSpeed is imported lazily
(`import_deepspeed`) so that importing `trainer` stays cheap and the CPU settings are applied first.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.lora import LoraSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class LearnerConfig:
    lr: float = 1e-6  # dLLM-RL's RL learning rate for MMaDA; the paper's 5e-5 is its pre-training value
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lr_schedule: str = "constant"  # constant | cosine (both with linear warmup); counted in optimizer steps
    warmup_steps: int = 0
    total_steps: int = 1000  # optimizer steps (mu per update) for the cosine schedule
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # global grad-norm clip; 0 disables
    micro_batch_tokens: int = 8192  # token budget of one forward/backward (rows * padded length)
    deepspeed_config: str = "configs/deepspeed/zero2.json"
    zero_stage: int | None = None  # overrides the JSON's stage
    bf16: str | bool = "auto"  # auto: bf16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    sliced_load: bool = True  # ZeRO-3: build under zero.Init, each rank reads only its slice (trainer/sharded_load.py)
    autocast_bf16: bool = False  # bf16 autocast of forward/backward on CPU (AVX-512 bf16); fp32 weights+optimizer
    seed: int = 0
    keep_versions: int = 0  # rollout.max_staleness: weights of this many past versions kept (trainer/behaviour.py)
    deepspeed_overrides: dict[str, Any] = field(default_factory=dict)  # merged into the JSON
    lora: LoraSettings | None = None  # adapters only (policy/lora.py, docs/lora.md); None = full fine-tuning

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        if self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be >= 1")
        if self.bf16 not in ("auto", True, False):
            raise ValueError(f"bf16={self.bf16!r}: expected 'auto', True or False")
        self.betas = tuple(self.betas)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)


# ---- DeepSpeed import and config ---------------------------------------------------------------
def import_deepspeed():
    """deepspeed, set up for this machine: CPU accelerator without a GPU, no JIT shared-memory op."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def deep_merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_path(path: str | Path) -> Path:
    """Absolute path; relative paths that do not exist from the cwd are taken from the repository root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return (REPO_ROOT / p).resolve()


def load_deepspeed_config(cfg: LearnerConfig, world_size: int, use_bf16: bool) -> dict:
    """The JSON under configs/deepspeed/, with the values the learner owns filled in.

    Batch sizes are bookkeeping only: the learner feeds micro-batches itself and, with
    `managed_gradient_accumulation: false`, every `engine.step()` is one optimizer step over all
    the backward passes since the last one.
    """
    path = resolve_path(cfg.deepspeed_config)
    ds = json.loads(path.read_text())
    autos = [k for k, v in _flatten(ds) if v == "auto"]
    if autos:
        raise ValueError(f"{path}: 'auto' values are not supported ({autos}); write explicit values")
    ds = deep_merge(ds, cfg.deepspeed_overrides)
    # learner.grad_clip is the one place for clipping: a JSON that says otherwise is an error, not overwritten
    if "gradient_clipping" in ds and float(ds["gradient_clipping"]) != float(cfg.grad_clip):
        raise ValueError(f"{path}: gradient_clipping {ds['gradient_clipping']} contradicts learner.grad_clip "
                         f"{cfg.grad_clip}; remove it from the JSON (learner.grad_clip sets it)")
    ds.update(
        train_micro_batch_size_per_gpu=1,
        gradient_accumulation_steps=1,
        train_batch_size=world_size,
        gradient_clipping=float(cfg.grad_clip),
        managed_gradient_accumulation=False,
    )
    # check_grad_overflow: the ZeRO optimizer skips a step whose gradient norm is NaN/inf (it always does
    # in fp32); never let a JSON turn that off
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": bool(use_bf16), "check_grad_overflow": True}
    ds.pop("fp16", None)
    ds.pop("optimizer", None)  # a client torch AdamW is passed instead (no FusedAdam JIT build)
    ds.pop("scheduler", None)
    if cfg.zero_stage is not None:
        ds.setdefault("zero_optimization", {})["stage"] = int(cfg.zero_stage)
    return ds


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def zero_stage_of(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def resolve_bf16(cfg: LearnerConfig) -> bool:
    return torch.cuda.is_available() if cfg.bf16 == "auto" else bool(cfg.bf16)


# ---- optimizer and LR schedule -------------------------------------------------------------------
def build_optimizer(model: torch.nn.Module, cfg: LearnerConfig) -> torch.optim.Optimizer:
    """torch AdamW (DeepSpeed's FusedAdam would JIT-compile on CPU). No decay on norms (1-D params)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)


def lr_multiplier(step: int, cfg: LearnerConfig) -> float:
    """Linear warmup over `warmup_steps`, then constant or cosine decay to `min_lr_ratio`."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: LearnerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg))


# ---- engines -------------------------------------------------------------------------------------
def build_train_engine(model: torch.nn.Module, cfg: LearnerConfig, ds_config: dict):
    deepspeed = import_deepspeed()
    optimizer = build_optimizer(model, cfg)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=build_lr_scheduler(optimizer, cfg), config=ds_config
    )
    return engine, scheduler


def build_reference(model: torch.nn.Module, ds_config: dict):
    """The frozen reference policy: sharded like the learner under ZeRO-3, a plain module otherwise."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    if zero_stage_of(ds_config) < 3:
        return model
    deepspeed = import_deepspeed()
    ref_config = {k: v for k, v in ds_config.items() if k not in ("gradient_clipping",)}
    engine, *_ = deepspeed.initialize(model=model, config=ref_config)
    engine.eval()
    return engine.module


# ---- micro-batches -------------------------------------------------------------------------------
def rows_per_micro_batch(seq_len: int, micro_batch_tokens: int) -> int:
    return max(1, micro_batch_tokens // seq_len)


def num_micro_batches(shard_rows: list[int], seq_len: int, micro_batch_tokens: int) -> int:
    """One count for every rank: ZeRO-3 gathers parameters in every forward, so all ranks must run
    the same number of forwards and backwards."""
    return max(math.ceil(n / rows_per_micro_batch(seq_len, micro_batch_tokens)) for n in shard_rows)


def split_rows(num_rows: int, num_micro: int) -> list[np.ndarray]:
    """`num_micro` contiguous, nearly equal row ranges (some may be empty on a short shard)."""
    return np.array_split(np.arange(num_rows), num_micro)


# ---- RNG state ----------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    import random

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
