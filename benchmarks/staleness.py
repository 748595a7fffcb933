"""Asynchronous rollouts on this machine: the disaggregated demo with rollout.max_staleness K = 0 (the
synchronous loop, the baseline), 1 and 2, 3 seeds each (issue #20; docs/async.md).

The demo (`configs/demo.yaml`: 1 rollout worker + 1 learner rank, the arithmetic task and its held-out
set), every run from one warm-started policy (built once), seeds 0, 1, 2 (run.seed: sampling and masks),
runs interleaved (seed by seed, K = 0, 1, 2) so machine load falls on all alike. A K may name the off-policy
objective (`1:behaviour`, `1:decoupled`; plain `1` is the configured default, unigrpo.off_policy). Per run,
over the training steps after `--warmup`:

    steps/s       1 / mean step wall time (time/step_s)
    idle share    mean time/idle/rollout, time/idle/learner (1 - the group's compute / step wall time)
    staleness     records per lag (async/lag_k), dropped records, mean learner/ess_fraction, mean clip fraction
    learning      held-out accuracy (greedy, all 168 questions) at steps 0, --eval-every, ..., --steps

    speed-up = steps/s at K / steps/s at K = 0, per seed (the same seed's runs side by side); mean and range
    accuracy gap = mean over seeds of final held-out accuracy at K minus at K = 0 (goal: within 0.05)

Ends with `RESULT {json}`.

    .venv/bin/python benchmarks/staleness.py [--steps 60] [--eval-every 30] [--seeds 0,1,2] [--ks 0,1,2]
    .venv/bin/python benchmarks/staleness.py --ks 0,1:decoupled,1:behaviour   # the two objectives side by side
    .venv/bin/python benchmarks/staleness.py --smoke    # 3 steps, one seed, K = 0, 1: seconds, figures meaningless
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import CONFIGS, add_smoke_flag, print_result, run_driver_all_rows
from colocate import warm_policy

from policy.placement import ensure_local_ray_env
from rl.config import load_config

DEMO = CONFIGS / "demo.yaml"


def run(policy: Path, root: Path, k: str, seed: int, steps: int, eval_every: int, extra: list[str]) -> list[dict]:
    staleness, _, objective = k.partition(":")  # "1:behaviour": K = 1 with unigrpo.off_policy=behaviour
    overrides = [f"unigrpo.off_policy={objective}"] if objective else []
    cfg = load_config(DEMO, [f"model.path={policy}", f"rollout.max_staleness={staleness}", f"run.seed={seed}",
                             f"run.steps={steps}", f"eval.every={eval_every}", f"run.dir={root}",
                             f"run.name=k{staleness}{objective}-s{seed}", "run.max_wall_s=null", "run.plot=false",
                             f"run.checkpoint_every={steps}", *overrides, *extra])
    return run_driver_all_rows(cfg)[1]


def summarise(rows: list[dict], warmup: int) -> dict:
    train = [r for r in rows if "reward/mean" in r]
    timed = train[warmup:]

    def mean(key: str, default: float = 0.0) -> float:
        return statistics.fmean(r.get(key, default) for r in timed)

    lags: dict[str, int] = {}
    for r in train:
        for key, n in r.items():
            if key.startswith("async/lag_"):
                lags[key[len("async/"):]] = lags.get(key[len("async/"):], 0) + n
    evals = {r["step"]: r["eval/accuracy"] for r in rows if "eval/accuracy" in r}
    return {"steps_per_s": 1 / mean("time/step_s"), "step_s": mean("time/step_s"),
            "update_s": mean("time/update_s"), "generate_wait_s": mean("time/generate_s"),
            "idle_rollout": mean("time/idle/rollout"), "idle_learner": mean("time/idle/learner"),
            "ess_fraction": mean("learner/ess_fraction", 1.0), "clip_frac": mean("learner/clip_frac"), "lags": lags,
            "dropped": sum(r.get("async/dropped", 0) for r in train), "heldout": evals,
            "final_heldout": evals[max(evals)] if evals else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ks", default="0,1,2")
    parser.add_argument("--policy", type=Path, help="a warm-started demo policy to start every run from (default: "
                        "built here first; pass one to reuse it across invocations)")
    add_smoke_flag(parser, "3 steps, seed 0, K = 0 and 1, 16 held-out prompts")
    args = parser.parse_args()
    extra = []
    if args.smoke:
        args.steps, args.warmup, args.eval_every, args.seeds, args.ks = 3, 1, 3, "0", "0,1"
        extra = ["eval.num_prompts=16"]
    seeds, ks = [int(s) for s in args.seeds.split(",")], args.ks.split(",")
    ensure_local_ray_env()
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    load = os.getloadavg()
    runs: dict[str, dict[int, dict]] = {k: {} for k in ks}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy = args.policy or warm_policy(root, ["model.warm_start.steps=5"] if args.smoke else [])
        for seed in seeds:
            for k in ks:
                s = runs[k][seed] = summarise(run(policy, root, k, seed, args.steps, args.eval_every, extra), args.warmup)
                print(f"K={k} seed {seed}: {s['steps_per_s']:.3f} steps/s (update {s['update_s']:.2f} s, waiting for "
                      f"rollouts {s['generate_wait_s']:.2f} s), idle rollout {s['idle_rollout']:.0%} learner "
                      f"{s['idle_learner']:.0%}, ESS {s['ess_fraction']:.3f}, clip {s['clip_frac']:.3f}, lags {s['lags']}, "
                      f"dropped {s['dropped']}, "
                      f"held-out {s['heldout']}", flush=True)
    ray.shutdown()
    base = runs[ks[0]]
    by_k = {}
    for k in ks:
        ratios = [runs[k][s]["steps_per_s"] / base[s]["steps_per_s"] for s in seeds]
        gaps = [runs[k][s]["final_heldout"] - base[s]["final_heldout"] for s in seeds]
        by_k[k] = {"speedup_mean": statistics.fmean(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
                        "final_heldout_mean": statistics.fmean(runs[k][s]["final_heldout"] for s in seeds),
                        "heldout_gap_mean": statistics.fmean(gaps), "heldout_gap_min": min(gaps),
                        "heldout_gap_max": max(gaps), "runs": {str(s): runs[k][s] for s in seeds}}
        print(f"K={k}: {by_k[k]['speedup_mean']:.2f}x steps/s ({min(ratios):.2f}-{max(ratios):.2f}) of K={ks[0]}, "
              f"final held-out {by_k[k]['final_heldout_mean']:.3f} (gap {by_k[k]['heldout_gap_mean']:+.3f}, "
              f"{min(gaps):+.3f}..{max(gaps):+.3f})", flush=True)
    print_result({"steps": args.steps, "seeds": seeds, "ks": ks, "by_k": by_k, "goal_speedup": "clearly > 1",
                  "goal_heldout_gap": 0.05, "load_average_at_start": [round(x, 2) for x in load],
                  "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
