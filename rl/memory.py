"""What one GPU holds in each phase of a step, from the model's shapes and the config: the fit check
(rl/preflight.py), the planner (rl/plan.py) and the table in docs/memory.md all read it from here.

Parameters P (and the largest tensor) are counted on the meta device from the policy's config.json (MMaDA-8B
when model.path is not given: policy/config.py's defaults are its shapes): nothing is loaded. Learner GPUs
train in bf16 with fp32 master weights and Adam; ZeRO partitions over the N learner ranks (bytes per GPU):

    stage   bf16 params   bf16 grads   fp32 grads + master + Adam m, v (4 + 4 + 8)
    0       2P            2P           16P
    1       2P            2P           16P / N
    2       2P            2P / N       16P / N          (= DeepSpeed's 2P + 18P/N estimate)
    3       2P / N        -            16P / N          (+ 4 x the largest tensor, gathered: DeepSpeed's
                                                        18P/N estimate; grads are reduce-scattered straight
                                                        into the fp32 partitions)
    DeepSpeed offload_optimizer to CPU: the 16P part lives in host memory instead.
    bf16 master weights and Adam states (the JSON's bf16 bf16_master_weights_and_grads and
    bf16_optimizer_states, configs/deepspeed/zero2_bf16_states.json): bf16 grads + master + Adam, 8P for 16P.

Activations of one micro-batch of T = learner.micro_batch_tokens tokens, bf16, attention by SDPA (no
T x T scores kept): 34 T d bytes per layer (Korthikanti et al. 2022, without the attention-score term);
with gradient checkpointing only each layer's input (2 T d) is kept, plus one layer recomputed. The LM
head runs on masked positions only, in chunks of unigrpo.logprob_chunk_size: chunk x vocab x 4 bytes x 3
(logits, log-softmax, gradient).

Generation (a rollout worker, or a colocated rank), batch B = min(64, rollouts on the GPU), sequence S =
prompt + rollout.text.gen_length: the weights it samples with (a worker's own bf16 copy 2P; a colocated
rank's own parameters under ZeRO-0/1/2, a gathered full copy 2P under ZeRO-3), the prefix K/V cache
2 x L x B x S x d x 2 bytes, and one block's logits B x block x vocab x 4 bytes x 2. A colocated rank also
keeps its training states while generating, unless placement.offload_optimizer moves grads, master and Adam
states to host memory for that phase.

Estimates, not measurements: allocator fragmentation and CUDA/NCCL context (~1-2 GB) are a flat
`RESERVED` per GPU. docs/memory.md compares them with DeepSpeed's own estimators (tests/test_memory.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
RESERVED = 2 * GIB  # CUDA context, NCCL buffers, allocator slack: per GPU, every phase
SAMPLER_BATCH = 64  # rollout/worker.py RolloutWorker's default max_batch_size (rows per sampler call)
PROMPT_TOKENS = 64  # a typical prompt length (the planner's and the table's; data decides in a run)


@dataclass(frozen=True)
class ModelShape:
    params: int
    largest_tensor: int
    n_layers: int
    d_model: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """Count on the meta device (no memory, no init) from an MMadaConfig."""
        import torch

        from policy.model import MMadaModelLM

        with torch.device("meta"):
            model = MMadaModelLM(config)
        sizes = [p.numel() for p in model.parameters()]
        return cls(sum(sizes), max(sizes), config.n_layers, config.d_model, config.vocab_size)


def model_shape(cfg) -> ModelShape:
    """The shapes of the run's policy: model.path's config.json, the tiny spec, or MMaDA-8B's."""
    from policy.config import MMadaConfig

    if cfg.model.path:
        return ModelShape.from_config(MMadaConfig.from_pretrained(cfg.model.path))
    if cfg.model.tiny is not None:  # the config build_tiny_policy writes (its tokenizer sets the vocabulary)
        from policy.tiny import build_tiny_tokenizer, tiny_config
        from policy.vocab import VocabLayout

        spec = cfg.model.tiny.model_dump(exclude={"codebook_size", "seed", "init"})
        layout = VocabLayout.from_tokenizer(build_tiny_tokenizer(), codebook_size=cfg.model.tiny.codebook_size)
        return ModelShape.from_config(tiny_config(layout, **spec))
    return ModelShape.from_config(MMadaConfig())


def zero_settings(cfg) -> tuple[int, bool]:
    """(ZeRO stage, optimizer offloaded to CPU by DeepSpeed) from learner.deepspeed_config."""
    from trainer.engine import resolve_path

    ds = json.loads(Path(resolve_path(cfg.learner.deepspeed_config)).read_text())
    zero = ds.get("zero_optimization", {})
    offload = (zero.get("offload_optimizer") or {}).get("device", "none") not in ("none", None)
    return int(zero.get("stage", 0)), offload


def optimizer_bytes_per_param(cfg) -> int:
    """16 (fp32 grads, master, Adam m, v), or 8 with DeepSpeed's bf16 master weights and optimizer states."""
    from trainer.engine import resolve_path

    bf16 = json.loads(Path(resolve_path(cfg.learner.deepspeed_config)).read_text()).get("bf16", {})
    return 8 if bf16.get("bf16_master_weights_and_grads") and bf16.get("bf16_optimizer_states") else 16


@dataclass
class PhaseMemory:
    """Bytes on one GPU in one phase, by component."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def model_states(shape: ModelShape, stage: int, n: int, ds_offload: bool, opt_bytes: int = 16) -> dict[str, int]:
    """bf16 params, bf16 grads, and fp32 grads + master + Adam on one of n learner GPUs (table above)."""
    p = shape.params
    params = 2 * p // n + 4 * shape.largest_tensor if stage == 3 else 2 * p
    grads = 0 if stage == 3 else 2 * p // n if stage == 2 else 2 * p
    optimizer = 0 if ds_offload else (opt_bytes * p if stage == 0 else opt_bytes * p // n)
    return {"bf16 params": params, "bf16 grads": grads, "fp32 grads, master, Adam": optimizer}


def activations(shape: ModelShape, micro_tokens: int, checkpointing: bool, chunk: int) -> int:
    t, d, layers = micro_tokens, shape.d_model, shape.n_layers
    per_layer = 34 * t * d
    kept = 2 * t * d * layers + per_layer if checkpointing else per_layer * layers
    return kept + chunk * shape.vocab * 4 * 3


def sampler_memory(shape: ModelShape, batch: int, seq: int, block: int, cache: bool) -> dict[str, int]:
    kv = 2 * shape.n_layers * batch * seq * shape.d_model * 2 if cache else 0
    return {"K/V cache": kv, "block logits": batch * block * shape.vocab * 4 * 2,
            "forward activations": 4 * batch * seq * shape.d_model * 2}


@dataclass
class GpuMemory:
    """What one GPU of each role holds in each phase (bytes), for one config at a GPU count."""

    mode: str
    learner_gpus: int
    rollout_gpus: int
    phases: dict[str, dict[str, PhaseMemory]]  # role -> phase -> components
    host_optimizer_bytes: int  # per learner GPU, in host memory (DeepSpeed offload or offload_optimizer)

    def peak(self) -> tuple[str, str, int]:
        """(role, phase, bytes) of the fullest GPU phase."""
        return max(((role, phase, mem.total) for role, by_phase in self.phases.items()
                    for phase, mem in by_phase.items()), key=lambda x: x[2])

    def fits(self, gpu_bytes: float) -> bool:
        return self.peak()[2] <= gpu_bytes


def estimate(cfg, shape: ModelShape, learner_gpus: int, rollout_gpus: int = 0, mode: str | None = None,
             offload_optimizer: bool | None = None, checkpointing: bool | None = None,
             stage: int | None = None) -> GpuMemory:
    """Per-GPU memory of `cfg` with `learner_gpus` learner ranks (and `rollout_gpus` rollout workers when
    disaggregated). The keyword arguments replace the config's settings (the planner tries options)."""
    from trainer.unigrpo import UniGRPOConfig

    mode = mode or cfg.placement.mode
    ds_stage, ds_offload = zero_settings(cfg)
    stage = ds_stage if stage is None else stage
    offload = cfg.placement.offload_optimizer if offload_optimizer is None else offload_optimizer
    checkpointing = cfg.learner.gradient_checkpointing if checkpointing is None else checkpointing
    text = cfg.rollout.text
    rollouts = cfg.data.prompts_per_step * cfg.rollout.group_size
    seq = PROMPT_TOKENS + text.gen_length
    opt_bytes = optimizer_bytes_per_param(cfg)
    states = model_states(shape, stage, learner_gpus, ds_offload, opt_bytes)
    chunk = UniGRPOConfig().logprob_chunk_size  # not a config key: the objective's own default
    train = PhaseMemory({**states, "activations (one micro-batch)": activations(
        shape, cfg.learner.micro_batch_tokens, checkpointing, chunk), "reserved": RESERVED})
    if cfg.unigrpo.beta > 0:  # the frozen reference: bf16, partitioned like the parameters
        train.parts["reference (bf16)"] = 2 * shape.params // learner_gpus if stage == 3 else 2 * shape.params
    p = shape.params
    host = (opt_bytes * p if stage == 0 else opt_bytes * p // learner_gpus) if ds_offload else 0  # DeepSpeed's offload
    if mode == "colocated":
        batch = min(SAMPLER_BATCH, max(1, -(-rollouts // learner_gpus)))
        gen = {k: v for k, v in train.parts.items() if not k.startswith("activations")}
        if stage == 3:
            gen["inference copy (gathered bf16)"] = 2 * shape.params
        if offload:
            host += gen.pop("fp32 grads, master, Adam") + gen.pop("bf16 grads")
        gen.update(sampler_memory(shape, batch, seq, text.block_length, text.use_cache))
        return GpuMemory(mode, learner_gpus, 0, {"learner": {"generate": PhaseMemory(gen), "update": train}}, host)
    batch = min(SAMPLER_BATCH, max(1, -(-rollouts // max(rollout_gpus, 1))))
    worker = PhaseMemory({"bf16 weights": 2 * shape.params, "reserved": RESERVED,
                          **sampler_memory(shape, batch, seq, text.block_length, text.use_cache)})
    return GpuMemory(mode, learner_gpus, rollout_gpus, {"learner": {"update": train}, "rollout": {"generate": worker}},
                     host)


def describe(mem: GpuMemory, gpu_gb: float) -> str:
    role, phase, peak = mem.peak()
    return f"{peak / GIB:.1f} GiB on a {role} GPU while it {'generates' if phase == 'generate' else 'trains'} " \
           f"({gpu_gb:g} GiB available)"


def gib(n: int) -> float:
    return round(n / GIB, 1)


def table_markdown(cfg) -> str:
    """docs/memory.md's table: per-GPU GiB of `cfg` at ZeRO-2/3 x 8/16/64 GPUs in both modes (disaggregated:
    a quarter of the GPUs generate), with and without offload_optimizer and gradient checkpointing, and
    whether each fits 80 and 141 GiB."""
    shape = model_shape(cfg)
    rows = ["| ZeRO | GPUs | mode | generate (per GPU) | update (per GPU) | host per learner GPU | fits 80 | fits 141 |",
            "|---|---|---|---|---|---|---|---|"]
    for stage in (2, 3):
        for gpus in (8, 16, 64):
            for mode, offload in (("disaggregated", False), ("colocated", False), ("colocated", True)):
                learners, rollout = (gpus, 0) if mode == "colocated" else (gpus - gpus // 4, gpus // 4)
                mem = estimate(cfg, shape, learners, rollout, mode=mode, stage=stage, offload_optimizer=offload)
                gen = max(m.total for by in mem.phases.values() for ph, m in by.items() if ph == "generate")
                upd = mem.phases["learner"]["update"].total
                peak = mem.peak()[2]
                name = mode + (" + offload_optimizer" if offload else "")
                split = f"{rollout}+{learners}" if mode == "disaggregated" else f"{gpus}"
                rows.append(f"| {stage} | {split} | {name} | {gib(gen)} | {gib(upd)} | {gib(mem.host_optimizer_bytes)} | "
                            f"{'yes' if peak <= 80 * GIB else 'no'} | {'yes' if peak <= 141 * GIB else 'no'} |")
    return "\n".join(rows)
