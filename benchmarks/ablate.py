"""Ablation of UniGRPO's open choices on the demo task: held-out accuracy after a fixed budget of steps.

    .venv/bin/python benchmarks/ablate.py                       # the full grid below
    .venv/bin/python benchmarks/ablate.py --only baseline,positions_all --seeds 0 --steps 40
    .venv/bin/python benchmarks/ablate.py --smoke               # the baseline, seed 0, 3 steps

Each variant is configs/demo.yaml (named explicitly, not taken from the embedded default: a warm start
that teaches the format and reading, then UniGRPO on the addition word problems) with ONE setting
changed; the baseline is the config unchanged. Each runs through the real CLI (Ray rollout and reward
actors, DeepSpeed learner) for a fixed number of steps (not wall time: run.max_wall_s is lifted) with
each seed, evaluated on the 168 held-out prompts at temperature 0 with the plain sampler at step 0 and
at the last step. The table reports the held-out accuracy after the budget (mean and each seed), the
step-0 accuracy, and the train reward of the last 10 steps; the last line is `RESULT {json}`.

Variants (one-at-a-time around the baseline):
    schedule     unigrpo.mask_schedule  stratified (baseline) | paper_formula | random | full
    mu           unigrpo.mu             2 (baseline) | 1 | 4
    positions    unigrpo.response_positions  through_first_eos (baseline) | all
    support      unigrpo.logprob_support     sampler (baseline) | full
    sampler      the rollout sampler: plain exact (baseline) | prefix cache + threshold 0.9 (the fast
                 path; d1's maintainers report parallel decoding destabilised online RL)
    beta         unigrpo.beta           0.1 (the demo's) | 0 (no KL, no reference model)
    init         model.tiny.init        scaled (the demo's) | llada (N(0, 0.02), sized for d_model 4096)

How long, on the shared 2-core machine (2026-12-03): `--smoke` (a 10-step warm start, 3 steps of 4
prompts, 16 held-out prompts) 20-35 s, figures meaningless. The full grid (11 variants x 2 seeds x 120
steps, 22 runs of the CLI) was not re-timed: at the demo's 1.1-2.4 s per step, about 1-2 hours.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CONFIGS, ROOT, add_smoke_flag, print_result

DEMO = CONFIGS / "demo.yaml"  # named, not the embedded default: the grid is defined around this config
# smoke: the baseline alone, one seed, 3 steps, a 10-step warm start, 16 held-out prompts
SMOKE_ARGS = {"only": "baseline", "seeds": "0", "steps": 3}
SMOKE_OVERRIDES = ["model.warm_start.steps=10", "eval.num_prompts=16", "data.prompts_per_step=4"]

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "schedule_paper_formula": ["unigrpo.mask_schedule=paper_formula"],
    "schedule_random": ["unigrpo.mask_schedule=random"],
    "schedule_full": ["unigrpo.mask_schedule=full"],
    "mu_1": ["unigrpo.mu=1"],
    "mu_4": ["unigrpo.mu=4"],
    "positions_all": ["unigrpo.response_positions=all"],
    "support_full": ["unigrpo.logprob_support=full"],
    "sampler_cache_t0.9": ["rollout.text.use_cache=true", "rollout.text.threshold=0.9"],
    "beta_0": ["unigrpo.beta=0"],
    "init_llada": ["model.tiny.init=llada"],
}


def run_one(name: str, overrides: list[str], seed: int, steps: int, out: Path, extra: list[str]) -> dict:
    """One training run through the CLI; returns its held-out accuracy at step 0 and at the end."""
    run_name = f"{name}-s{seed}"
    args = [sys.executable, "-m", "rl.cli", "train", str(DEMO), f"run.dir={out}", f"run.name={run_name}", f"run.steps={steps}",
            "run.max_wall_s=null", f"run.checkpoint_every={steps}", "run.plot=false", f"run.seed={seed}",
            f"data.seed={seed}", f"eval.every={steps}", *overrides, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{run_name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((out / run_name / "summary.json").read_text())
    acc = summary["eval"]["eval/accuracy"]
    return {"seed": seed, "acc_step0": acc["first"], "acc_last": acc["last"], "steps": summary["steps"],
            "reward_last10": summary["reward_last10"], "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120, help="RL steps per run (fixed budget)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    ap.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="extra key=value applied to every run (e.g. a harder task)")
    add_smoke_flag(ap, "the baseline, seed 0, 3 steps, a 10-step warm start, 16 held-out prompts")
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE_ARGS)
        args.overrides = SMOKE_OVERRIDES + args.overrides
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    tmp = tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    rows = {}
    for name in names:
        runs = [run_one(name, VARIANTS[name], seed, args.steps, out, args.overrides) for seed in seeds]
        mean = sum(r["acc_last"] for r in runs) / len(runs)
        rows[name] = {"acc_last_mean": round(mean, 4), "runs": runs}
        print(f"{name:<24} held-out acc after {args.steps} steps: {mean:.3f}  "
              + "  ".join(f"s{r['seed']}={r['acc_last']:.3f} (step0 {r['acc_step0']:.3f}, "
                          f"reward_last10 {r['reward_last10']:.2f}, {r['wall_s']:.0f} s)" for r in runs), flush=True)
    print(f"\n| variant | held-out accuracy after {args.steps} steps (mean) | per seed | step 0 |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        per_seed = ", ".join(f"{r['acc_last']:.3f}" for r in row["runs"])
        step0 = ", ".join(f"{r['acc_step0']:.3f}" for r in row["runs"])
        print(f"| {name} | {row['acc_last_mean']:.3f} | {per_seed} | {step0} |")
    best = max(rows, key=lambda n: rows[n]["acc_last_mean"])
    print_result({"steps": args.steps, "seeds": seeds, "best": best, "variants": rows, "overrides": args.overrides},
                 args.smoke)


if __name__ == "__main__":
    main()
