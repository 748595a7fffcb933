"""Builders: a validated RunConfig -> the runtime objects of a run, one small function each.

The config (rl/config.py) is schema and validation only; this module turns its sections into the things
the driver holds (torchtune's recipe shape: one builder per component, each doing one thing):

    policy_path = build_policy(cfg, run_dir)           model.path, or the tiny random policy built once
    start_ray(cfg)                                     join ray.address, or a local cluster on loopback
    groups      = build_groups(cfg, policy_path, run_dir)  the run's groups in its placement mode:
      rollout     = build_rollout_group(cfg, policy_path)    N Ray rollout workers   (rollout/group.py)
      rewards     = build_reward_pool(cfg, run_dir)          Ray reward actors       (rewards/pool.py)
      learner     = build_learner_group(cfg, policy_path)    M DeepSpeed ranks       (trainer/learner.py)
      publisher   = WeightPublisher(learner, rollout)        weights after every update (rl/weights.py)
    colocated: the learner ranks generate (rl/colocated.py); no rollout workers, nothing published

Each group reserves its own placement group (one bundle per actor) and fails at once, naming what it
asked for, when the cluster cannot hold it (policy/placement.py).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from policy.deadlines import DeadlinePolicy, Watchdog
from rewards.api import RewardSpec
from rl.config import ModelSection, RunConfig, runtime_kwargs
from rollout.image_sampler import ImageSamplerConfig
from rollout.text_sampler import TextSamplerConfig
from trainer.engine import LearnerConfig
from trainer.unigrpo import UniGRPOConfig


# ---- the policy ------------------------------------------------------------------------------------------
def build_policy(cfg: RunConfig, run_dir: Path) -> Path:
    """The policy directory: model.path, or the tiny random policy built once into the run directory."""
    model = cfg.model
    if model.path:
        path = Path(model.path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path={path}: not a policy directory (no config.json)")
        return path
    from policy.tiny import build_tiny_policy

    path = Path(run_dir) / "policy_init"
    if not (path / "config.json").is_file():
        spec = model.tiny.model_dump()
        build_tiny_policy(path, codebook_size=spec.pop("codebook_size"), seed=spec.pop("seed"), **spec)
    return path


def token_ranges(policy_path: str | Path):
    """The policy's EOS id and text / image token ranges (its VocabLayout), for the rollout store's
    cut-at-the-length-limit and odd-token-id flags (rl/dashboard/flags.py)."""
    from policy.config import MMadaConfig
    from policy.vocab import VocabLayout
    from rl.dashboard.flags import TokenRanges

    return TokenRanges.from_layout(VocabLayout.from_model_config(MMadaConfig.from_pretrained(policy_path)))


def rollout_dtype(model: ModelSection, on_gpu: bool) -> str:
    return model.dtype if model.dtype != "auto" else ("bfloat16" if on_gpu else "float32")


def num_image_tokens(cfg: RunConfig) -> int:
    """Image tokens per generated image: the tokenizer's own count, or MAGVIT-v2's (resolution / 16)^2."""
    if not cfg.model.image_tokenizer:
        return cfg.rollout.image.num_image_tokens
    from policy.palette_tokenizer import load_image_tokenizer

    return load_image_tokenizer(cfg.model.image_tokenizer).num_tokens(cfg.rollout.image.resolution)


# ---- the cluster -----------------------------------------------------------------------------------------
def actor_cpus(cfg: RunConfig, learner: bool = True) -> int:
    """Logical CPUs the run's actors ask for (one each; the phases of a step run one after another).
    Colocated: no rollout workers, the learner ranks generate."""
    rollout = cfg.rollout.num_workers if cfg.placement.mode == "disaggregated" else 0
    n = rollout + cfg.rewards.num_workers + cfg.rewards.num_model_workers
    return n + (cfg.learner.num_ranks if learner else 0)


def start_ray(cfg: RunConfig, learner: bool = True) -> None:
    """Join `ray.address` (or the cluster `ray job submit` names in RAY_ADDRESS), or start a local cluster on
    loopback with enough logical CPUs for every actor. A no-op when Ray is already initialised."""
    import ray

    from policy.placement import ensure_local_ray_env

    ensure_local_ray_env()
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        with python_signal_handlers():
            ray.init(address=address, log_to_driver=False)
        return
    # Logical CPUs for scheduling: every actor asks for some, and the phases of a step run one after
    # another, so a 2-core machine can host rollout, reward and learner actors side by side.
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, actor_cpus(cfg, learner) + 1)
    # address="local": a cluster of our own, even when a `ray start` cluster runs on this machine (plain
    # ray.init() would join that one, and then refuse num_cpus).
    with python_signal_handlers():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=cfg.ray.include_dashboard,
                 log_to_driver=False, _node_ip_address="127.0.0.1")


@contextmanager
def python_signal_handlers():
    """Ray's core installs a C++ crash handler for SIGTERM in the driver (a SIGTERM then aborts with a stack
    dump, rc -6); keep the process's own SIGINT/SIGTERM handlers (rl/cli.py: stop cleanly, exit 130)."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)


def build_watchdog(cfg: RunConfig) -> Watchdog:
    """One watchdog for every wait on an actor of the run (policy/deadlines.py)."""
    return Watchdog(DeadlinePolicy(**runtime_kwargs(cfg.ray.deadlines, DeadlinePolicy)))


# ---- rollout -----------------------------------------------------------------------------------------------
def text_sampler_config(cfg: RunConfig) -> TextSamplerConfig:
    return TextSamplerConfig(**runtime_kwargs(cfg.rollout.text, TextSamplerConfig))


def image_sampler_config(cfg: RunConfig) -> ImageSamplerConfig:
    return ImageSamplerConfig(**runtime_kwargs(cfg.rollout.image, ImageSamplerConfig))


def sampler_settings(cfg: RunConfig) -> dict:
    """What every rollout worker (or colocated rank) samples with, besides its model and device."""
    return {"text_config": text_sampler_config(cfg), "image_config": image_sampler_config(cfg),
            "max_text_len": cfg.rollout.image.max_text_len, "num_image_tokens": num_image_tokens(cfg),
            "image_tokenizer": cfg.model.image_tokenizer}


def build_rollout_group(cfg: RunConfig, policy_path: Path, watchdog: Watchdog | None = None):
    """The rollout group: its placement group and its workers (weights loaded straight to the device)."""
    from rollout.group import RolloutGroup

    section = cfg.rollout
    on_gpu = section.num_gpus_per_worker > 0
    return RolloutGroup.create(
        section.num_workers, str(policy_path), num_gpus_per_worker=section.num_gpus_per_worker,
        strategy=section.placement.strategy, bundle_resources=section.placement.resources,
        placement_timeout_s=cfg.ray.placement_timeout_s, device="cuda" if on_gpu else "cpu",
        dtype=rollout_dtype(cfg.model, on_gpu), watchdog=watchdog, num_shards=section.num_shards,
        max_workers=section.max_workers,
        **sampler_settings(cfg),
    )


# ---- rewards -----------------------------------------------------------------------------------------------
def reward_specs(cfg: RunConfig) -> list[RewardSpec]:
    """rewards.functions as RewardSpecs; unset weight / timeout come from the reward's own defaults."""
    return [RewardSpec.from_dict(f.model_dump(exclude_none=True), where=f"rewards.functions[{f.name}]")
            for f in cfg.rewards.functions]


def clip_model_path(cfg: RunConfig, run_dir: Path) -> str | None:
    """rewards.clip_model_path, or a tiny random CLIP built once into the run directory (tiny_clip)."""
    section = cfg.rewards
    if section.clip_model_path or not section.tiny_clip:
        return section.clip_model_path
    from rewards.tiny_clip import build_tiny_clip

    path = Path(run_dir) / "clip_tiny"
    if not (path / "config.json").is_file():
        build_tiny_clip(path, seed=cfg.run.seed)
    return str(path)


def build_reward_pool(cfg: RunConfig, run_dir: Path, watchdog: Watchdog | None = None):
    """The reward actors: rule rewards in sandboxed CPU actors, model rewards (CLIP) in their own actors."""
    from rewards.pool import RewardPool

    section = cfg.rewards
    return RewardPool(reward_specs(cfg), num_workers=section.num_workers, num_model_workers=section.num_model_workers,
                      model_device=section.model_device, clip_model_path=clip_model_path(cfg, run_dir),
                      strategy=section.placement.strategy, bundle_resources=section.placement.resources,
                      placement_timeout_s=cfg.ray.placement_timeout_s, watchdog=watchdog)


# ---- the learner ---------------------------------------------------------------------------------------------
def unigrpo_config(cfg: RunConfig) -> UniGRPOConfig:
    """The objective's settings; text log-probs are scored at the rollout's text temperature."""
    return UniGRPOConfig(**runtime_kwargs(cfg.unigrpo, UniGRPOConfig, seed=cfg.run.seed,
                                          temperature=cfg.rollout.text.temperature))


def learner_config(cfg: RunConfig) -> LearnerConfig:
    bf16 = {"auto": "auto", "true": True, "false": False}[cfg.learner.bf16]
    return LearnerConfig(**runtime_kwargs(cfg.learner, LearnerConfig, bf16=bf16, seed=cfg.run.seed,
                                          total_steps=cfg.run.steps * cfg.unigrpo.mu,
                                          keep_versions=cfg.rollout.max_staleness))


def build_learner_group(cfg: RunConfig, policy_path: Path, watchdog: Watchdog | None = None):
    """The learner group: its placement group (PACK by default: ranks on as few nodes as possible) and M
    DeepSpeed ranks joined in one rendezvous. Colocated: ranks that also generate (rl/colocated.py)."""
    from trainer.learner_group import LearnerGroup

    group_class, actor_kwargs = LearnerGroup, None
    if cfg.placement.mode == "colocated":
        from rl.colocated import ColocatedLearnerGroup

        group_class = ColocatedLearnerGroup
        actor_kwargs = {"rollout": sampler_settings(cfg), "inference_weights": cfg.placement.inference_weights,
                        "offload_optimizer": cfg.placement.offload_optimizer}
    section = cfg.learner
    return group_class.create(section.num_ranks, str(policy_path), learner_config(cfg), unigrpo_config(cfg),
                              num_gpus_per_rank=section.num_gpus_per_rank, strategy=section.placement.strategy,
                              bundle_resources=section.placement.resources,
                              placement_timeout_s=cfg.ray.placement_timeout_s, watchdog=watchdog,
                              actor_kwargs=actor_kwargs)


# ---- the groups of a run, in the configured placement mode -------------------------------------------------
class RunGroups(NamedTuple):
    rollout: Any  # RolloutGroup, or ColocatedRolloutGroup: the same generate(prompts, G, seed)
    reward_pool: Any  # RewardPool
    learner: Any  # LearnerGroup, or ColocatedLearnerGroup
    publisher: Any  # WeightPublisher, or ColocatedPublisher: the same publish() -> metrics


def describe_groups(cfg: RunConfig) -> str:
    """One line for the console: the run's shape in its placement mode."""
    def n(count: int, what: str) -> str:
        return f"{count} {what}{'s' if count != 1 else ''}"

    ranks = n(cfg.learner.num_ranks, "learner rank")
    rewards = n(cfg.rewards.num_workers + cfg.rewards.num_model_workers, "reward actor")
    if cfg.placement.mode == "colocated":
        return f"colocated: {ranks} generate and train (nothing is published), {rewards}"
    shards = f", {cfg.rollout.num_shards} shards" if cfg.rollout.num_shards else ""
    return (f"disaggregated: {n(cfg.rollout.num_workers, 'rollout worker')}{shards}, {ranks} "
            f"(weights by {cfg.run.weight_transport}), {rewards}")


def build_groups(cfg: RunConfig, policy_path: Path, run_dir: Path, watchdog: Watchdog) -> RunGroups:
    """Every group of a run. The one place the placement mode is chosen (docs/architecture.md, "Placement
    modes"): disaggregated rollout workers fed by a WeightPublisher, or learner ranks that generate."""
    if cfg.placement.mode == "colocated":
        from rl.colocated import ColocatedPublisher, ColocatedRolloutGroup

        learner = build_learner_group(cfg, policy_path, watchdog)
        reward_pool = build_reward_pool(cfg, run_dir, watchdog)
        return RunGroups(ColocatedRolloutGroup(learner), reward_pool, learner, ColocatedPublisher(learner))
    from rl.weights import WeightPublisher

    rollout = build_rollout_group(cfg, policy_path, watchdog)
    reward_pool = build_reward_pool(cfg, run_dir, watchdog)
    learner = build_learner_group(cfg, policy_path, watchdog)
    return RunGroups(rollout, reward_pool, learner, WeightPublisher(learner, rollout, cfg.run.weight_transport))
