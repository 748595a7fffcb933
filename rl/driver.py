"""The single-controller UniGRPO loop (docs/architecture.md, "One RL step"), with real Ray actors.

    prompts = dataset.next_batch()                        resumable cursor
    records = rollout.generate(prompts, G, seed)          RolloutGroup: N Ray workers, sharding and retries
    rewards = scored as each shard arrives                RewardPool: separate Ray actors, per-call timeouts
    adv     = group_normalise(rewards, groups)            rl/advantages.py
    stats   = learner.update(batch_from_rollouts(...))    LearnerGroup: M DeepSpeed ranks, mu iterations
    publisher.publish()                                   learner -> rollout workers, one version counter
    store + metrics                                       Parquet partition, metrics.jsonl, loggers
    every k steps (and on SIGINT/SIGTERM): checkpoint     rl/recovery.py

The groups are built by rl/builders.py from the validated config; the driver only runs the loop. Faults
(rl/recovery.py): a lost learner rank ends the step and the learner group restarts from the last good
checkpoint, as does the driver after any other unexpected error in a step (up to run.max_restarts in
all). An update whose loss or gradient norm is NaN/inf is skipped by the learner; after
learner.max_skipped_updates in a row the run stops (TrainingDiverged), never as a success. Every rollout
carries the policy version it was sampled from.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from rewards.pool import RewardPool
from rl import builders
from rl.advantages import group_normalise
from rl.checkpoints import CheckpointSpaceError, disk_full, estimate_checkpoint_bytes
from rl.colocated import ColocatedPublisher, ColocatedRolloutGroup
from rl.config import RunConfig, save_resolved
from rl.data import MixtureDataset, PromptDataset, build_run_dataset
from rl.evaluation import Evaluator, build_eval_prompts, eval_line, eval_summary
from rl.loggers import MetricSinks
from rl.metrics import MetricsLog, console_line, plot_rewards
from rl.pipeline import RolloutPipeline, split_stale
from rl.recovery import (
    GracefulStop,
    LearnerLost,
    RestartBudget,
    RunCheckpoints,
    TrainingDiverged,
    learner_calls,
)
from rl.scoring import score_records
from rl.step_report import BusyMeter, StepTimer, late_calls, report_step, run_summary
from rl.store import BackgroundWriter, RolloutStore
from rl.tasks import get_task
from rl.token_traces import trace_table, traced_rows
from rl.weights import WeightPublisher
from rollout.group import RolloutGroup
from rollout.record import task_kind
from trainer.learner_group import LearnerGroup

__all__ = ["Driver", "LearnerLost", "TrainingDiverged", "step_seed"]


def step_seed(run_seed: int, step: int) -> int:
    """The sampling seed of step `step` (and of the held-out evaluation at it): the driver draws no random
    numbers itself, so a resumed run samples exactly what the uninterrupted one did."""
    return run_seed * 1_000_003 + step


class Driver:
    """Owns one run: its groups (rollout, rewards, learner), its data cursor, its files, and the loop."""

    def __init__(self, cfg: RunConfig, run_dir: Path | None = None, resume: bool = False, console: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
        self.resume, self.console = resume, console
        self.step = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.stop = GracefulStop()
        self.watchdog = builders.build_watchdog(cfg)  # deadlines for every wait on an actor
        self.restarts = RestartBudget(cfg.run.max_restarts)
        self.skipped_in_a_row = 0  # updates skipped for a NaN/inf loss or gradient norm
        self._reward_busy, self._clip_busy = BusyMeter(), BusyMeter()
        self._evaluated_at: int | None = None
        self._console_score = get_task(cfg.data.task).console_metric  # (label, metric) the console shows
        # set by setup(), in this order
        self.dataset: PromptDataset | MixtureDataset | None = None
        self.metrics: MetricsLog | None = None
        self.sinks: MetricSinks | None = None
        self.store: RolloutStore | None = None
        self.writer: BackgroundWriter | None = None
        self.checkpoints: RunCheckpoints | None = None
        self.rollout: RolloutGroup | ColocatedRolloutGroup | None = None  # the same generate(); placement.mode
        self.reward_pool: RewardPool | None = None
        self.learner: LearnerGroup | None = None
        self.publisher: WeightPublisher | ColocatedPublisher | None = None
        self.evaluator: Evaluator | None = None
        self.pipeline: RolloutPipeline | None = None  # where each step's batch comes from (rl/pipeline.py)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, self.run_dir)
        self.metrics = MetricsLog(self.run_dir)
        self.sinks = MetricSinks(cfg.run.loggers, self.run_dir, self.run_dir.name, cfg.model_dump(mode="json"),
                                 samples=cfg.run.tracker_samples)
        self.store = RolloutStore(self.run_dir)
        self.writer = BackgroundWriter(self.store)
        self.dataset = build_run_dataset(cfg)  # bad rows fail here, before any actor starts
        policy_path = builders.build_policy(cfg, self.run_dir)
        self.store.ranges = builders.token_ranges(policy_path)  # the store's cut and odd-token-id flags
        self.checkpoints = RunCheckpoints(self.run_dir, cfg.run.checkpoint_margin_gb,
                                          estimate_checkpoint_bytes(policy_path))
        if cfg.model.warm_start is not None and cfg.model.path is None:
            self._warm_start(policy_path)
        builders.start_ray(cfg)
        # placement.mode decides what these are (rl/builders.py: build_groups); the loop is the same
        self.rollout, self.reward_pool, self.learner, self.publisher = builders.build_groups(
            cfg, policy_path, self.run_dir, self.watchdog)
        self.pipeline = RolloutPipeline(cfg, self.dataset, self.rollout, self.reward_pool, self.publisher)
        eval_prompts = build_eval_prompts(cfg)
        if eval_prompts:
            self.evaluator = Evaluator(cfg.eval, eval_prompts, self.rollout, self.reward_pool,
                                       RolloutStore(self.run_dir, "evals", self.store.ranges), self._score)
        if self.resume:
            self._restore(self.checkpoints.latest(required=True))

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
        if self.pipeline is not None and self.pipeline.asynchronous:
            self.pipeline.publish_if_behind()  # the batch in flight finishes; the workers get the current weights
        t0 = time.perf_counter()
        m = self.evaluator.run(self.step, step_seed(self.cfg.run.seed, self.step))
        m["time/eval_s"] = time.perf_counter() - t0
        self.metrics.log(self.step, m)
        self.sinks.log(self.step, m)  # every logger (tensorboard, wandb, mlflow) gets eval/* too
        self._evaluated_at = self.step
        self._say(eval_line(self.step, m))
        return m

    # ------------------------------------------------------------------ checkpoints and recovery
    def flush_store(self) -> None:
        """Wait for the pending rollout-store write (a write error surfaces here)."""
        self.writer.flush()

    def checkpoint(self) -> Path:
        """Learner + driver state at this step (atomic and verified: rl/recovery.py, rl/checkpoints.py); once it
        verifies, checkpoints beyond run.keep_checkpoints are removed (the best held-out one stays)."""
        try:
            self.flush_store()
        except OSError as err:
            if disk_full(err):  # the rollouts of this step could not be written: no checkpoint without them
                raise self.checkpoints.out_of_space(err, self.step) from err
            raise
        state = {"step": self.step, "run_id": self.run_id, "data_cursor": self.pipeline.data_state()}
        path = self.checkpoints.save(self.step, self.learner, state)
        self.checkpoints.prune(path, self.cfg.run.keep_checkpoints, self.metrics)
        return path

    def _restore(self, ckpt: Path | None) -> None:
        """Learner, data cursor, metrics and store back to checkpoint `ckpt` (None: the start of the run)."""
        self.pipeline.discard()  # a batch in flight belongs to the abandoned steps
        if ckpt is None:
            self.step, self.dataset = 0, build_run_dataset(self.cfg)
            self.pipeline.dataset = self.dataset
        else:
            state = self.checkpoints.load(ckpt, self.learner)
            self.step, self.run_id = state["step"], state["run_id"]
            self.dataset.load_state_dict(state["data_cursor"])
        self.flush_store()
        self.metrics.truncate_after(self.step)
        self.store.truncate_after(self.step)
        self.publisher.publish()

    def _recover(self, err: Exception) -> None:
        """Restart from the last good checkpoint: a new learner group when a rank was lost (or when there is
        no checkpoint to reload); for any other error the learner state is reloaded from it."""
        ckpt = self.checkpoints.latest()
        line = self.restarts.spend(err, ckpt, self.step + 1)  # raises when no restart is left
        if isinstance(err, LearnerLost):
            self._say(line)
        else:
            print(line, file=sys.stderr, flush=True)
        if isinstance(err, LearnerLost) or ckpt is None:
            self.learner.restart()
        self.writer.settle()  # a write in flight finishes (or fails): _restore truncates after ckpt
        self._restore(ckpt)

    def _say(self, line: str) -> None:
        if self.console:
            print(line, flush=True)

    # ------------------------------------------------------------------ one step
    def _score(self, records) -> np.ndarray:
        return score_records(self.reward_pool, records)

    def run_step(self) -> dict:
        from trainer.batch import batch_from_rollouts

        cfg, timer, step = self.cfg, StepTimer(), self.step + 1
        self.watchdog.step = step
        scored = self.pipeline.take(step)  # generated now, or (max_staleness >= 1) during the last update
        timer.phases.update(generate=scored.generate_s, reward=scored.reward_s)
        for name, (t0, t1) in scored.spans.items():
            timer.span(name, t0, t1)
        records, rewards = scored.records, scored.rewards
        t0 = time.perf_counter()
        published = self.pipeline.ahead(step + 1)  # async: the next batch generates during this update
        if published:
            timer.span("publish", t0, time.perf_counter())
        fresh, staleness = split_stale(records, self.learner.policy_version, cfg.rollout.max_staleness)
        adv = group_normalise(rewards, np.array([r.group for r in records]), cfg.advantages.eps,
                              cfg.advantages.drop_zero_variance_groups)
        for r, a in zip(records, adv.values):
            r.advantage, r.step = float(a), step
        kept = [i for i in fresh if adv.keep[i]]  # every row is the context the sampler saw
        versions = [records[i].policy_version for i in kept] if self.pipeline.asynchronous else None
        batch = batch_from_rollouts([records[i] for i in kept], adv.values[kept],
                                    tasks=[task_kind(records[i].task) for i in kept], versions=versions) if kept else None
        if batch is not None and cfg.run.trace_groups:  # token traces of a few groups (rl/token_traces.py)
            batch.trace = traced_rows(np.array([records[i].group for i in kept]), cfg.run.trace_groups)
        stats = {}
        with learner_calls():
            with timer.time("update"):
                if batch is not None:
                    stats = self.learner.update(batch)
            if not self.pipeline.asynchronous:
                t0 = time.perf_counter()
                published = self.publisher.publish()
                timer.span("publish", t0, time.perf_counter())
            elif not published:  # nothing published this step: the workers' version, 0 bytes
                published = {"publish/transport": "none", "publish/version": self.rollout.version,
                             "publish/receivers": 0, "publish/bytes": 0, "time/publish_s": 0.0}
        # a NaN/inf loss or gradient norm: the learner skipped the update (weights unchanged); counted
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if stats.get("skipped_steps", 0) else 0
        trace = stats.pop("token_trace", None)
        traces = None if trace is None else trace_table(step, [records[i] for i in kept], trace)
        with timer.time("store"):
            # written in the background while the next step generates (joined before the next write, a
            # checkpoint, or the end of the run, so a checkpoint never precedes its rollouts)
            self.writer.submit(step, records, traces)
        self.step = step
        m = report_step(records, rewards, adv, stats, timer, published, rollout=self.rollout,
                        reward_pool=self.reward_pool, reward_busy=self._reward_busy, clip_busy=self._clip_busy,
                        counters=self._counters(), has_images=any(task_kind(r.task) == "t2i" for r in records),
                        gen_timings=scored.gen_timings)
        if self.pipeline.asynchronous:
            m.update(staleness)
        m.update(late_calls(self.watchdog.take_events()))  # only in steps where an actor was late
        self.metrics.log(step, m)
        self.sinks.log(step, m, records)  # and a few of the step's rollouts as a table (run.tracker_samples)
        if self.skipped_in_a_row >= cfg.learner.max_skipped_updates:
            raise self._diverged(step, stats)
        return m

    def _counters(self) -> dict[str, int]:
        return {"learner": self.restarts.learner, "driver": self.restarts.driver,
                "skipped_in_a_row": self.skipped_in_a_row}

    def _diverged(self, step: int, stats: dict) -> TrainingDiverged:
        ckpt = self.checkpoints.latest()
        return TrainingDiverged(
            f"{self.skipped_in_a_row} updates in a row were skipped: the loss or gradient norm was NaN/inf "
            f"(step {step}: loss {stats.get('loss')}, grad_norm {stats.get('grad_norm')}); stopping "
            f"(learner.max_skipped_updates={self.cfg.learner.max_skipped_updates}). The weights never took a "
            f"NaN; last checkpoint: {ckpt if ckpt else 'none'} (resume with a lower learner.lr or check the rewards)")

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        from tqdm import tqdm

        cfg, start, interrupted = self.cfg, time.time(), False
        self.stop.install()
        bar = tqdm(total=cfg.run.steps, initial=self.step, desc="unigrpo", unit="step", dynamic_ncols=True,
                   disable=not (self.console and sys.stderr.isatty()), leave=False)
        try:
            if self.step == 0 and not self.resume:
                self.publisher.publish()
                self.evaluate()  # step 0: the policy RL starts from
            while self.step < cfg.run.steps:
                try:
                    m = self.run_step()
                    bar.update(1)
                    if self.console:
                        bar.write(console_line(self.step, cfg.run.steps, m, self._console_score))
                    if self.step % cfg.run.checkpoint_every == 0:
                        self.checkpoint()
                    if self.evaluator is not None and self.evaluator.due(self.step, cfg.run.steps):
                        self.evaluate()
                except (TrainingDiverged, CheckpointSpaceError):
                    raise  # a restart would not help: stop, with the last good checkpoint intact
                except Exception as err:  # noqa: BLE001 - LearnerLost or anything unplanned
                    if disk_full(err):  # the rollout store or metrics.jsonl: a restart would meet the same disk
                        raise self.checkpoints.out_of_space(err, self.step) from err
                    try:
                        self._recover(err)
                    except Exception as again:  # noqa: BLE001 - the recovery's own writes met a full disk
                        if disk_full(again):
                            raise self.checkpoints.out_of_space(again, self.step) from again
                        raise
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
        if not self.checkpoints.has_valid(self.step):
            self.checkpoint()
        return self.summarise(time.time() - start, interrupted)

    def summarise(self, wall_s: float, interrupted: bool) -> dict:
        self.flush_store()
        rows = self.metrics.read()
        summary = run_summary(
            rows, eval_summary(rows), run_id=self.run_id, steps=self.step, wall_s=round(wall_s, 2),
            interrupted=interrupted, policy_version=self.learner.policy_version, run_dir=str(self.run_dir),
            restarts={"rollout": self.rollout.restarts, "learner": self.restarts.learner,
                      "driver": self.restarts.driver, "reward": self.reward_pool.restarts},
            reward_stats=self.reward_pool.stats())
        if self.cfg.run.plot and any("reward/mean" in m for m in rows):
            summary["plot"] = str(plot_rewards(rows, self.run_dir / "reward_curve.png",
                                               f"UniGRPO on {self.cfg.data.task}: {self.run_dir.name}"))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary

    def shutdown(self) -> None:
        if self.pipeline is not None:
            try:
                self.pipeline.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if self.writer is not None:
            self.writer.close()
        if self.sinks is not None:
            self.sinks.close()
        for group in (self.learner, self.reward_pool, self.rollout):
            if group is not None:
                try:
                    group.shutdown()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
