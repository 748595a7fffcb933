"""The single-controller UniGRPO loop (docs/architecture.md, "One RL step"), with real Ray actors.

    prompts  = dataset.next_batch()                   resumable cursor
    records  = rollout_group.generate(prompts, G)     N Ray actors; sharding, retries, restarts inside
    scores   = reward pool .score(records)            separate Ray actors, per-call timeouts
    adv      = group_normalise(weighted sum of scores)
    stats    = learner group .update(train batch)     M DeepSpeed ranks, mu UniGRPO iterations
    publisher.publish()                               learner -> rollout workers, one version counter
    store.append(step, records); metrics.log(step, stats, timings)
    every k steps (and on SIGINT/SIGTERM): checkpoint learner + driver state

Each config section builds its own runtime object (`cfg.rollout.build(...)`, ...). A lost learner rank
ends the step: the learner group restarts from the last checkpoint (up to run.max_restarts times), and so
does the driver after any other unexpected error in a step. Checkpoints are atomic and verified
(rl/checkpoints.py), so whatever stops a run, it resumes from its last good one (docs/reliability.md).
An update whose loss or gradient norm is NaN/inf is skipped by the learner; after
learner.max_skipped_updates of them in a row the run stops (TrainingDiverged), never as a success.
Every rollout carries the policy version it was sampled from, so an asynchronous variant (rollouts of
step t+1 overlapping the update of step t) can come later without changing the data.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from policy.placement import ensure_local_ray_env
from rl.advantages import group_normalise
from rl.checkpoints import CheckpointSpaceError, CheckpointStore, estimate_checkpoint_bytes
from rl.config import RunConfig, save_resolved
from rl.data import MixtureDataset, PromptDataset, build_run_dataset, task_kind
from rl.evaluation import Evaluator, build_eval_prompts, eval_line, eval_summary, score_records
from rl.loggers import MetricSinks
from rl.metrics import MetricsLog, console_line, mean, per_task_summary, plot_rewards, step_metrics
from rl.store import RolloutStore

__all__ = ["Driver", "ensure_local_ray_env"]
DRIVER_STATE = "driver_state.json"


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


class LearnerLost(RuntimeError):
    """A learner rank died: the step cannot finish; the group restarts from the last checkpoint."""


class TrainingDiverged(RuntimeError):
    """Too many updates in a row had a NaN/inf loss or gradient norm (each was skipped, not applied)."""


class Driver:
    def __init__(self, cfg: RunConfig, run_dir: Path | None = None, resume: bool = False, console: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.resume = resume
        self.console = console
        self.step = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.stop = GracefulStop()
        self.learner_restarts = 0
        self.driver_restarts = 0  # restarts from the last checkpoint after any other error in a step
        self.skipped_in_a_row = 0  # updates skipped for a NaN/inf loss or gradient norm
        self.dataset: PromptDataset | MixtureDataset | None = None
        self._reward_busy_last = self._model_busy_last = 0.0

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
        policy_path = cfg.model.build(self.run_dir)
        self.checkpoints = CheckpointStore(self.run_dir, cfg.run.checkpoint_margin_gb)
        self._checkpoint_estimate = estimate_checkpoint_bytes(policy_path)
        if cfg.model.warm_start is not None and cfg.model.path is None:
            self._warm_start(policy_path)
        cfg.ray.start(needed_cpus=cfg.rollout.num_workers + cfg.rewards.num_workers + cfg.rewards.num_model_workers
                      + cfg.learner.num_ranks)
        wait = cfg.ray.placement_timeout_s
        self.rollout = cfg.rollout.build(policy_path, cfg.model, wait)
        self.reward_pool = cfg.rewards.build(self.run_dir, cfg.run.seed, wait)
        self.learner = cfg.learner.build(policy_path, cfg.run, cfg.unigrpo, wait, cfg.rollout.text.temperature)
        from rl.weights import WeightPublisher

        self.publisher = WeightPublisher(self.learner, self.rollout, cfg.run.weight_transport)
        eval_prompts = build_eval_prompts(cfg)
        self.evaluator = Evaluator(cfg.eval, eval_prompts, self.rollout, self.reward_pool,
                                   RolloutStore(self.run_dir, "evals"), self._score) if eval_prompts else None
        self._evaluated_at: int | None = None
        if self.resume:
            self._restore(self._latest_checkpoint(required=True))

    def _warm_start(self, policy_path: Path) -> None:
        """SFT of the freshly built tiny policy on parts of its tasks, never a task (rl/warm_start.py)."""
        from rl.warm_start import run_warm_start

        info = run_warm_start(self.cfg, self.dataset, policy_path)
        if info is not None:
            self._say(f"warm start ({', '.join(self.cfg.model.warm_start.tasks)}): {info['steps']} SFT steps on "
                      f"{info['examples']} examples in {info['seconds']} s, "
                      f"loss {info['loss_first10']:.3f} -> {info['loss_last10']:.3f}")

    def evaluate(self) -> dict | None:
        """Held-out evaluation of the current policy (rl/evaluation.py), logged as eval/* at this step."""
        if self.evaluator is None or self._evaluated_at == self.step:
            return None
        t0 = time.perf_counter()
        m = self.evaluator.run(self.step, self.cfg.run.seed * 1_000_003 + self.step)
        m["time/eval_s"] = time.perf_counter() - t0
        self.metrics.log(self.step, m)
        self.sinks.log(self.step, m)  # every logger (tensorboard, wandb, mlflow) gets eval/* too
        self._evaluated_at = self.step
        self._say(eval_line(self.step, m))
        return m

    # ------------------------------------------------------------------ checkpoints
    def flush_store(self) -> None:
        """Wait for the pending rollout-store write (a write error surfaces here)."""
        pending = getattr(self, "_store_write", None)
        if pending is not None:
            pending.result()  # re-raises a failed write here, in the driver
            self._store_write = None

    def checkpoint(self) -> Path:
        """Written into a temporary folder and published by a rename (rl/checkpoints.py): a crash or a
        full disk in the middle leaves the previous checkpoint, and `latest`, as they were."""
        self.flush_store()
        state = {"step": self.step, "run_id": self.run_id, "data_cursor": self.dataset.state_dict()}
        # the driver draws no random numbers: rollout seeds derive from (run.seed, step) and the
        # learner's masks from (seed, update index); the learner checkpoints its RNG states and version
        with self.checkpoints.writing(self.step, self._checkpoint_estimate) as tmp:
            with self._learner_calls():
                self.learner.save_checkpoint(str(tmp), extra_state={"driver": state})
            (tmp / DRIVER_STATE).write_text(json.dumps(state))
        return self.run_dir / "checkpoints" / f"step_{self.step}"

    def _latest_checkpoint(self, required: bool = False) -> Path | None:
        """The newest checkpoint that verifies (`latest` first, then older ones)."""
        ckpt = self.checkpoints.latest_valid()
        if ckpt is None and required:
            raise FileNotFoundError(f"{self.run_dir}: no usable checkpoint to resume from")
        return ckpt

    def _restore(self, ckpt: Path | None) -> None:
        """Learner, data cursor, metrics and store back to checkpoint `ckpt` (None: the start of the run)."""
        if ckpt is None:
            self.step, self.dataset = 0, build_run_dataset(self.cfg)
        else:
            self.learner.load_checkpoint(str(ckpt))
            state = json.loads((ckpt / DRIVER_STATE).read_text())
            self.step, self.run_id = state["step"], state["run_id"]
            self.dataset.load_state_dict(state["data_cursor"])
        self.flush_store()
        self.metrics.truncate_after(self.step)
        self.store.truncate_after(self.step)
        self.publisher.publish()

    @contextmanager
    def _learner_calls(self):
        import ray

        try:
            yield
        except ray.exceptions.RayActorError as err:
            raise LearnerLost(str(err).splitlines()[0]) from err

    def _recover(self, err: Exception) -> None:
        """Restart from the last good checkpoint: a new learner group when a rank was lost; for any
        other error the learner state is reloaded too (the failed step may have updated it)."""
        used = self.learner_restarts + self.driver_restarts
        if used >= self.cfg.run.max_restarts:
            what = "learner lost" if isinstance(err, LearnerLost) else f"{type(err).__name__} in a step"
            raise RuntimeError(f"{what} again after {used} restarts (run.max_restarts="
                               f"{self.cfg.run.max_restarts}): {err}") from err
        ckpt = self._latest_checkpoint()
        if isinstance(err, LearnerLost):
            self.learner_restarts += 1
            self._say(f"learner rank lost ({err}); restart {used + 1}/{self.cfg.run.max_restarts}: "
                      f"new learner group from {ckpt.name if ckpt else 'the initial policy'}")
            self.learner.restart()
        else:
            self.driver_restarts += 1
            print(f"unigrpo: {type(err).__name__} in step {self.step + 1}: {err}; restart {used + 1}/"
                  f"{self.cfg.run.max_restarts} from {ckpt.name if ckpt else 'the initial policy'}",
                  file=sys.stderr, flush=True)
            if ckpt is None:
                self.learner.restart()  # back to the initial policy
        pending, self._store_write = getattr(self, "_store_write", None), None
        if pending is not None:  # let a write in flight finish (or fail): _restore truncates after ckpt
            with suppress(Exception):
                pending.result()
        self._restore(ckpt)

    def _say(self, line: str) -> None:
        if self.console:
            print(line, flush=True)

    # ------------------------------------------------------------------ one step
    def _score(self, records) -> np.ndarray:
        return score_records(self.reward_pool, records)

    def run_step(self) -> dict:
        from trainer.batch import batch_from_rollouts

        cfg, timer, t0, step = self.cfg, StepTimer(), time.perf_counter(), self.step + 1
        prompts = self.dataset.next_batch(cfg.data.prompts_per_step)
        with timer.time("generate"):
            records = self.rollout.generate(prompts, cfg.rollout.group_size, seed=cfg.run.seed * 1_000_003 + step)
        with timer.time("reward"):
            rewards = self._score(records)
        adv = group_normalise(rewards, np.array([r.group for r in records]), cfg.advantages.eps,
                              cfg.advantages.drop_zero_variance_groups)
        for r, a in zip(records, adv.values):
            r.advantage, r.step = float(a), step
        kept = [i for i in range(len(records)) if adv.keep[i]]  # every row is the context the sampler saw
        batch = batch_from_rollouts([records[i] for i in kept], adv.values[kept],
                                    tasks=[task_kind(records[i].task) for i in kept]) if kept else None
        stats = {}
        with self._learner_calls():
            with timer.time("update"):
                if batch is not None:
                    stats = self.learner.update(batch)
            published = self.publisher.publish()
        # a NaN/inf loss or gradient norm: the learner skipped the update (weights unchanged); counted
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if stats.get("skipped_steps", 0) else 0
        with timer.time("store"):
            # written in the background while the next step generates; joined before the next write,
            # a checkpoint, or the end of the run, so a checkpoint never precedes its rollouts
            self.flush_store()
            self._store_write = self._writer.submit(self.store.append, step, records)
        self.step = step
        # actor-side scoring time since the last step (a restarted actor starts again from 0)
        busy, model_busy = self.reward_pool.busy_seconds(), self.reward_pool.busy_seconds("model")
        reward_compute_s, self._reward_busy_last = max(0.0, busy - self._reward_busy_last), busy
        clip_compute_s, self._model_busy_last = max(0.0, model_busy - self._model_busy_last), model_busy
        m = step_metrics(records, rewards, adv, stats, timer.phases, published)
        if any(task_kind(r.task) == "t2i" for r in records):  # where an image step's time goes
            m.update({"time/image_gen_compute_s": self.rollout.last_timings["image_gen_s"],
                      "time/image_decode_s": self.rollout.last_timings["decode_s"],
                      "time/clip_compute_s": clip_compute_s})
        m.update({
            "restarts/rollout": self.rollout.restarts,
            "restarts/reward": self.reward_pool.actor_restarts,
            "reward/retries": self.reward_pool.stats().get("retries", 0),
            "restarts/learner": self.learner_restarts,
            "restarts/driver": self.driver_restarts,
            "learner/skipped_in_a_row": self.skipped_in_a_row,
            "time/step_s": time.perf_counter() - t0,
            "time/gen_compute_s": self.rollout.last_timings["gen_s"],
            "time/reward_compute_s": reward_compute_s,
        })
        m["throughput/rollouts_per_s"] = len(records) / m["time/step_s"]
        m["throughput/tokens_per_s"] = sum(len(r.response_ids) for r in records) / m["time/step_s"]
        m["time/unix"] = time.time()
        self.metrics.log(step, m)
        self.sinks.log(step, m)
        limit = cfg.learner.max_skipped_updates
        if self.skipped_in_a_row >= limit:
            ckpt = self._latest_checkpoint()
            raise TrainingDiverged(
                f"{self.skipped_in_a_row} updates in a row were skipped: the loss or gradient norm was NaN/inf "
                f"(step {step}: loss {stats.get('loss')}, grad_norm {stats.get('grad_norm')}); stopping "
                f"(learner.max_skipped_updates={limit}). The weights never took a NaN; last checkpoint: "
                f"{ckpt if ckpt else 'none'} (resume with a lower learner.lr or check the rewards)")
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
                self.publisher.publish()
                self.evaluate()  # step 0: the policy RL starts from
            while self.step < cfg.run.steps:
                try:
                    m = self.run_step()
                    bar.update(1)
                    if self.console:
                        bar.write(console_line(self.step, cfg.run.steps, m))
                    if self.step % cfg.run.checkpoint_every == 0:
                        self.checkpoint()
                    if self.evaluator is not None and self.evaluator.due(self.step, cfg.run.steps):
                        self.evaluate()
                except (TrainingDiverged, CheckpointSpaceError):
                    raise  # a restart would not help: stop, with the last good checkpoint intact
                except Exception as err:  # noqa: BLE001 - LearnerLost or anything unplanned
                    self._recover(err)
                    bar.n = self.step
                    continue
                out_of_time = cfg.run.max_wall_s is not None and time.time() - start > cfg.run.max_wall_s
                if self.stop.requested or out_of_time:
                    interrupted = self.stop.requested
                    if out_of_time:
                        self.evaluate()  # a slow machine shortens the run by steps, never by its last evaluation
                    break
        finally:
            bar.close()
            self.stop.restore()
        last_ckpt = self.run_dir / "checkpoints" / f"step_{self.step}"
        if not last_ckpt.exists() or self.checkpoints.verify(last_ckpt) is not None:
            self.checkpoint()
        summary = self.summarise(time.time() - start, interrupted)
        return summary

    def summarise(self, wall_s: float, interrupted: bool) -> dict:
        self.flush_store()
        metrics = self.metrics.read()
        evals = eval_summary(metrics)
        metrics = [m for m in metrics if "reward/mean" in m]  # step rows (eval rows are apart)
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
            **evals,
            "policy_version": self.learner.policy_version,
            "run_dir": str(self.run_dir),
            "restarts": {"rollout": self.rollout.restarts, "learner": self.learner_restarts,
                         "driver": self.driver_restarts, "reward": self.reward_pool.actor_restarts},
            "reward_stats": self.reward_pool.stats(),
        }
        if self.cfg.run.plot and metrics:
            summary["plot"] = str(plot_rewards(self.metrics.read(), self.run_dir / "reward_curve.png",
                                               f"UniGRPO on {self.cfg.data.task}: {self.run_dir.name}"))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary

    def shutdown(self) -> None:
        if getattr(self, "_writer", None) is not None:
            self._writer.shutdown(wait=True)
        if getattr(self, "sinks", None) is not None:
            self.sinks.close()
        for name in ("learner", "reward_pool", "rollout"):
            obj = getattr(self, name, None)
            if obj is not None:
                try:
                    obj.shutdown()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
