"""The colocated placement (`placement.mode: colocated`): every learner rank generates, then every rank trains.

In the disaggregated mode rollout workers and learner ranks are different actors (different GPUs): the
learner GPUs wait while the workers generate, the workers wait while the learner trains, and every update
ships the full weights to every worker. Masked-diffusion rollouts are dominated by generation (each token
is re-read at every denoising step), so here the same GPUs do both phases one after the other:

    rank k of N, step t:
        shard k = prompts[k::N], seed + 7919 k          rollout/group.py's shard plan: for the same weights the
                                                        records equal a disaggregated run's with N workers
        inference view of the current weights:
            ZeRO-0/1/2   the rank's own parameters (engine.module): no copy, nothing moves
            ZeRO-3       the full parameters, gathered once per policy version (one parameter at a time,
                         so the peak is the view plus one parameter), not once per forward; kept between
                         steps or freed after generating (placement.inference_weights)
        optimizer states on host memory while generating (placement.offload_optimizer; GPU, ZeRO >= 1)
        generate with the project's samplers (rollout/worker.py: text, image with CFG, MMU)
    every rank: the UniGRPO update exactly as in the disaggregated mode (trainer/learner.py)

Nothing is published: `ColocatedPublisher.publish()` reports 0 bytes. The driver sees the rollout-group
interface it always sees (`generate(prompts, G, seed)` -> RolloutRecords carrying their policy version);
the mode is chosen in rl/builders.py, not in the loop. A rank lost (or frozen past its deadline) while
generating is the learner-group failure the driver already recovers from: LearnerLost, a new learner group,
the last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
import torch

from policy.loading import Policy, load_tokenizer_and_layout
from policy.model import MMadaModelLM
from rl.recovery import learner_calls
from rollout.group import generate_call_kind, merge_shards, shard_prompts, shard_seed
from rollout.record import Prompt, RolloutRecord
from rollout.worker import RolloutWorker
from trainer.engine import import_deepspeed
from trainer.learner import Learner
from trainer.learner_group import LearnerGroup

# placement.offload_optimizer: what leaves the GPU while a rank generates. Never the bf16 parameters
# ("lp_params"): under ZeRO-0/1/2 they are what the rank samples with.
OFFLOADED_WHILE_GENERATING = ("optim_states", "hp_params", "lp_grads", "contiguous_grad_buffer")


class ColocatedRank(Learner):
    """A learner rank (one DeepSpeed rank, one GPU) that also samples its shard of every step's rollouts."""

    sampler_class = RolloutWorker  # benchmarks/scale.py swaps in one whose sampling is a calibrated sleep

    def __init__(self, rank: int, world_size: int, policy_path: str, learner_cfg, unigrpo_cfg, ds_config: dict,
                 rollout: dict | None = None, inference_weights: str = "keep", offload_optimizer: bool = False) -> None:
        super().__init__(rank, world_size, policy_path, learner_cfg, unigrpo_cfg, ds_config)
        self.rollout_settings = rollout or {}  # RolloutWorker's keyword arguments (rl/builders.py)
        self.inference_weights, self.offload_optimizer = inference_weights, offload_optimizer
        self.sampler: RolloutWorker | None = None
        self._view: MMadaModelLM | None = None  # ZeRO-3: the gathered full weights
        self._view_version: int | None = None

    def setup(self, master_addr: str, master_port: int) -> dict[str, Any]:
        info = super().setup(master_addr, master_port)
        if self.offload_optimizer and self.device.type == "cuda" and self.zero_stage == 0:
            raise ValueError("placement.offload_optimizer needs a ZeRO optimizer (stage 1, 2 or 3) in "
                             "learner.deepspeed_config; stage 0 keeps plain torch optimizer states")
        tokenizer, layout = load_tokenizer_and_layout(self.policy_path)
        policy = Policy(model=self.engine.module, tokenizer=tokenizer, layout=layout)
        self.sampler = self.sampler_class(self.policy_path, device=str(self.device), policy=policy,
                                          name=f"rank-{self.rank}", **self.rollout_settings)
        return info

    # ---- the inference view ------------------------------------------------------------------------------
    def _inference_model(self, version: int) -> MMadaModelLM:
        """The model to sample with at `version`. Under ZeRO-3 a collective: every rank calls it."""
        if not self.zero3:
            return self.engine.module
        if self._view is None or self._view_version != version:
            self._view = self._gather_full(self._view)
            self._view_version = version
        return self._view

    def _gather_full(self, into: MMadaModelLM | None) -> MMadaModelLM:
        """The ZeRO-3 partitions gathered into one full model on this rank's device, a parameter at a time."""
        deepspeed = import_deepspeed()
        module = self.engine.module
        if into is None:
            with torch.device("meta"):
                into = MMadaModelLM(module.config)
            into = into.to(next(module.parameters()).dtype).to_empty(device=self.device)
            into.eval()
        target = dict(into.named_parameters())
        with torch.no_grad():
            for name, p in module.named_parameters():
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    target[name].copy_(p.data)
        return into

    # ---- generation ----------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int, text_sampler: dict | None,
                 groups: Sequence[int], version: int) -> dict[str, Any]:
        """This rank's shard (possibly empty: under ZeRO-3 every rank still takes part in the gather).
        Returns {"records", "gathered" (the ZeRO-3 weights were gathered for this call), "gather_s", "offload_s"}."""
        t0, gathered = time.perf_counter(), self.zero3 and (self._view is None or self._view_version != version)
        model = self._inference_model(version)
        gather_s = time.perf_counter() - t0
        offload_s = 0.0
        offload = self.offload_optimizer and self.device.type == "cuda"
        if offload:
            t = time.perf_counter()
            self.engine.offload_states(include=OFFLOADED_WHILE_GENERATING)
            offload_s += time.perf_counter() - t
        was_training = model.training
        model.eval()
        try:
            self.sampler.use_model(model, version)
            records = self.sampler.generate(prompts, group_size, seed, text_sampler, groups) if prompts else []
        finally:
            model.train(was_training)
            if offload:
                t = time.perf_counter()
                self.engine.reload_states()
                offload_s += time.perf_counter() - t
            if self.zero3 and self.inference_weights == "free":
                self._view = self._view_version = None
        return {"records": records, "gathered": gathered, "gather_s": gather_s, "offload_s": offload_s}

    def reset_peak_memory(self) -> bool:
        """Start a new peak (benchmarks/gpu_e2e.py reads the peak of each phase)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return True

    def memory(self) -> dict[str, int]:
        """Peak and current device memory of this rank (bytes; 0 on CPU)."""
        if self.device.type != "cuda":
            return {"peak_bytes": 0, "current_bytes": 0}
        return {"peak_bytes": int(torch.cuda.max_memory_allocated()), "current_bytes": int(torch.cuda.memory_allocated())}


ColocatedRankActor = ray.remote(ColocatedRank)


class ColocatedLearnerGroup(LearnerGroup):
    """The learner group whose ranks also generate (its actors are ColocatedRanks)."""

    actor_class = ColocatedRankActor

    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int, text_sampler: dict | None = None,
                 on_shard: Callable[[list[RolloutRecord]], None] | None = None,
                 ) -> tuple[dict[int, list[RolloutRecord]], dict[str, float]]:
        """Shard k on rank k, every rank called (ZeRO-3 gathers are collectives); on_shard(records) as each
        rank answers. A rank that dies or freezes raises LearnerLost (rl/recovery.py)."""
        shards = shard_prompts(prompts, self.world_size)
        refs = []
        for k, actor in enumerate(self.actors):
            shard, groups = shards.get(k, ([], []))
            refs.append(actor.generate.remote(shard, group_size, shard_seed(seed, k), text_sampler, groups,
                                              self.policy_version))
        biggest = max((len(shard) for shard, _ in shards.values()), default=0)
        def ready(rank: int, answer: dict) -> None:
            if on_shard is not None and answer["records"]:
                on_shard(answer["records"])

        with learner_calls():
            answers = self._all(generate_call_kind(biggest, group_size, text_sampler), refs, on_ready=ready)
        timings = {"gather_s": max(a["gather_s"] for a in answers), "offload_s": max(a["offload_s"] for a in answers),
                   "gathers": sum(a["gathered"] for a in answers)}
        return {k: a["records"] for k, a in enumerate(answers) if a["records"]}, timings

    def memory(self) -> list[dict[str, int]]:
        return self._all("memory", [a.memory.remote() for a in self.actors])


class ColocatedRolloutGroup:
    """The rollout-group interface (rollout/group.py's RolloutGroup) over a ColocatedLearnerGroup's ranks."""

    def __init__(self, learner: ColocatedLearnerGroup) -> None:
        self.learner = learner
        self.last_timings: dict[str, float] = {}

    @property
    def size(self) -> int:
        return self.learner.world_size

    @property
    def version(self) -> int:
        return self.learner.policy_version

    @property
    def restarts(self) -> int:
        return 0  # a rank lost while generating restarts the learner group: counted as restarts/learner

    def live(self) -> list[int]:
        return list(range(self.size))

    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int,
                 text_sampler: dict[str, Any] | None = None,
                 on_shard: Callable[[list[RolloutRecord]], None] | None = None) -> list[RolloutRecord]:
        results, extra = self.learner.generate(prompts, group_size, seed, text_sampler, on_shard)
        records, self.last_timings = merge_shards(results)
        self.last_timings.update(extra)
        return records

    def shutdown(self) -> None:
        pass  # the learner group owns the ranks


class ColocatedPublisher:
    """Nothing to publish: each rank samples with its own current weights. Same report as WeightPublisher."""

    def __init__(self, learner: ColocatedLearnerGroup) -> None:
        self.learner = learner

    @property
    def version(self) -> int:
        return self.learner.policy_version

    def publish(self) -> dict:
        return {"publish/transport": "colocated", "publish/version": self.version, "publish/receivers": 0,
                "publish/bytes": 0, "time/publish_s": 0.0}
