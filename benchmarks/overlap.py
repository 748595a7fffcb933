"""Asynchronous against synchronous rollouts at the 64-GPU MMaDA-8B constants, full weights against LoRA
adapters on the wire: the real loop (driver, rollout pipeline, Ray actors, publisher, DeepSpeed learner rank)
with each phase a sleep of the planner's predicted seconds, so the step it measures is the one this code
actually runs, next to the one `unigrpo plan --shapes` predicts (issue #20; docs/scaling.md, docs/async.md).

For each shape of `rl/plan.py compare_shapes(configs/mmada_8b_math.yaml, 64 GPUs, data.prompts_per_step=128)`
(sync_full, async_full, sync_lora, async_lora, each at its own best split of rollout and learner GPUs) the
planner gives per step: generate (the rollout GPUs' share of 1,024 rollouts), update (the learner GPUs'),
publish (16.2 GB, or the rank-64 adapters' 335.5 MB, by the object store) and driver seconds. Here one
rollout worker stands for the rollout GPUs and one learner rank for the learner GPUs:

    rollout worker   generate = a sleep of generate_s x time_scale (split over its shards)
    learner rank     update   = a sleep of update_s x time_scale; its weight gather sleeps publish_s x time_scale
    K                rollout.max_staleness = 1 for async_*, 0 for sync_*

Measured per shape: the mean step (after two warm-up steps); the ideal it should reach, the planner's
compute at time_scale (sync: generate + update + publish; async: publish + max(generate, update)); the
driver's own seconds (measured - ideal: real, not scaled). Reported: async / sync speed-up measured, at
time scale, against the planner's at time scale; and the measured overhead added to unscaled compute
(what the 64-GPU step would be with this driver).

Ends with `RESULT {json}`.

    .venv/bin/python benchmarks/overlap.py [--steps 8] [--time-scale 0.02]
    .venv/bin/python benchmarks/overlap.py --smoke    # 4 steps at time scale 0.002: a minute, figures meaningless
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from policy.placement import ensure_local_ray_env

ensure_local_ray_env()  # before ray is imported

from _common import CONFIGS, add_smoke_flag, print_result, run_driver  # noqa: E402
from scale import SleepyLearner, SleepyRolloutWorker, install_sleeps  # noqa: E402

from rl.config import load_config  # noqa: E402
from rl.plan import compare_shapes  # noqa: E402

SHAPES = ("sync_full", "async_full", "sync_lora", "async_lora")
PROMPTS, G = 16, 8  # the batch the tiny run carries; the sleeps stand for the 64-GPU batch's compute
WARMUP = 2


def shape_class(base: type, name: str, **attrs) -> type:
    """A fresh subclass per run, so each run's sleeps travel with the class Ray exports."""
    return type(name, (base,), attrs)


class PlannedRolloutWorker(SleepyRolloutWorker):
    """Generation sleeps the planner's generate_s (for the whole batch, shared over the worker's shards)."""

    generate_s = 0.0
    time_scale = 0.0  # SleepyRolloutWorker's own per-sample sleep is off; this one sleeps instead

    def _generate_text(self, jobs, generator, text_config=None):
        time.sleep(self.generate_s * len(jobs) / (PROMPTS * G))
        return super()._generate_text(jobs, generator, text_config)


class PlannedLearner(SleepyLearner):
    """The update sleeps the planner's update_s; rank 0's gather of the published weights its publish_s."""

    update_s = 0.0  # unscaled: SleepyLearner.update sleeps update_seconds() x time_scale
    publish_s = 0.0  # scaled

    def update_seconds(self, rows: int, num_responses: int) -> float:
        return self.update_s * rows / num_responses

    def full_state(self, version: int):
        time.sleep(self.publish_s)
        return super().full_state(version)


def install(phases: dict, time_scale: float, name: str) -> None:
    """Rollout workers and learner ranks start as this shape's sleepy classes (driver process)."""
    worker = shape_class(PlannedRolloutWorker, f"Worker_{name}", generate_s=phases["generate_s"] * time_scale)
    learner = shape_class(PlannedLearner, f"Learner_{name}", update_s=phases["update_s"],
                          publish_s=phases["publish_s"] * time_scale, time_scale=time_scale)
    install_sleeps(time_scale, worker, learner)


def ideal(phases: dict, asynchronous: bool) -> float:
    """The planner's step without its driver term (rl/plan.py Prediction.step_s)."""
    g, u, p = phases["generate_s"], phases["update_s"], phases["publish_s"]
    return p + max(g, u) if asynchronous else g + u + p


def measure(name: str, phases: dict, steps: int, time_scale: float, root: Path) -> dict:
    install(phases, time_scale, name)
    asynchronous = name.startswith("async")
    cfg = load_config(CONFIGS / "tiny.yaml", [
        f"run.dir={root}", f"run.name={name}", f"run.steps={steps}", "run.plot=false", "run.checkpoint_every=1000",
        "run.max_wall_s=null", f"data.prompts_per_step={PROMPTS}", f"rollout.group_size={G}",
        f"rollout.max_staleness={int(asynchronous)}", "unigrpo.mu=1", "run.trace_groups=0",
        "model.tiny={d_model: 32, n_layers: 1, n_heads: 2, codebook_size: 16, seed: 0}"])
    rows = run_driver(cfg)[1][WARMUP:]
    step = statistics.mean(r["time/step_s"] for r in rows)
    target = ideal(phases, asynchronous) * time_scale
    out = {"step_s": step, "ideal_s": target, "overhead_s": step - target,
           "phases_s_unscaled": {k: phases[k] for k in ("generate_s", "update_s", "publish_s", "driver_s")},
           "split": f"{phases['rollout_gpus']} + {phases['learner_gpus']}",
           "real_step_s": ideal(phases, asynchronous) + (step - target),
           "planner_step_s": phases["step_s"]}
    print(f"{name:>10} ({out['split']} GPUs): step {step:.3f} s, ideal {target:.3f} s (overhead {step - target:+.3f} s); "
          f"at 64 GPUs {out['real_step_s']:.1f} s with this driver, planner {phases['step_s']:.1f} s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=0.02)
    add_smoke_flag(parser, "4 steps at time scale 0.002")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.time_scale = 4, 0.002
    # the sleepy classes live in benchmarks/scale.py and here: the workers import them from this folder
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])
    import ray

    plan_cfg = load_config(CONFIGS / "mmada_8b_math.yaml", ["data.prompts_per_step=128"], planning=True)
    shapes = compare_shapes(plan_cfg, 64)
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    load = os.getloadavg()
    runs = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in SHAPES:
                runs[name] = measure(name, shapes[name], args.steps, args.time_scale, Path(tmp))
    finally:
        ray.shutdown()
    out = {"runs": runs, "time_scale": args.time_scale, "colocated_planner_step_s": shapes["colocated"]["step_s"]}
    for kind in ("full", "lora"):
        s, a = runs[f"sync_{kind}"], runs[f"async_{kind}"]
        out[f"speedup_{kind}"] = {"measured": s["step_s"] / a["step_s"], "ideal": s["ideal_s"] / a["ideal_s"],
                                  "planner_64gpu": s["planner_step_s"] / a["planner_step_s"],
                                  "with_this_driver_64gpu": s["real_step_s"] / a["real_step_s"]}
        print(f"async / sync, {kind} weights: {out[f'speedup_{kind}']['measured']:.2f}x measured at time scale "
              f"(ideal {out[f'speedup_{kind}']['ideal']:.2f}x); at 64 GPUs {out[f'speedup_{kind}']['with_this_driver_64gpu']:.2f}x "
              f"with this driver, planner {out[f'speedup_{kind}']['planner_64gpu']:.2f}x", flush=True)
    out.update(load_average_at_start=[round(x, 2) for x in load],
               load_average_at_end=[round(x, 2) for x in os.getloadavg()], cpus=os.cpu_count())
    print_result(out, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
