"""`LearnerGroup`: M learner ranks (trainer/learner.py, one DeepSpeed rank per Ray actor) driven as one.

    group = LearnerGroup.create(num_ranks, policy_path, LearnerConfig(...), UniGRPOConfig(...),
                                strategy="PACK")   # owns a placement group: one bundle per rank
    stats = group.update(batch)                  # all mu inner iterations of UniGRPO on one TrainBatch
    ref   = group.publish_object_store()         # full weights as numpy -> rollout workers' load_weights
    group.save_checkpoint(dir, extra_state) / group.load_checkpoint(dir) / group.export_policy(dir)
    group.restart()                              # new rank actors in the same placement group (a rank died)

`group.policy_version` is the run's one policy version counter: bumped by every update, saved in
checkpoints, carried by every published payload and so by every rollout sampled from it. The group draws
every update's masks on the driver side (one Generator([seed, update index])), shards the rows over the
ranks and reduces their statistics; the ranks compute (trainer/learner.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from policy.actor_group import PLACEMENT_TIMEOUT_S, ActorGroup
from policy.deadlines import Watchdog
from policy.placement import bundles, kill_all
from trainer.batch import TrainBatch
from trainer.engine import LearnerConfig, load_deepspeed_config, num_micro_batches, resolve_bf16, resolve_path
from trainer.learner import SUM_KEYS, LearnerActor
from trainer.token_trace import merge_ranks
from trainer.unigrpo import UniGRPOConfig, masks_for_update, scored_positions

__all__ = ["LearnerConfig", "LearnerGroup", "UniGRPOConfig"]


class LearnerGroup:
    """M learner ranks driven together; the caller passes whole batches, the group shards them."""

    actor_class = LearnerActor  # the Ray actor each rank runs (benchmarks/scale.py swaps in a sleeping one)

    def __init__(self, num_ranks: int, policy_path: str, learner_cfg: LearnerConfig, unigrpo_cfg: UniGRPOConfig,
                 ds_config: dict, num_gpus_per_rank: float = 0, num_cpus_per_rank: float = 1,
                 master_port: int | None = None, strategy: str = "PACK", bundle_resources: dict | None = None,
                 placement_timeout_s: float = PLACEMENT_TIMEOUT_S, watchdog: Watchdog | None = None,
                 actor_kwargs: dict | None = None) -> None:
        """Reserve one bundle per rank, start the ranks and join them in one rendezvous. actor_kwargs: extra
        keyword arguments of every rank's constructor (an `actor_class` with settings of its own)."""
        self.actor_kwargs = actor_kwargs or {}
        self.watchdog = watchdog or Watchdog()  # every wait on a rank has a deadline (policy/deadlines.py)
        self.num_ranks, self.policy_path = num_ranks, policy_path
        self.cfg, self.ucfg, self.ds_config = learner_cfg, unigrpo_cfg, ds_config
        self._master_port = master_port
        env = {} if num_gpus_per_rank else {"DS_ACCELERATOR": "cpu"}

        def start(rank: int, placement: dict):
            # a rank is not restarted in place: the survivors' collectives would hang (restart() replaces all)
            return self.actor_class.options(num_cpus=num_cpus_per_rank, num_gpus=num_gpus_per_rank,
                                        runtime_env={"env_vars": env}, **placement).remote(
                rank, self.num_ranks, self.policy_path, self.cfg, self.ucfg, self.ds_config, **self.actor_kwargs)

        self.ranks = ActorGroup("learner", start, bundles(num_ranks, num_cpus_per_rank, num_gpus_per_rank,
                                                          bundle_resources), strategy, placement_timeout_s)
        self.num_updates = 0  # seeds the masks of the next update
        self.policy_version = 0  # bumped by every update; the default tag of published weights
        # held by an update (until the version is bumped) and by a publisher's gather: asynchronous runs
        # gather from the rollout thread while the driver thread updates (rl/weights.py)
        self.lock = threading.RLock()
        self._rendezvous()

    @property
    def actors(self) -> list:
        return self.ranks.actors

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    @property
    def restarts(self) -> int:
        """Times the whole group was replaced after a lost rank."""
        return self.ranks.restarts

    @classmethod
    def create(cls, num_ranks: int, policy_path: str, learner_cfg: LearnerConfig | None = None,
               unigrpo_cfg: UniGRPOConfig | None = None, num_gpus_per_rank: float = 0,
               master_port: int | None = None, num_cpus_per_rank: float = 1, strategy: str = "PACK",
               bundle_resources: dict | None = None, placement_timeout_s: float = PLACEMENT_TIMEOUT_S,
               watchdog: Watchdog | None = None, actor_kwargs: dict | None = None) -> LearnerGroup:
        """The group for these settings (PACK: ranks on as few nodes as possible; fails fast with what was
        asked and what the cluster has), with the DeepSpeed config resolved for them."""
        from policy.placement import ensure_local_ray_env

        if not ray.is_initialized():
            ensure_local_ray_env()
            ray.init(include_dashboard=False)
        learner_cfg, unigrpo_cfg = learner_cfg or LearnerConfig(), unigrpo_cfg or UniGRPOConfig()
        policy_path = str(resolve_path(policy_path))
        use_bf16 = resolve_bf16(learner_cfg) if num_gpus_per_rank else learner_cfg.bf16 is True
        ds_config = load_deepspeed_config(learner_cfg, num_ranks, use_bf16)
        return cls(num_ranks, policy_path, learner_cfg, unigrpo_cfg, ds_config, num_gpus_per_rank,
                   num_cpus_per_rank, master_port, strategy, bundle_resources, placement_timeout_s, watchdog,
                   actor_kwargs)

    def _all(self, kind: str, refs: list, first_rank: int = 0, fetch: bool = True,
             on_ready: Callable[[int, Any], None] | None = None) -> list | None:
        """The ranks' answers to one call each (refs in rank order), raising as soon as one rank fails (the
        others may be blocked in a collective with it and would never answer). A rank past its deadline
        is frozen: it is killed, so its call fails like a dead rank's (the driver restarts the group).
        fetch=False: wait only (rank 0's gathered weights stay in the object store for the workers).
        on_ready(rank, answer): called as each rank answers, in the order they do."""
        ranks = dict(zip(refs, range(first_rank, first_rank + len(refs))))
        for ref, rank in ranks.items():
            self.watchdog.start(ref, kind, f"learner rank {rank}")
        pending, answers = list(refs), {}
        try:
            while pending:
                ready, overdue = self.watchdog.poll(pending)
                for ref in overdue:
                    kill_all([self.actors[ranks[ref]]])
                for ref in ready:
                    pending.remove(ref)
                    if fetch:
                        answers[ref] = ray.get(ref)  # a failed rank raises here, at once
                        if on_ready is not None:  # the very objects returned below (a second get would copy)
                            on_ready(ranks[ref], answers[ref])
                    self.watchdog.done(ref)
        finally:
            for ref in pending:
                self.watchdog.forget(ref)
        return [answers[ref] for ref in refs] if fetch else None

    def _rendezvous(self) -> None:
        host, port = ray.get(self.actors[0].address.remote())
        info = self._all("setup", [a.setup.remote(host, self._master_port or port) for a in self.actors])  # one rendezvous
        self.eos_id = info[0]["eos_id"]  # ends o_i under response_positions=through_first_eos

    def restart(self) -> None:
        """Replace every rank (one died: the survivors' collectives are broken) by new actors in the same
        placement group, from the initial policy; the caller then loads the last checkpoint."""
        self.ranks.restart_all()
        self.ranks.note_restart()
        self.num_updates, self.policy_version = 0, 0
        self._rendezvous()

    # ---- training ------------------------------------------------------------------------------------
    def update(self, batch: TrainBatch) -> dict[str, float]:
        """All mu UniGRPO iterations on `batch`; statistics reduced over ranks and iterations."""
        batch.validate()
        with self.lock:
            return self._update(batch)

    def _update(self, batch: TrainBatch) -> dict[str, float]:
        ucfg, world = self.ucfg, self.world_size
        positions = scored_positions(batch.input_ids, batch.response_mask, self.eos_id, ucfg.response_positions)
        ratios, masked = masks_for_update(positions, ucfg, self.num_updates)
        tokens_per_iter = [int(t) for t in masked.sum(axis=(1, 2))]
        bounds = [batch.shard_bounds(r, world) for r in range(world)]
        num_micro = num_micro_batches([b - a for a, b in bounds], batch.seq_len, self.cfg.micro_batch_tokens)
        results = self._all("update", [
            actor.update.remote(batch.select(slice(a, b)), masked[:, a:b], batch.num_rows, tokens_per_iter, num_micro,
                                self.policy_version)
            for actor, (a, b) in zip(self.actors, bounds)
        ])
        self.num_updates += 1
        self.policy_version += 1
        stats = reduce_stats(results, ratios, ucfg.mu, num_micro)
        trace = merge_ranks([r.get("token_trace") for r in results], [a for a, _ in bounds], ratios, positions)
        if trace is not None:  # the traced rows' per-token terms (trainer/token_trace.py), for rl/token_traces.py
            stats["token_trace"] = trace
        return stats

    # ---- weight publishing ---------------------------------------------------------------------------
    def weight_bytes(self) -> int:
        """Bytes of one full copy of the weights (what one publication moves to each receiver)."""
        return int(ray.get(self.actors[0].weight_bytes.remote()))

    def publish_object_store(self, version: int | None = None):
        """ObjectRef of {"version", "state": {name: np.ndarray}, "dtypes"} from rank 0 (all ranks gather)."""
        version = self.policy_version if version is None else version
        refs = [a.full_state.remote(version) for a in self.actors]
        self._all("gather weights", refs[1:], first_rank=1)
        self._all("gather weights", refs[:1], fetch=False)
        return refs[0]

    def init_broadcast(self, world_size: int, port: int | None = None, backend: str | None = None):
        """Start the broadcast group (learner rank 0 = group rank 0, receivers 1..world_size-1).
        Returns (host, port, ref): hand host/port to the receivers, build them, then ray.get(ref)."""
        host, free = ray.get(self.actors[0].address.remote())
        port = port or free
        backend = backend or ("nccl" if self.ds_config["bf16"]["enabled"] and torch.cuda.is_available() else "gloo")
        return host, port, self.actors[0].init_broadcast.remote(host, port, world_size, backend)

    def broadcast_weights(self, version: int | None = None) -> list:
        """Send full weights over the broadcast group; non-blocking: receivers call receive(), then
        ray.get the returned refs."""
        version = self.policy_version if version is None else version
        return [a.broadcast_weights.remote(version) for a in self.actors]

    # ---- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str | Path, extra_state: dict | None = None) -> Path:
        """DeepSpeed engine + optimizer + LR schedule per rank, RNG per rank, policy version, the
        caller's extra_state, and an exported policy directory under `policy/`."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        client = {"num_updates": self.num_updates, "policy_version": self.policy_version,
                  "extra_state": extra_state or {}, "learner_cfg": asdict(self.cfg), "unigrpo_cfg": asdict(self.ucfg)}
        self._all("save_checkpoint", [a.save_checkpoint.remote(str(directory), client) for a in self.actors])
        self.export_policy(directory / "policy")
        return directory

    def load_checkpoint(self, directory: str | Path) -> dict:
        directory = Path(directory).resolve()
        client = self._all("load_checkpoint", [a.load_checkpoint.remote(str(directory)) for a in self.actors])[0]
        self.num_updates, self.policy_version = client["num_updates"], client["policy_version"]
        return client["extra_state"]

    def export_policy(self, directory: str | Path) -> Path:
        directory = Path(directory).resolve()
        self._all("export_policy", [a.export_policy.remote(str(directory)) for a in self.actors])
        return directory

    def shutdown(self) -> None:
        self.ranks.shutdown()


def reduce_task_stats(results: list[dict], mu: int) -> dict[str, float]:
    """Per task, over ranks and iterations: its weighted-mean policy loss and KL (the objective restricted
    to that task's tokens), clip fraction and masked tokens per iteration."""
    sums: dict[str, dict[str, float]] = {}
    for r in results:
        for name, values in r.get("by_task", {}).items():
            for k, v in values.items():
                sums.setdefault(name, {}).setdefault(k, 0.0)
                sums[name][k] += v
    out = {}
    for name, t in sums.items():
        weight, tokens = max(t.get("weight", 0.0), 1e-12), max(t.get("token_count", 0.0), 1.0)
        out[f"task/{name}/policy_loss"] = t.get("policy_loss", 0.0) / weight
        out[f"task/{name}/kl"] = t.get("kl", 0.0) / weight
        out[f"task/{name}/clip_frac"] = t.get("clip_count", 0.0) / tokens
        out[f"task/{name}/masked_tokens"] = t.get("token_count", 0.0) / mu
    return out


def reduce_stats(results: list[dict], ratios: np.ndarray, mu: int, num_micro: int) -> dict[str, float]:
    """Add the ranks' sums; loss/policy_loss/kl are means over the mu iterations, fractions are over
    every masked token of every iteration."""
    tot = {k: sum(r[k] for r in results) for k in SUM_KEYS}
    tokens = max(tot["token_count"], 1.0)
    # effective sample size of the first iteration's importance weights w = pi_theta / pi_old, as a share of
    # the tokens: (sum w)^2 / (n sum w^2); 1 when every row is fresh (w = 1), lower the staler the rows
    w_sum, w_sq, w_n, w_capped = (sum(r.get("importance", [0.0] * 4)[i] for r in results) for i in range(4))
    grad_norms = results[0]["grad_norm"]
    return {**reduce_task_stats(results, mu),
        "loss": tot["loss"] / mu,
        "policy_loss": tot["policy_loss"] / mu,
        "kl": tot["kl"] / mu,
        "clip_frac_low": tot["clip_low_count"] / tokens,
        "clip_frac_high": tot["clip_high_count"] / tokens,
        "clip_frac": (tot["clip_low_count"] + tot["clip_high_count"]) / tokens,
        "ratio_mean": tot["ratio_sum"] / tokens,
        "ess_fraction": w_sum * w_sum / (w_n * w_sq) if w_n and w_sq else 1.0,
        # decoupled objective: share of the first iteration's tokens whose pi_prox / pi_behaviour hit the cap
        "behaviour_capped_frac": w_capped / w_n if w_n else 0.0,
        "ratio_max": max(r["ratio_max"] for r in results),
        "entropy": tot["entropy_sum"] / tokens,
        "mask_ratio_mean": float(ratios.mean()),
        "mask_ratio_min": float(ratios.min()),
        "mask_ratio_max": float(ratios.max()),
        "mask_ratio_std": float(ratios.std()),
        "masked_tokens": tot["token_count"] / mu,
        "grad_norm": float(np.mean(grad_norms)),
        # optimizer steps not applied because the loss or the gradient norm was NaN/inf (ranks agree)
        "skipped_steps": float(results[0].get("skipped_steps", 0)),
        "grad_norm_max": float(np.max(grad_norms)),
        "lr": float(results[0]["lr"][-1]),
        "micro_batches": float(num_micro),
        "compute_s": max(r.get("compute_s", 0.0) for r in results),  # ranks run in parallel
        "old_ref_logprob_s": max(r.get("old_ref_s", 0.0) for r in results),  # the no-grad pi_old/pi_ref pass
    }
