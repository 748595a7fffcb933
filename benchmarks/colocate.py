"""Colocated against disaggregated placement on this machine: steps/s, where each step goes, and whether
the learning curve is the same (issue #19; docs/scaling.md, "Placement modes").

The demo (`configs/demo.yaml`: the arithmetic task, its held-out set) in the real loop, two shapes with the
same total CPU (every actor asks for one logical CPU and runs one torch thread):

    disaggregated   1 rollout worker + 1 learner rank; rollout.num_shards=2 (so its rollouts are those of
                    2 colocated shards: the two curves differ only by the learner's 1-vs-2-rank reduction)
    colocated       2 learner ranks, each generating one shard, then both training; nothing published

Both start from one warm-started policy (the demo's SFT, done once here), with the same seeds, and run in
one process, alternating (d, c, d, c, ...) so machine load hits both alike. Per run, over the training
steps after `--warmup`:

    steps/s         1 / mean step wall time (time/step_s: generate + reward + update + publish + store)
    phase split     mean seconds of time/generate_s, time/reward_s, time/update_s, time/publish_s
    idle share      per actor group, 1 - busy / step: rollout workers busy = sampler compute
                    (time/gen_compute_s); learner ranks busy = update compute (learner/compute_s), plus
                    the sampler compute when colocated; reward actors busy = time/reward_compute_s

    speed-up = steps/s colocated / steps/s disaggregated, per pair (median and range reported)
    curve    = reward/mean per step and held-out accuracy at the evaluated steps, both runs side by side
    planner  = the colocated step predicted by rl/plan.py's step model calibrated on the disaggregated
               run of the same pair (`predict_colocated`), against the measured one

Ends with `RESULT {json}`.

    .venv/bin/python benchmarks/colocate.py [--steps 30] [--warmup 3] [--repeats 3]
    .venv/bin/python benchmarks/colocate.py --smoke      # 3 steps, 1 pair: seconds, figures meaningless
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import CONFIGS, add_smoke_flag, print_result, run_driver_all_rows

from policy.placement import ensure_local_ray_env
from rl.config import load_config

DEMO = CONFIGS / "demo.yaml"
MODES = {  # name -> overrides (same total CPU: two actors that compute)
    "disaggregated": ["rollout.num_workers=1", "learner.num_ranks=1", "rollout.num_shards=2"],
    "colocated": ["placement.mode=colocated", "learner.num_ranks=2"],
}


def warm_policy(root: Path, extra: list[str]) -> Path:
    """The demo's warm-started policy, built once: every run starts from the same weights (model.path)."""
    from rl import builders
    from rl.data import build_run_dataset
    from rl.warm_start import run_warm_start

    cfg = load_config(DEMO, [f"run.dir={root}", "run.name=warm", *extra])
    path = builders.build_policy(cfg, root / "warm")
    run_warm_start(cfg, build_run_dataset(cfg), path)
    return path


def run_mode(mode: str, policy: Path, root: Path, name: str, steps: int, eval_every: int, extra: list[str]) -> list[dict]:
    """One run of the real loop; its metrics.jsonl rows (training steps and held-out evaluations)."""
    cfg = load_config(DEMO, MODES[mode] + [f"model.path={policy}", f"run.steps={steps}", f"eval.every={eval_every}",
                                           f"run.dir={root}", f"run.name={name}", "run.max_wall_s=null",
                                           "run.plot=false", f"run.checkpoint_every={steps}", *extra])
    return run_driver_all_rows(cfg)[1]


def summarise(rows: list[dict], mode: str, warmup: int) -> dict:
    train = [r for r in rows if "reward/mean" in r][warmup:]

    def mean(key: str) -> float:
        return statistics.fmean(r.get(key, 0.0) for r in train)

    step = mean("time/step_s")
    gen, update = mean("time/gen_compute_s"), mean("learner/compute_s")
    learner_busy = update + (gen if mode == "colocated" else 0.0)
    idle = {"learner": 1 - learner_busy / step, "reward": 1 - mean("time/reward_compute_s") / step}
    if mode == "disaggregated":
        idle["rollout"] = 1 - gen / step
    return {
        "steps_per_s": 1 / step, "step_s": step,
        "rollouts": train[0]["rollouts"],
        "phases_s": {p: mean(f"time/{p}_s") for p in ("generate", "reward", "update", "publish", "store")},
        "gen_compute_s": gen, "update_compute_s": update, "idle_share": idle,
        "publish_bytes": mean("publish/bytes"),
    }


def predict_colocated(disaggregated: dict, rollouts: int, ranks: int = 2) -> float:
    """The planner's step model (rl/plan.py phase_times), calibrated on a disaggregated run of this machine:
    per-rollout generation g (its one worker's generate wall time / R) and update u (its one rank's
    compute / R), and everything else d (step - generate - update - publish), which colocation does not
    change. Predicted colocated step = R g / ranks + R u / ranks + d."""
    from rl.plan import phase_times

    d = disaggregated
    g, u = d["phases_s"]["generate"] / rollouts, d["update_compute_s"] / rollouts
    rest = d["step_s"] - d["phases_s"]["generate"] - d["update_compute_s"] - d["phases_s"]["publish"]
    return sum(phase_times(rollouts, g, u, 0, ranks, colocated=True)) + rest


def curve(rows: list[dict]) -> dict:
    return {"reward": [r["reward/mean"] for r in rows if "reward/mean" in r],
            "eval": {r["step"]: r["eval/accuracy"] for r in rows if "eval/accuracy" in r}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timings")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (disaggregated, colocated)")
    parser.add_argument("--eval-every", type=int, default=15)
    add_smoke_flag(parser, "3 steps, 1 pair, 16 held-out prompts")
    args = parser.parse_args()
    extra = []
    if args.smoke:
        args.steps, args.warmup, args.repeats, args.eval_every = 3, 1, 1, 3
        extra = ["eval.num_prompts=16"]
    ensure_local_ray_env()
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy = warm_policy(root, ["model.warm_start.steps=5"] if args.smoke else [])
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        curves: dict[str, dict] = {}
        for i in range(args.repeats):
            for mode in (MODES if i % 2 == 0 else reversed(list(MODES))):
                rows = run_mode(mode, policy, root, f"{mode}-{i}", args.steps, args.eval_every, extra)
                runs[mode].append(summarise(rows, mode, args.warmup))
                curves.setdefault(mode, curve(rows))
                s = runs[mode][-1]
                print(f"{mode:>14} #{i}: {s['steps_per_s']:.3f} steps/s (step {s['step_s']:.2f} s: generate "
                      f"{s['phases_s']['generate']:.2f}, reward {s['phases_s']['reward']:.2f}, update "
                      f"{s['phases_s']['update']:.2f}, publish {s['phases_s']['publish']:.3f}), idle "
                      + ", ".join(f"{k} {v:.0%}" for k, v in s["idle_share"].items()), flush=True)
    ray.shutdown()
    ratios = [c["steps_per_s"] / d["steps_per_s"] for d, c in zip(runs["disaggregated"], runs["colocated"])]
    predicted = [predict_colocated(d, d["rollouts"]) for d in runs["disaggregated"]]
    measured = [c["step_s"] for c in runs["colocated"]]
    errors = [p / m - 1 for p, m in zip(predicted, measured)]
    d_curve, c_curve = curves["disaggregated"], curves["colocated"]
    reward_gap = max(abs(a - b) for a, b in zip(d_curve["reward"], c_curve["reward"]))
    steps_evaluated = sorted(set(d_curve["eval"]) & set(c_curve["eval"]))
    result = {
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
        "speedups": ratios, "goal": 1.5,
        "runs": runs,
        "planner": {"predicted_colocated_step_s": predicted, "measured_colocated_step_s": measured,
                    "relative_error": errors},
        "reward_curve": {"disaggregated": d_curve["reward"], "colocated": c_curve["reward"],
                         "max_abs_gap": reward_gap},
        "heldout_accuracy": {str(s): {"disaggregated": d_curve["eval"][s], "colocated": c_curve["eval"][s]}
                             for s in steps_evaluated},
        "load_average_at_start": [round(x, 2) for x in load], "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    print(f"colocated / disaggregated steps/s: median {result['speedup_median']:.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}, {args.repeats} pairs); reward curves differ by at most "
          f"{reward_gap:.4f}; held-out accuracy {result['heldout_accuracy']}", flush=True)
    print("planner (calibrated on each disaggregated run): colocated step predicted "
          + ", ".join(f"{p:.3f} s vs measured {m:.3f} s ({e:+.0%})" for p, m, e in zip(predicted, measured, errors)),
          flush=True)
    print_result(result, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
