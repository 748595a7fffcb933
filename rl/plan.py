"""`unigrpo plan CONFIG --gpus N`: predicted step time of the colocated mode and of the best disaggregated
split for a config, with the memory of each (rl/memory.py), and which to use.

The step model (docs/scaling.md, "Choosing a placement"), R = data.prompts_per_step x rollout.group_size
rollouts of S = prompt + gen_length tokens, P parameters:

    generation per rollout   g = steps x S / forward_tps / (cache_speedup if use_cache)
    update per rollout       u = mu S / update_tps + (1 + [beta > 0]) mu S / forward_tps   (pi_old, pi_ref)
    driver                   d = driver_base_s + driver_s_per_rollout x max(0, R - 64)

    colocated, N GPUs        R g / N + R u / N + d + [ZeRO-3] 2P / gather_bytes_per_s
    disaggregated, r + l     R g / r + R u / l + d + publish(2P bytes to r receivers)
                             publish: object_store a + b S_GB + c S_GB (r - 1) (measured loopback constants,
                             pessimistic), broadcast 2P / nccl_bytes_per_s (assumed, not measured)

Throughputs scale with 1 / P from the calibration model's size (FLOPs per token are ~2P / 6P). The
constants are those of `benchmarks/gpu_8b.py` on one H200 and `benchmarks/scale.py` on the 2-core machine
(docs/benchmarks.md); `benchmarks/colocate.py` checks the model's shape on CPU: calibrated on its
disaggregated runs, it predicts the colocated step.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass

from rl.memory import GIB, GpuMemory, estimate, gib, model_shape, zero_settings


@dataclass(frozen=True)
class Constants:
    """Calibrated throughputs; the defaults are MMaDA-8B shapes on one H200 (docs/benchmarks.md)."""

    params: float = 8.08e9  # the model the throughputs were measured on
    update_tps: float = 7857.0  # UniGRPO forward+backward tokens/s per GPU (benchmarks/gpu_8b.py)
    forward_tps: float = 3 * 7857.0  # no-grad forward: a third of forward+backward's FLOPs
    cache_speedup: float = 2.7  # prefix K/V cache vs plain sampling at batch 8 (benchmarks/gpu_8b.py)
    driver_base_s: float = 0.76  # driver work per step at 64 rollouts (benchmarks/scale.py)
    driver_s_per_rollout: float = 0.0056  # ... and per rollout beyond 64
    store_a_s: float = 0.049  # object-store publish: a + b S + c S (receivers - 1), S in GB (scale.py)
    store_b_s_per_gb: float = 3.38
    store_c_s_per_gb: float = 0.40
    nccl_bytes_per_s: float = 25e9  # broadcast over NCCL: assumed, not measured (no GPU run yet)
    gather_bytes_per_s: float = 25e9  # ZeRO-3 all-gather of the inference copy: assumed likewise


H200 = Constants()


@dataclass
class Prediction:
    mode: str
    rollout_gpus: int
    learner_gpus: int
    generate_s: float
    update_s: float
    publish_s: float
    gather_s: float
    driver_s: float
    memory: GpuMemory
    gpu_memory_gb: float
    overlapped: bool = False  # asynchronous: the next batch generates while the learner updates

    @property
    def step_s(self) -> float:
        if self.overlapped:  # the publish stays on the critical path: workers load between batches (rl/pipeline.py)
            return self.publish_s + max(self.generate_s, self.update_s) + self.driver_s
        return self.generate_s + self.update_s + self.publish_s + self.gather_s + self.driver_s

    @property
    def fits(self) -> bool:
        return self.memory.fits(self.gpu_memory_gb * GIB)

    def idle(self) -> dict[str, float]:
        """Share of the step each GPU group waits (for the other group, publishing, the driver)."""
        if self.mode == "colocated":
            return {"learner": 1 - (self.generate_s + self.update_s + self.gather_s) / self.step_s}
        return {"rollout": 1 - self.generate_s / self.step_s, "learner": 1 - self.update_s / self.step_s}

    def to_dict(self) -> dict:
        role, phase, peak = self.memory.peak()
        return {"mode": self.mode, "rollout_gpus": self.rollout_gpus, "learner_gpus": self.learner_gpus,
                "step_s": round(self.step_s, 2), "generate_s": round(self.generate_s, 2),
                "update_s": round(self.update_s, 2), "publish_s": round(self.publish_s, 2),
                "gather_s": round(self.gather_s, 2), "driver_s": round(self.driver_s, 2),
                "idle": {k: round(v, 3) for k, v in self.idle().items()},
                "peak_gib": gib(peak), "peak_at": f"{role} {phase}", "fits": self.fits}


def per_rollout(cfg, params: float, c: Constants, asynchronous: bool = False) -> tuple[float, float, int]:
    """(generation s, update s on one GPU, tokens per rollout) for this config's sizes, averaged over the
    task mixture: text (S = prompt + gen_length, `steps` forwards, the prefix cache's speed-up), image
    understanding (the image's tokens in the prompt), text-to-image (`image.steps` forwards of the prompt
    + image tokens, twice with CFG). No-grad passes per iteration: pi_old, pi_ref when beta > 0, and
    asynchronously with the decoupled objective the behaviour policy's (docs/async.md)."""
    from rl.memory import PROMPT_TOKENS

    scale = params / c.params
    forward, update = c.forward_tps / scale, c.update_tps / scale
    text, image, mu = cfg.rollout.text, cfg.rollout.image, cfg.unigrpo.mu
    n_image = (image.resolution // 16) ** 2  # MAGVIT-v2's tokens per image (rl/builders.py num_image_tokens)
    cache = c.cache_speedup if text.use_cache else 1.0
    kinds = {  # kind -> (forward tokens to generate one rollout, tokens the update scores per iteration)
        "text": (text.steps * (PROMPT_TOKENS + text.gen_length) / cache, PROMPT_TOKENS + text.gen_length),
        "mmu": (text.steps * (n_image + PROMPT_TOKENS + text.gen_length) / cache, n_image + PROMPT_TOKENS + text.gen_length),
        "t2i": (image.steps * (image.max_text_len + n_image) * (2 if image.guidance_scale > 0 else 1),
                image.max_text_len + n_image),
    }
    weights = cfg.data.mixture or {"text": 1.0}
    total = sum(weights.values())
    passes = (2 if cfg.unigrpo.beta > 0 else 1) + (asynchronous and cfg.unigrpo.off_policy == "decoupled")
    gen = upd = seq = 0.0
    for kind, w in weights.items():
        tokens, scored = kinds[kind]
        gen += w / total * tokens / forward
        upd += w / total * (mu * scored / update + passes * mu * scored / forward)
        seq += w / total * scored
    return gen, upd, round(seq)


def adapter_bytes(config, rank: int) -> int:
    """bf16 bytes of rank-r LoRA adapters on every block projection (A: r x d_in, B: d_out x r), from the
    shapes on the meta device (policy/lora.py BLOCK_PROJECTIONS; the embedding and LM head are not adapted)."""
    import torch

    from policy.model import MMadaModelLM

    with torch.device("meta"):
        model = MMadaModelLM(config)
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".blocks." in f".{name}" and name.rsplit(".", 1)[-1] in PROJECTIONS:
            total += rank * (module.in_features + module.out_features)
    return 2 * total


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")  # of every block


def phase_times(rollouts: int, gen_s: float, update_s: float, rollout_gpus: int, learner_gpus: int,
                colocated: bool) -> tuple[float, float]:
    """(generate, update) seconds of one step: each phase's rollouts split evenly over the GPUs doing it
    (colocated: the learner GPUs do both). benchmarks/colocate.py checks this against CPU runs."""
    return rollouts * gen_s / (learner_gpus if colocated else rollout_gpus), rollouts * update_s / learner_gpus


def predict(cfg, gpus: int, mode: str, rollout_gpus: int = 0, c: Constants = H200, shape=None,
            asynchronous: bool = False, weight_bytes: float | None = None) -> Prediction:
    """One mode's step. asynchronous (disaggregated): the next batch generates during the update and publish
    (docs/async.md), so the step is publish + max(generate, update) + driver (the workers load the new
    weights between batches, so the publish does not overlap either phase). weight_bytes: what one
    publication moves (default the bf16 weights, 2P; LoRA: the adapters, `adapter_bytes`)."""
    shape = shape or model_shape(cfg)
    rollouts = cfg.data.prompts_per_step * cfg.rollout.group_size
    gen, upd, _ = per_rollout(cfg, shape.params, c, asynchronous)
    driver = c.driver_base_s + c.driver_s_per_rollout * max(0, rollouts - 64)
    weight_bytes = 2 * shape.params if weight_bytes is None else weight_bytes
    stage, _ = zero_settings(cfg)
    if mode == "colocated":
        gather = weight_bytes / c.gather_bytes_per_s if stage == 3 else 0.0
        return Prediction(mode, 0, gpus, *phase_times(rollouts, gen, upd, 0, gpus, True), 0.0, gather, driver,
                          estimate(cfg, shape, gpus, mode="colocated"), cfg.placement.gpu_memory_gb)
    learners = gpus - rollout_gpus
    size_gb = weight_bytes / 1e9
    if cfg.run.weight_transport == "broadcast":
        publish = weight_bytes / c.nccl_bytes_per_s
    else:
        publish = c.store_a_s + c.store_b_s_per_gb * size_gb + c.store_c_s_per_gb * size_gb * (rollout_gpus - 1)
    prediction = Prediction(mode, rollout_gpus, learners, *phase_times(rollouts, gen, upd, rollout_gpus, learners, False),
                            publish, 0.0, driver, estimate(cfg, shape, learners, rollout_gpus, mode="disaggregated"),
                            cfg.placement.gpu_memory_gb)
    prediction.overlapped = asynchronous
    return prediction


def best_disaggregated(cfg, gpus: int, c: Constants = H200, shape=None, asynchronous: bool = False,
                       weight_bytes: float | None = None) -> Prediction | None:
    """The rollout/learner split with the shortest predicted step among those that fit (None: none fits)."""
    shape = shape or model_shape(cfg)
    options = [predict(cfg, gpus, "disaggregated", r, c, shape, asynchronous, weight_bytes) for r in range(1, gpus)]
    fitting = [p for p in options if p.fits]
    return min(fitting, key=lambda p: p.step_s) if fitting else None


def plan(cfg, gpus: int, c: Constants = H200) -> dict:
    """Both modes for this config on `gpus` GPUs, the config's own split, and the advice."""
    if gpus < 2:
        raise ValueError("--gpus must be >= 2 (a disaggregated run needs a rollout and a learner GPU)")
    shape = model_shape(cfg)
    colocated = predict(cfg, gpus, "colocated", c=c, shape=shape)
    best = best_disaggregated(cfg, gpus, c, shape)
    configured = None  # a disaggregated config's own ratio of rollout to learner GPUs, at this GPU count
    if cfg.placement.mode == "disaggregated":
        own_r = max(1, min(gpus - 1, round(gpus * cfg.rollout.num_workers /
                                           max(1, cfg.rollout.num_workers + cfg.learner.num_ranks))))
        configured = predict(cfg, gpus, "disaggregated", own_r, c, shape)
    candidates = [p for p in (colocated, best) if p is not None and p.fits]
    winner = min(candidates, key=lambda p: p.step_s) if candidates else None
    if winner is None:
        advice = "neither mode fits: use ZeRO-3, gradient checkpointing, placement.offload_optimizer or more GPUs"
    elif winner.mode == "colocated":
        ratio = best.step_s / colocated.step_s if best is not None and best.fits else math.inf
        advice = (f"placement.mode=colocated learner.num_ranks={gpus}: {ratio:.2f}x the steps/s of the best "
                  f"disaggregated split ({best.rollout_gpus} rollout + {best.learner_gpus} learner GPUs)"
                  if math.isfinite(ratio) else f"placement.mode=colocated learner.num_ranks={gpus}: the only mode that fits")
    else:
        advice = (f"placement.mode=disaggregated rollout.num_workers={winner.rollout_gpus} learner.num_ranks="
                  f"{winner.learner_gpus}: {(colocated.step_s / winner.step_s) if colocated.fits else math.inf:.2f}x "
                  "the steps/s of colocated")
    return {"gpus": gpus, "params_b": round(shape.params / 1e9, 2),
            "rollouts_per_step": cfg.data.prompts_per_step * cfg.rollout.group_size,
            "gpu_memory_gb": cfg.placement.gpu_memory_gb, "transport": cfg.run.weight_transport,
            "colocated": colocated.to_dict(), "best_disaggregated": best.to_dict() if best else None,
            "configured_split": configured.to_dict() if configured else None, "advice": advice,
            "constants": asdict(c)}


def compare_shapes(cfg, gpus: int, lora_rank: int = 64, c: Constants = H200) -> dict:
    """Colocated against the best disaggregated split, synchronous and asynchronous, publishing the full bf16
    weights or rank-`lora_rank` adapters (docs/scaling.md, "Which shape wins where")."""
    from policy.config import MMadaConfig

    shape = model_shape(cfg)
    config = MMadaConfig.from_pretrained(cfg.model.path) if cfg.model.path else MMadaConfig()
    lora = adapter_bytes(config, lora_rank)
    out = {"colocated": predict(cfg, gpus, "colocated", c=c, shape=shape).to_dict(),
           "adapter_bytes": lora, "full_bytes": 2 * shape.params, "lora_rank": lora_rank}
    for name, asynchronous, size in (("sync_full", False, None), ("async_full", True, None),
                                     ("sync_lora", False, lora), ("async_lora", True, lora)):
        best = best_disaggregated(cfg, gpus, c, shape, asynchronous, size)
        out[name] = best.to_dict() if best else None
    return out


def format_plan(result: dict) -> str:
    rows = [("colocated", result["colocated"]), ("best disaggregated", result["best_disaggregated"]),
            ("config's split", result["configured_split"])]
    lines = [f"{result['params_b']}B parameters, {result['rollouts_per_step']} rollouts per step, "
             f"{result['gpus']} GPUs of {result['gpu_memory_gb']:g} GiB, weights by {result['transport']}:",
             f"  {'':<20}{'GPUs r+l':>10}{'step s':>9}{'generate':>10}{'update':>8}{'publish':>9}{'gather':>8}"
             f"{'driver':>8}  {'peak GiB (where)':<26} idle"]
    for name, p in rows:
        if p is None:
            if name != "config's split":  # a colocated config has no split of its own
                lines.append(f"  {name:<20} no split fits")
            continue
        gpus = f"{p['rollout_gpus']}+{p['learner_gpus']}" if p["mode"] == "disaggregated" else f"0+{p['learner_gpus']}"
        idle = ", ".join(f"{k} {v:.0%}" for k, v in p["idle"].items())
        peak = f"{p['peak_gib']} ({p['peak_at']}){'' if p['fits'] else ' DOES NOT FIT'}"
        lines.append(f"  {name:<20}{gpus:>10}{p['step_s']:>9.1f}{p['generate_s']:>10.1f}{p['update_s']:>8.1f}"
                     f"{p['publish_s']:>9.1f}{p['gather_s']:>8.1f}{p['driver_s']:>8.1f}  {peak:<26} {idle}")
    lines.append(f"use: {result['advice']}")
    return "\n".join(lines)


def plan_main(argv: list[str]) -> int:
    import argparse

    from rl.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="unigrpo plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config (model.path and data files may be unset: MMaDA-8B shapes)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides key=value")
    parser.add_argument("--gpus", type=int, required=True, help="GPUs for the whole job")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--shapes", action="store_true", help="also compare synchronous / asynchronous and full / "
                        "LoRA publishing at the best disaggregated split with colocated")
    parser.add_argument("--lora-rank", type=int, default=64, help="adapter rank for --shapes (default 64)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, planning=True)
        result = plan(cfg, args.gpus)
        if args.shapes:
            result["shapes"] = compare_shapes(cfg, args.gpus, args.lora_rank)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"unigrpo plan: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_plan(result))
    if args.shapes:
        shapes = result["shapes"]
        print(f"shapes (LoRA rank {shapes['lora_rank']}: {shapes['adapter_bytes'] / 1e6:.0f} MB published instead of "
              f"{shapes['full_bytes'] / 1e9:.1f} GB):")
        for name in ("colocated", "sync_full", "async_full", "sync_lora", "async_lora"):
            p = shapes[name]
            split = "" if p is None or p["mode"] == "colocated" else f" ({p['rollout_gpus']} + {p['learner_gpus']})"
            print(f"  {name:<12} {'no split fits' if p is None else format(p['step_s'], '.1f') + ' s/step'}{split}")
    return 0
