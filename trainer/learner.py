"""One learner rank: a Ray actor holding one DeepSpeed engine (and the frozen reference), driven by the
`LearnerGroup` of trainer/learner_group.py.

One update (docs/architecture.md "One RL step"; the objective in trainer/unigrpo.py), split across
ranks by rows:
    driver:  masks for every (response, iteration) from Generator([seed, update_index])  -> shards
    rank:    for n in 1..mu, every micro-batch:  logp_old (and logp_ref if beta > 0), no grad
             for n in 1..mu:  for every micro-batch: logp_theta -> UniGRPO loss -> backward
                              optimizer step (grad clip, LR schedule)
Loss weights use the global batch's sizes, so summing over micro-batches and averaging over ranks
(DeepSpeed's data-parallel mean, undone by a factor of world size) gives the same gradient as one
rank on the whole batch.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from policy import lora
from policy.loading import save_policy
from policy.model import MMadaModelLM
from policy.vocab import VocabLayout
from policy.weight_sync import init_weight_group, make_payload, send_weights
from trainer.batch import TrainBatch
from trainer.behaviour import BehaviourWeights
from trainer.engine import (
    LearnerConfig,
    build_reference,
    build_train_engine,
    import_deepspeed,
    rng_state,
    seed_everything,
    set_rng_state,
    split_rows,
    zero_stage_of,
)
from trainer.sharded_load import build_partitioned
from trainer.token_trace import TokenTrace
from trainer.unigrpo import (
    UniGRPOConfig,
    masked_token_logprobs,
    text_support,
    token_weights,
    unigrpo_loss,
)

__all__ = ["Learner", "LearnerActor", "LearnerConfig", "UniGRPOConfig"]

SUM_KEYS = ("loss", "policy_loss", "kl", "clip_low_count", "clip_high_count", "ratio_sum", "token_count",
            "entropy_sum")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Learner:
    """One DeepSpeed rank. Plain Python (usable in-process, e.g. by the benchmark); `LearnerActor`
    is the same class as a Ray actor."""

    def __init__(self, rank: int, world_size: int, policy_path: str, learner_cfg: LearnerConfig,
                 unigrpo_cfg: UniGRPOConfig, ds_config: dict) -> None:
        self.rank, self.world_size = rank, world_size
        self.policy_path = str(policy_path)
        self.cfg, self.ucfg, self.ds_config = learner_cfg, unigrpo_cfg, ds_config
        self.weight_group = None

    # ---- setup (a rendezvous: call every rank's setup in one ray.get) --------------------------------
    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1", free_port()

    def setup(self, master_addr: str, master_port: int) -> dict[str, Any]:
        cuda = torch.cuda.is_available()
        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK="0",
                          MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
        deepspeed = import_deepspeed()
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
        self.device = torch.device("cuda", 0) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(0)
        seed_everything(self.cfg.seed + self.rank)

        self.zero_stage = zero_stage_of(self.ds_config)
        self.zero3 = self.zero_stage == 3
        self.bf16 = bool(self.ds_config["bf16"]["enabled"])
        if self.zero3 and self.cfg.sliced_load:
            # every rank builds the model partitioned and reads only its own slice of the checkpoint; the
            # frozen pi_ref (= the initial policy) is a second such load, not a copy of a whole model
            with torch.random.fork_rng(devices=[0] if cuda else []):  # zero.Init's random init: no RNG drift
                model, read = build_partitioned(self.policy_path, self.ds_config)
                ref = build_partitioned(self.policy_path, self.ds_config)[0] if self.ucfg.beta > 0 else None
        else:
            model = MMadaModelLM.from_pretrained(self.policy_path, dtype=torch.float32).to(self.device)
            read = sum(p.numel() for p in model.parameters())
            # frozen pi_ref = initial policy; with LoRA it is the same model with its adapters off (no copy)
            ref = copy.deepcopy(model) if self.ucfg.beta > 0 and self.cfg.lora is None else None
            if ref is not None and self.bf16:
                ref = ref.to(torch.bfloat16)
        self.layout = VocabLayout.from_model_config(model.config)
        self.text_support = text_support(self.ucfg, self.layout.text_vocab_size, self.layout.mask_id)
        if self.cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if self.cfg.lora is not None:  # frozen base, trainable adapters: the optimizer sees the adapters only
            model = lora.wrap(model, self.cfg.lora, seed=self.cfg.seed)
        model.train()
        self.engine, self.scheduler = build_train_engine(model, self.cfg, self.ds_config)
        self.ref = None
        if ref is not None:
            self.ref = build_reference(ref, self.ds_config)
        elif self.cfg.lora is not None and self.ucfg.beta > 0:
            self.ref = lora.base_view(self.engine.module)
        self.steps = 0
        self.behaviour = BehaviourWeights(self.cfg.keep_versions)  # asynchronous rollouts' behaviour policies
        return {"rank": self.rank, "zero_stage": self.zero_stage, "bf16": self.bf16,
                "device": str(self.device), "eos_id": self.layout.eos_id, "checkpoint_elements_read": read}

    # ---- one UniGRPO update ---------------------------------------------------------------------------
    def _logprobs(self, model, ids, attn, masked, is_image, with_entropy=False):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16):
            return masked_token_logprobs(model, ids, masked, is_image, self.layout.mask_id, self.layout.image_slice,
                                         self.ucfg.logprob_chunk_size, attn, with_entropy,
                                         single_head_call=self.zero3, text_support=self.text_support)

    def update(self, shard: TrainBatch, masked: np.ndarray, num_responses: int, tokens_per_iter: list[int],
               num_micro: int, version: int = 0) -> dict[str, Any]:
        """All mu iterations on this rank's shard. masked [mu, n, L]: this shard's masks. version: the policy
        version of the weights being updated (stale rows, shard.versions < version, are scored under their
        own version's weights: trainer/behaviour.py). Returns sums over this rank (the group adds them)."""
        t_start = time.perf_counter()
        self.behaviour.snapshot(self.engine.module, version)
        cfg, dev, mu = self.ucfg, self.device, self.ucfg.mu
        ids = torch.from_numpy(shard.input_ids).to(dev)
        attn = None if shard.attention_mask is None else torch.from_numpy(shard.attention_mask).to(dev)
        is_image = torch.from_numpy(shard.is_image).to(dev)
        adv = torch.from_numpy(shard.advantages).to(dev)
        masks = torch.from_numpy(masked).to(dev)
        # per-task statistics: the task of every row as an index into task_names
        task_names = sorted(set(shard.tasks.tolist())) if shard.tasks is not None else []
        task_of_row = torch.tensor([task_names.index(t) for t in shard.tasks.tolist()], device=dev) \
            if task_names else None
        by_task = {name: {} for name in task_names}
        # A rank with fewer rows than micro-batches runs a zero-weight micro-batch on row 0 instead, so
        # that every rank takes part in the same collectives (ZeRO-3 gathers weights in every forward).
        micro = [(rows, 1.0) if len(rows) else (np.array([0]), 0.0) for rows in split_rows(shard.num_rows, num_micro)]

        def inputs(n, rows):
            r = torch.from_numpy(rows).to(dev)
            return ids[r], None if attn is None else attn[r], masks[n][r], is_image[r], adv[r]

        # 1. pi_old (and pi_ref) log-probs on every iteration's mask, before the first update. A stale row
        #    (sampled by version v(o) < version, trainer/behaviour.py) also needs its behaviour policy
        #    pi_{v(o)}: as pi_old itself ("behaviour"), or ("decoupled") pi_old = the current weights and
        #    pi_{v(o)} only in the truncated weight w_t = min(pi_old / pi_{v(o)}, cap) (docs/async.md)
        old, ref = [[None] * len(micro) for _ in range(mu)], [[None] * len(micro) for _ in range(mu)]
        behav = [[None] * len(micro) for _ in range(mu)]  # log pi_{v(o)} where a micro-batch has stale rows
        row_versions = None if shard.versions is None else torch.from_numpy(shard.versions).to(dev)
        decoupled = cfg.off_policy == "decoupled"
        self.engine.eval()
        with torch.no_grad():
            for n in range(mu):
                for j, (rows, _) in enumerate(micro):
                    x, a, m, img, _ = inputs(n, rows)
                    versions = None if row_versions is None else row_versions[torch.from_numpy(rows).to(dev)]
                    if versions is None or not bool((versions != version).any()):
                        old[n][j] = self._logprobs(self.engine, x, a, m, img)[0]
                    elif decoupled:
                        old[n][j] = self._logprobs(self.engine, x, a, m, img)[0]
                        behav[n][j] = self._behaviour_logprobs(versions, version, x, a, m, img, current=old[n][j])
                    else:
                        old[n][j] = self._behaviour_logprobs(versions, version, x, a, m, img)
                    if self.ref is not None:
                        ref[n][j] = self._logprobs(self.ref, x, a, m, img)[0]
        self.engine.train()
        old_ref_s = time.perf_counter() - t_start

        # 2. mu gradient updates, one per mask iteration
        totals = {k: 0.0 for k in SUM_KEYS}
        trace = TokenTrace(shard.trace, cfg.eps_low, cfg.eps_high)  # per-token terms of the traced rows
        # first iteration: sum w, sum w^2, count of w = pi_theta / pi_{v(o)}; tokens whose decoupled weight was capped
        importance = torch.zeros(4, dtype=torch.float64, device=dev)
        ratio_max, grad_norms, lrs, skipped = 0.0, [], [], 0
        for n in range(mu):
            for j, (rows, live) in enumerate(micro):
                x, a, m, img, adv_rows = inputs(n, rows)
                logp, entropy = self._logprobs(self.engine, x, a, m, img, with_entropy=True)
                row_of_token = torch.nonzero(m)[:, 0]
                w = token_weights(row_of_token, m.sum(1), cfg.loss_norm, num_responses, tokens_per_iter[n])
                groups = None if task_of_row is None else task_of_row[torch.from_numpy(rows).to(dev)][row_of_token]
                behaviour = old[n][j] if behav[n][j] is None else behav[n][j]  # log pi_{v(o)}
                bw = None if behav[n][j] is None else torch.exp(old[n][j] - behav[n][j])
                loss, sums = unigrpo_loss(logp, old[n][j], ref[n][j], adv_rows[row_of_token], w, cfg,
                                          token_groups=groups, num_groups=len(task_names),
                                          behaviour_weight=None if bw is None else bw.clamp(max=cfg.behaviour_weight_cap))
                # x world_size: DeepSpeed averages gradients over ranks; the weights already hold 1/N
                self.engine.backward(loss * (live * self.world_size), scale_wrt_gas=False)
                if live and n == 0:  # importance weights pi_theta / pi_{v(o)} before any step (1 for fresh rows)
                    iw = torch.exp(logp.detach() - behaviour)
                    capped = 0.0 if bw is None else float((bw > cfg.behaviour_weight_cap).sum())
                    importance += torch.stack([iw.sum(), (iw * iw).sum(), iw.new_tensor(float(iw.numel())),
                                               iw.new_tensor(capped)]).double()
                if live:
                    trace.add(n, rows, m, logp, old[n][j], ref[n][j], adv_rows[row_of_token], entropy, behav[n][j])
                    for k in SUM_KEYS[:-1]:
                        totals[k] += float(sums[k])
                    totals["entropy_sum"] += float(entropy.sum())
                    ratio_max = max(ratio_max, float(sums["ratio_max"]))
                    for k, values in sums.get("by_group", {}).items():
                        for name, v in zip(task_names, values.tolist()):
                            by_task[name][k] = by_task[name].get(k, 0.0) + v
            lrs.append(self.scheduler.get_last_lr()[0])
            # a non-finite gradient is never applied: the ZeRO optimizer skips such a step itself
            # (bf16.check_grad_overflow, and always in fp32); without ZeRO the gradients are dropped here
            own_norm = self._grad_norm_or_drop() if self.zero_stage == 0 else None
            self.engine.step()
            self.steps += 1
            norm = self.engine.get_global_grad_norm() if own_norm is None else own_norm
            norm = float(norm) if norm is not None else float("nan")
            skipped += int(not math.isfinite(norm) or not self.engine.was_step_applied())
            grad_norms.append(norm)
        # wall time inside this rank: forward/backward/optimizer compute, for the overhead benchmark
        compute_s = time.perf_counter() - t_start
        return {**totals, "importance": importance.tolist(),
                "ratio_max": ratio_max, "grad_norm": grad_norms, "lr": lrs, "compute_s": compute_s,
                "old_ref_s": old_ref_s, "skipped_steps": skipped, "by_task": by_task, "token_trace": trace.result()}

    def _behaviour_logprobs(self, versions: torch.Tensor, version: int, x, a, m, img,
                            current: torch.Tensor | None = None) -> torch.Tensor:
        """Per masked token: log pi_{v(o)}, v(o) its row's version: one no-grad pass per version present (the
        current weights for rows of `version`, a kept copy for older ones). `current`: the current weights'
        log-probs, already computed (its rows of `version` are reused, not recomputed)."""
        token_version = versions[torch.nonzero(m)[:, 0]]
        out = None if current is None else current.clone()
        for v in sorted({int(v) for v in versions.tolist()}):
            if v == version and current is not None:
                continue
            with nullcontext() if v == version else self.behaviour.weights_of(self.engine.module, v):
                logp = self._logprobs(self.engine, x, a, m, img)[0]
            if out is None:
                out = logp
            else:
                out[token_version == v] = logp[token_version == v]
        return out

    def _grad_norm_or_drop(self) -> float:
        """ZeRO stage 0 only: the norm over every rank's gradients; if it is NaN/inf, every rank drops
        its gradients, so the optimizer step that follows changes nothing (AdamW skips parameters
        without a gradient)."""
        params = [p for p in self.engine.module.parameters() if p.grad is not None]
        sq = torch.zeros(1, device=self.device, dtype=torch.float32)
        for p in params:
            sq += p.grad.float().norm() ** 2
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(sq)
        norm = float(sq.sqrt())
        if not math.isfinite(norm):
            for p in params:
                p.grad = None
        return norm

    # ---- full weights (collective under ZeRO-3: every rank calls these) --------------------------------
    def _param_entries(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, shape) of what one publication sends: the adapters with LoRA, every weight otherwise."""
        if self.cfg.lora is not None:
            return lora.adapter_entries(self.engine.module)
        return [(name, p.dtype, tuple(getattr(p, "ds_shape", p.shape)))
                for name, p in self.engine.module.named_parameters()]

    def _iter_published(self):
        """(name, CPU tensor) of what one publication sends, on rank 0 (None elsewhere)."""
        if self.cfg.lora is None:
            yield from self._iter_full_params()
        else:
            for name, t in lora.adapter_tensors(self.engine.module):
                yield name, t if self.rank == 0 else None

    def _iter_full_params(self):
        """(name, full CPU tensor) per parameter on rank 0 (None elsewhere), one parameter at a time; with LoRA
        the merged policy in the reference layout (policy/lora.py; ZeRO-3 is refused with LoRA)."""
        if self.cfg.lora is not None:
            for name, t in lora.merged_tensors(self.engine.module):
                yield name, t if self.rank == 0 else None
            return
        deepspeed = import_deepspeed()
        for name, p in self.engine.module.named_parameters():
            if self.zero3:
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    yield name, p.data.detach().cpu().clone() if self.rank == 0 else None
            else:
                yield name, p.detach().cpu().clone() if self.rank == 0 else None

    def weight_bytes(self) -> int:
        return sum(int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
                   for _, dtype, shape in self._param_entries())

    def full_state(self, version: int) -> dict | None:
        """The object-store payload (policy/weight_sync.py): full weights, or the adapters and their scale."""
        state = dict(self._iter_published())
        if self.rank != 0:
            return None
        return make_payload(version, state, lora=None if self.cfg.lora is None else {"scale": self.cfg.lora.scale})

    def init_broadcast(self, host: str, port: int, world_size: int, backend: str) -> bool:
        """Rank 0 joins (and hosts) the weight-broadcast group with the rollout workers."""
        if self.rank == 0:
            self.weight_group = init_weight_group(host, port, 0, world_size, backend)
        return True

    def broadcast_weights(self, version: int) -> bool:
        if self.rank == 0:
            if self.weight_group is None:
                raise RuntimeError("init_broadcast was not called")
            tensors = (t.to(self.device) for _, t in self._iter_published())
            send_weights(self.weight_group, version, self._param_entries(), tensors,
                         lora=None if self.cfg.lora is None else {"scale": self.cfg.lora.scale})
        else:
            for _ in self._iter_published():
                pass
        return True

    # ---- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str, client_state: dict) -> bool:
        adapted = self.cfg.lora is not None  # then the frozen base stays out: it is the run's initial policy
        self.engine.save_checkpoint(directory, tag="engine", client_state={"unigrpo": client_state},
                                    exclude_frozen_parameters=adapted)
        if adapted and self.rank == 0:  # the adapters also as a peft adapter directory (`unigrpo export` reads it)
            lora.save_adapter(self.engine.module, Path(directory) / lora.ADAPTER_DIR, self.policy_path)
        torch.save({"rng": rng_state(), "steps": self.steps}, Path(directory) / f"rank{self.rank}_state.pt")
        return True

    def load_checkpoint(self, directory: str) -> dict:
        path, client_state = self.engine.load_checkpoint(directory, tag="engine",
                                                         load_module_strict=self.cfg.lora is None)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory}")
        own = torch.load(Path(directory) / f"rank{self.rank}_state.pt", weights_only=False)
        set_rng_state(own["rng"])
        self.steps = own["steps"]
        return client_state["unigrpo"]

    def export_policy(self, directory: str) -> str | None:
        """A from_pretrained-loadable directory: config, model.safetensors, the source's tokenizer files."""
        state = dict(self._iter_full_params())
        if self.rank != 0:
            return None
        return str(save_policy(directory, self.engine.module.config, state, self.policy_path))


LearnerActor = ray.remote(Learner)
