"""The single-controller UniGRPO loop (DESIGN.md "One RL step"), with real Ray actors.

    prompts  = dataset.next_batch()                        resumable cursor
    rollouts = rollout workers .generate(prompts, G)       sharded over N Ray actors
    scores   = reward pool .score(rollouts)                separate Ray actors, per-call timeouts
    adv      = group_normalise(weighted sum of scores)
    stats    = learner group .update(train batch)          M DeepSpeed ranks, mu UniGRPO iterations
    learner group .publish -> rollout workers .load_weights(version)
    store.append(step, rollouts + scores + adv); metrics.log(step, stats, timings)
    every k steps (and on SIGINT/SIGTERM): checkpoint learner + driver state

Every rollout carries the policy version it was sampled from, so an asynchronous variant (rollouts of
step t+1 overlapping the update of step t) can come later without changing the data.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rl.advantages import group_normalise
from rl.config import RunConfig, save_resolved
from rl.data import PromptDataset, build_run_dataset, task_kind
from rl.loggers import MetricSinks
from rl.metrics import MetricsLog, console_line, mean, per_task_summary, plot_rewards, task_metrics
from rl.store import RolloutStore

DRIVER_STATE = "driver_state.json"


def ensure_local_ray_env() -> None:
    """Keep a local cluster on loopback and without auth tokens (see the platform notes)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Phases of a step run one after another in different actors: OpenMP threads that spin-wait after
    # a parallel region steal the cores the next phase needs (measured: ~25% slower steps on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class StepTimer:
    """Wall time per phase of one step: `with timer.time("generate"): ...`."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def time(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0


class GracefulStop:
    """SIGINT/SIGTERM set a flag; the loop finishes the current phase, checkpoints and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. the driver runs inside a test thread)
                pass

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nreceived signal {signum}: stopping after the current phase and checkpointing", flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Driver:
    def __init__(self, cfg: RunConfig, run_dir: Path | None = None, resume: bool = False, console: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.resume = resume
        self.console = console
        self.step = 0
        self.policy_version = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.stop = GracefulStop()
        self.last_transport: str | None = None  # how the latest weights reached the rollout workers
        self.restarts = {"rollout": 0}
        self.dataset: PromptDataset | None = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        save_resolved(cfg, self.run_dir)
        self.metrics = MetricsLog(self.run_dir)
        self.sinks = MetricSinks(cfg.run.loggers, self.run_dir, self.run_dir.name, cfg.model_dump(mode="json"))
        self.store = RolloutStore(self.run_dir)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-store")
        self.dataset = build_run_dataset(cfg)  # bad rows fail here, before any actor starts
        self.policy_path = self._prepare_policy()
        self.clip_path = self._prepare_clip()
        self._start_ray()
        self._start_actors()
        if self.resume:
            self._restore()

    def _prepare_policy(self) -> Path:
        if self.cfg.model.path:
            path = Path(self.cfg.model.path)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"model.path={path}: not a policy directory (no config.json)")
            return path
        from policy.tiny import build_tiny_policy

        path = self.run_dir / "policy_init"
        if not (path / "config.json").is_file():
            spec = self.cfg.model.tiny.model_dump()
            build_tiny_policy(path, codebook_size=spec.pop("codebook_size"), seed=spec.pop("seed"), **spec)
        return path

    def _prepare_clip(self) -> str | None:
        """rewards.clip_model_path, or a tiny random CLIP built into the run directory (rewards.tiny_clip)."""
        if self.cfg.rewards.clip_model_path or not self.cfg.rewards.tiny_clip:
            return self.cfg.rewards.clip_model_path
        from rewards.tiny_clip import build_tiny_clip

        path = self.run_dir / "clip_tiny"
        if not (path / "config.json").is_file():
            build_tiny_clip(path, seed=self.cfg.run.seed)
        return str(path)

    def _num_image_tokens(self) -> int:
        c = self.cfg
        if not c.model.image_tokenizer:
            return (c.rollout.image.resolution // 16) ** 2  # MAGVIT-v2's factor
        from policy.palette_tokenizer import load_image_tokenizer

        return load_image_tokenizer(c.model.image_tokenizer).num_tokens(c.rollout.image.resolution)

    def _start_ray(self) -> None:
        ensure_local_ray_env()
        import ray

        if ray.is_initialized():
            return
        c = self.cfg
        if c.ray.address:
            ray.init(address=c.ray.address, log_to_driver=False)
            return
        # Logical CPUs for scheduling: every actor asks for one, and the phases of a step run one after
        # another, so a 2-core machine can host rollout, reward and learner actors side by side.
        needed = c.rollout.num_workers + c.rewards.num_workers + c.rewards.num_model_workers + c.learner.num_ranks
        num_cpus = c.ray.num_cpus or max(os.cpu_count() or 1, needed + 1)
        ray.init(num_cpus=num_cpus, include_dashboard=c.ray.include_dashboard, log_to_driver=False,
                 _node_ip_address="127.0.0.1")

    def _start_actors(self) -> None:
        from rewards.api import RewardSpec
        from rewards.pool import RewardPool
        from rollout.image_sampler import ImageSamplerConfig
        from rollout.text_sampler import TextSamplerConfig
        from rollout.worker import create_rollout_workers
        from trainer.learner import LearnerConfig, LearnerGroup
        from trainer.unigrpo import UniGRPOConfig

        c = self.cfg
        on_gpu = c.rollout.num_gpus_per_worker > 0
        dtype = c.model.dtype if c.model.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        self.rollout_workers = create_rollout_workers(
            c.rollout.num_workers,
            str(self.policy_path),
            text_config=TextSamplerConfig(**c.rollout.text.model_dump()),
            image_config=ImageSamplerConfig(steps=c.rollout.image.steps, guidance_scale=c.rollout.image.guidance_scale,
                                            temperature=c.rollout.image.temperature),
            num_gpus_per_worker=c.rollout.num_gpus_per_worker,
            placement_group=self._rollout_placement_group(),
            device="cuda" if on_gpu else "cpu",
            dtype=dtype,
            max_text_len=c.rollout.image.max_text_len,
            num_image_tokens=self._num_image_tokens(),
            image_tokenizer=c.model.image_tokenizer,
        )
        self.reward_pool = RewardPool(
            [RewardSpec.from_dict(r.model_dump()) for r in c.rewards.functions],
            num_workers=c.rewards.num_workers,
            num_model_workers=c.rewards.num_model_workers,
            model_device=c.rewards.model_device,
            clip_model_path=self.clip_path,
        )
        u = c.unigrpo
        unigrpo_cfg = UniGRPOConfig(mu=u.mu, eps_low=u.eps_low, eps_high=u.eps_high, beta=u.beta,
                                    mask_schedule=u.mask_schedule, p_min=u.p_min, loss_norm=u.loss_norm,
                                    seed=c.run.seed)
        lc = c.learner
        learner_cfg = LearnerConfig(lr=lc.lr, weight_decay=lc.weight_decay, lr_schedule=lc.lr_schedule,
                                    warmup_steps=lc.warmup_steps, total_steps=c.run.steps * c.unigrpo.mu, grad_clip=lc.grad_clip,
                                    micro_batch_tokens=lc.micro_batch_tokens, deepspeed_config=lc.deepspeed_config,
                                    gradient_checkpointing=lc.gradient_checkpointing, seed=c.run.seed,
                                    bf16={"auto": "auto", "true": True, "false": False}[lc.bf16])
        self.learner = LearnerGroup.create(lc.num_ranks, str(self.policy_path), learner_cfg, unigrpo_cfg,
                                           num_gpus_per_rank=lc.num_gpus_per_rank)

    def _rollout_placement_group(self):
        """One bundle per rollout worker (a GPU each on GPU clusters), reserved together, so a run
        that cannot get its rollout resources fails now with a clear message instead of hanging."""
        import ray
        from ray.util.placement_group import placement_group

        c = self.cfg.rollout
        bundle = {"CPU": 1, **({"GPU": c.num_gpus_per_worker} if c.num_gpus_per_worker else {})}
        pg = placement_group([dict(bundle) for _ in range(c.num_workers)], strategy="PACK")
        try:
            ray.get(pg.ready(), timeout=float(os.environ.get("UNIGRPO_PLACEMENT_TIMEOUT_S", 120)))
        except ray.exceptions.GetTimeoutError:
            ray.util.remove_placement_group(pg)
            raise RuntimeError(
                f"could not reserve {c.num_workers} x {bundle} for rollout workers; the cluster has "
                f"{ray.available_resources()} available (check rollout.num_workers / num_gpus_per_worker)"
            ) from None
        self._placement_groups = [pg]
        return pg

    # ------------------------------------------------------------------ checkpoints
    def flush_store(self) -> None:
        """Wait for the pending rollout-store write (a write error surfaces here)."""
        pending = getattr(self, "_store_write", None)
        if pending is not None:
            pending.result()  # re-raises a failed write here, in the driver
            self._store_write = None

    def checkpoint(self) -> Path:
        self.flush_store()
        ckpt = self.run_dir / "checkpoints" / f"step_{self.step}"
        state = {
            "step": self.step,
            "policy_version": self.policy_version,
            "run_id": self.run_id,
            "data_cursor": self.dataset.state_dict(),
        }  # the driver draws no random numbers: rollout seeds derive from (run.seed, step) and the
        # learner's masks from (seed, update index); the learner checkpoints its own RNG states
        self.learner.save_checkpoint(str(ckpt), extra_state={"driver": state})
        (ckpt / DRIVER_STATE).write_text(json.dumps(state))
        (self.run_dir / "checkpoints" / "latest").write_text(ckpt.name)
        return ckpt

    def _restore(self) -> None:
        latest = self.run_dir / "checkpoints" / "latest"
        if not latest.exists():
            raise FileNotFoundError(f"{self.run_dir}: no checkpoint to resume from")
        ckpt = self.run_dir / "checkpoints" / latest.read_text().strip()
        self.learner.load_checkpoint(str(ckpt))
        state = json.loads((ckpt / DRIVER_STATE).read_text())
        self.step = state["step"]
        self.policy_version = state["policy_version"]
        self.run_id = state["run_id"]
        self.dataset.load_state_dict(state["data_cursor"])
        self.metrics.truncate_after(self.step)
        self.store.truncate_after(self.step)
        self._publish()

    # ------------------------------------------------------------------ one step
    def _generate(self, prompts, seed: int) -> list[dict]:
        """Shard prompts over rollout workers; a worker that dies is restarted, given the current weights
        and its shard is generated again, so no group is lost or counted twice."""
        import ray
        from ray.exceptions import RayActorError

        G = self.cfg.rollout.group_size
        # The same prompt may appear twice in one batch (small datasets wrap around): each occurrence is
        # its own group, so the id sent out carries the batch position and is split off again below.
        payloads = [p.to_dict() | {"prompt_id": f"{p.prompt_id}@{j}", "text": p.question,
                                   "think": self.cfg.data.think} for j, p in enumerate(prompts)]
        shards = [payloads[i :: len(self.rollout_workers)] for i in range(len(self.rollout_workers))]
        results: dict[int, list[dict]] = {}
        for _attempt in range(3):
            pending = {
                i: self.rollout_workers[i].generate.remote(shard, G, seed + 7919 * i)
                for i, shard in enumerate(shards) if shard and i not in results
            }
            for i, ref in pending.items():
                try:
                    results[i] = ray.get(ref)
                except RayActorError:
                    self.restarts["rollout"] += 1
                    self._reload_worker(i)
            if all(i in results for i, s in enumerate(shards) if s):
                break
        else:
            raise RuntimeError("rollout workers kept failing; giving up after 3 attempts")
        # Model compute inside the workers: each record carries its batch's time; workers run in parallel.
        def per_worker(key: str, kind: str | None = None) -> float:
            return max(sum(r["timings"].get(key, 0.0) / r["timings"]["batch_size"] for r in recs
                           if kind is None or r["sampler"]["kind"] == kind) for recs in results.values())

        self._gen_compute_s = per_worker("gen_s")
        self._image_gen_s, self._decode_s = per_worker("gen_s", "image"), per_worker("decode_s", "image")
        records = [r for i in sorted(results) for r in results[i]]
        for r in records:
            prompt_id, position = r["prompt_id"].rsplit("@", 1)
            r["prompt_id"], r["group"] = prompt_id, int(position)
            r["gold"] = prompts[r["group"]].answer
            r["question"] = prompts[r["group"]].question
        records.sort(key=lambda r: (r["group"], r["group_index"]))
        return records

    def _reload_worker(self, i: int) -> None:
        import ray

        worker = self.rollout_workers[i]
        deadline = time.time() + 120
        while True:  # the actor restarts from its constructor (initial weights)
            try:
                ray.get(worker.ping.remote(), timeout=30)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        if self.policy_version > 0:
            payload = self.learner.publish_object_store(self.policy_version)
            ray.get(worker.load_weights.remote(self.policy_version, payload))

    def _score(self, records: list[dict]) -> np.ndarray:
        from rewards.api import RewardInput

        inputs = [RewardInput(task=r["task"], prompt=r["question"], response=r["response_text"], gold=r["gold"],
                              image=r.get("image"), metadata={"prompt_id": r["prompt_id"]}) for r in records]
        scored = self.reward_pool.score(inputs)
        # actor-side scoring time since the last step (one extra call per step, after scoring; a
        # restarted actor starts again from 0, hence the clamp)
        busy, model_busy = self.reward_pool.busy_seconds(), self.reward_pool.busy_seconds("model")
        self._reward_compute_s = max(0.0, busy - getattr(self, "_reward_busy_last", 0.0))
        self._model_reward_s = max(0.0, model_busy - getattr(self, "_model_busy_last", 0.0))
        self._reward_busy_last, self._model_busy_last = busy, model_busy
        totals = np.zeros(len(records))
        for i, (r, s) in enumerate(zip(records, scored)):
            totals[i] = s.total
            r["reward"] = float(s.total)
            r["reward_components"] = {k: v.to_dict() for k, v in s.components.items()}  # detail: for the dashboard
        return totals

    def _train_batch(self, records: list[dict], advantages: np.ndarray, keep: np.ndarray):
        from rl.data import task_kind
        from trainer.batch import batch_from_rollouts

        rows = [i for i in range(len(records)) if keep[i]]
        if not rows:
            return None
        # each row is the context the sampler saw (prompt mask, <|eoi|> after an image canvas)
        return batch_from_rollouts([records[i] for i in rows], advantages[rows],
                                   tasks=[task_kind(records[i]["task"]) for i in rows])

    def _publish(self) -> None:
        """Learner rank 0 -> every rollout worker, tagged with the policy version.

        object_store: rank 0 gathers full weights as numpy into Ray's object store, each worker pulls.
        broadcast: a torch.distributed group (gloo on CPU, NCCL on GPU) joining rank 0 and the workers;
        a restarted worker cannot rejoin that group, so it is served from the object store instead."""
        import ray

        version = self.policy_version
        if self.cfg.run.weight_transport == "broadcast" and self._broadcast_ready():
            refs = self.learner.broadcast_weights(version)
            refs += [self.rollout_workers[i].receive_weights.remote() for i in self._broadcast_members]
            ray.get(refs)
            self.last_transport = "broadcast"
            return
        payload = self.learner.publish_object_store(version)
        self.last_transport = "object_store"
        ray.get([w.load_weights.remote(version, payload) for w in self.rollout_workers])

    def _broadcast_ready(self) -> bool:
        import ray

        if getattr(self, "_broadcast_members", None) is None:
            members = list(range(len(self.rollout_workers)))
            world = len(members) + 1
            host, port, root = self.learner.init_broadcast(world)
            joins = [self.rollout_workers[i].join_weight_group.remote(host, port, rank + 1, world)
                     for rank, i in enumerate(members)]
            ray.get([root, *joins])  # one rendezvous
            self._broadcast_members = members
        return self.restarts["rollout"] == 0

    def run_step(self) -> dict:
        cfg = self.cfg
        timer = StepTimer()
        t0 = time.perf_counter()
        step = self.step + 1
        prompts = self.dataset.next_batch(cfg.data.prompts_per_step)

        with timer.time("generate"):
            records = self._generate(prompts, seed=cfg.run.seed * 1_000_003 + step)
        with timer.time("reward"):
            rewards = self._score(records)
        group_ids = np.array([r["group"] for r in records])
        adv = group_normalise(rewards, group_ids, cfg.advantages.eps, cfg.advantages.drop_zero_variance_groups)
        for r, a in zip(records, adv.values):
            r["advantage"] = float(a)
            r["step"] = step

        stats = {}
        batch = self._train_batch(records, adv.values, adv.keep)
        with timer.time("update"):
            if batch is not None:
                stats = self.learner.update(batch)
        self.policy_version += 1
        with timer.time("publish"):
            self._publish()
        with timer.time("store"):
            # written in the background while the next step generates; joined before the next write,
            # a checkpoint, or the end of the run, so a checkpoint never precedes its rollouts
            self.flush_store()
            # pixels stay out of the store (image_png and image_codes hold the image)
            stored = [{k: v for k, v in r.items() if k != "image"} for r in records]
            self._store_write = self._writer.submit(self.store.append, step, stored)
        self.step = step

        m = {
            "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std()),
            "adv/zero_variance_groups": adv.zero_variance_groups,
            "adv/groups": adv.groups,
            "policy_version": self.policy_version,
            "rollouts": len(records),
            "restarts/rollout": self.restarts["rollout"],
            "response/len_mean": mean(len(r["response_text"]) for r in records),
        }
        for name in {k for r in records for k in r["reward_components"]}:
            comps = [r["reward_components"][name] for r in records if name in r["reward_components"]]
            m[f"reward/{name}/mean"] = mean(c["value"] for c in comps)
            for status in ("timeout", "error", "unparsable"):
                m[f"reward/{name}/{status}"] = sum(c["status"] == status for c in comps)
        m.update(task_metrics(records, rewards, adv))
        m.update({f"learner/{k}": v for k, v in stats.items()})
        m.update({f"time/{k}_s": v for k, v in timer.phases.items()})
        m["time/step_s"] = time.perf_counter() - t0
        m["time/gen_compute_s"] = self._gen_compute_s
        m["time/reward_compute_s"] = self._reward_compute_s
        if any(task_kind(r["task"]) == "t2i" for r in records):  # where an image step's time goes
            m["time/image_gen_compute_s"] = self._image_gen_s
            m["time/image_decode_s"] = self._decode_s
            m["time/clip_compute_s"] = self._model_reward_s
        m["time/update_compute_s"] = stats.get("compute_s", float("nan"))
        m["throughput/rollouts_per_s"] = len(records) / m["time/step_s"]
        m["throughput/tokens_per_s"] = sum(len(r["response_ids"]) for r in records) / m["time/step_s"]
        m["time/unix"] = time.time()
        self.metrics.log(step, m)
        self.sinks.log(step, m)
        return m

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        start = time.time()
        self.stop.install()
        interrupted = False
        bar = tqdm(total=cfg.run.steps, initial=self.step, desc="unigrpo", unit="step",
                   disable=not (self.console and sys.stderr.isatty()),
                   dynamic_ncols=True, leave=False)
        try:
            if self.step == 0 and not self.resume:
                self._publish()
            while self.step < cfg.run.steps:
                m = self.run_step()
                bar.update(1)
                if self.console:
                    bar.write(console_line(self.step, cfg.run.steps, m))
                if self.step % cfg.run.checkpoint_every == 0:
                    self.checkpoint()
                out_of_time = cfg.run.max_wall_s is not None and time.time() - start > cfg.run.max_wall_s
                if self.stop.requested or out_of_time:
                    interrupted = self.stop.requested
                    break
        finally:
            bar.close()
            self.stop.restore()
        last_ckpt = self.run_dir / "checkpoints" / f"step_{self.step}"
        if not last_ckpt.exists():
            self.checkpoint()
        summary = self.summarise(time.time() - start, interrupted)
        return summary

    def summarise(self, wall_s: float, interrupted: bool) -> dict:
        self.flush_store()
        metrics = self.metrics.read()
        rewards = [m["reward/mean"] for m in metrics]
        k = min(10, len(rewards))
        summary = {
            "run_id": self.run_id,
            "steps": self.step,
            "wall_s": round(wall_s, 2),
            "interrupted": interrupted,
            "reward_first10": mean(rewards[:k]),
            "reward_last10": mean(rewards[-k:]),
            **per_task_summary(metrics),
            "policy_version": self.policy_version,
            "run_dir": str(self.run_dir),
            "rollout_restarts": self.restarts["rollout"],
            "reward_stats": self.reward_pool.stats(),
        }
        if self.cfg.run.plot and metrics:
            summary["plot"] = str(plot_rewards(metrics, self.run_dir / "reward_curve.png",
                                               f"UniGRPO on {self.cfg.data.task}: {self.run_dir.name}"))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary

    def shutdown(self) -> None:
        import ray

        if getattr(self, "_writer", None) is not None:
            self._writer.shutdown(wait=True)
        if getattr(self, "sinks", None) is not None:
            self.sinks.close()

        for name in ("learner", "reward_pool"):
            obj = getattr(self, name, None)
            if obj is not None:
                try:
                    obj.shutdown()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        for w in getattr(self, "rollout_workers", []):
            ray.kill(w)
        for pg in getattr(self, "_placement_groups", []):
            ray.util.remove_placement_group(pg)
