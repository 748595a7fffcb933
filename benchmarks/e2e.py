"""End-to-end step-time breakdown and orchestration overhead of the distributed UniGRPO loop.

Runs the real driver (Ray rollout actor, Ray reward actor, DeepSpeed learner rank, weight publishing,
Parquet store) for a few steps on two configs in one process and splits every step into:

    generate   model compute inside the rollout workers (sampler wall time, measured in the actor)
    reward     reward scoring inside the reward actors (sandboxed calls, measured in the actor)
    update     the UniGRPO update inside the learner ranks (measured in the actor, slowest rank)
    overhead   everything else: Ray calls and serialisation, building the train batch, advantages,
               weight publishing, writing the rollout store, metrics

    overhead share = 1 - (generate + reward + update) / step time      (mean over steps after warm-up)

Configs, each named explicitly (never the embedded default, which is the demo): `tiny` is
`configs/tiny.yaml` (the toy task, no warm start, no eval set); `small` is the same with a 4-layer
d_model=256 policy and 32-token responses, where compute is closer to a real run's share. Goal
(the baseline is zero overhead): under 10% on tiny and under 5% on small. `t2i` (text-to-image only,
its warm start too) and `mixed` (text + mmu + t2i) run `configs/tiny_multimodal.yaml`; for them the step
is also split the image way:

    image sampling   image sampler compute inside the rollout worker
    decode           codes -> uint8 pixels with the image tokenizer, inside the rollout worker
    reward transfer  driver-side reward wall time minus the busier of the rule and CLIP actors (they
                     score in parallel): pixels through the object store, Ray calls, result gathering
    CLIP scoring     busy time of the CLIP model actor
    update           the learner's update

Only training steps count (metrics.jsonl rows with `reward/mean`; held-out eval rows share the file).
Ends with `RESULT {json}`.

    .venv/bin/python benchmarks/e2e.py [--steps 12] [--warmup 3] [--configs tiny,small,t2i,mixed]
    .venv/bin/python benchmarks/e2e.py --smoke    # every config, 2 steps (1 warm-up), G = 2

How long, on the shared 2-core machine (2026-12-03, load average 2-5 from other jobs): `--smoke` 61-89 s
(a Ray cluster and four drivers start; figures meaningless). The full run was not re-timed: its 12
`small` steps of 12-13 s dominate it, about 4-5 min in all (an estimate).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _common import CONFIGS as CONFIG_DIR
from _common import add_smoke_flag, print_result, run_driver

from policy.placement import ensure_local_ray_env
from rl.config import load_config

TINY = CONFIG_DIR / "tiny.yaml"
MULTIMODAL = CONFIG_DIR / "tiny_multimodal.yaml"
CONFIGS = {  # name -> (config file, overrides)
    "tiny": (TINY, []),
    "small": (TINY, [
        "model.tiny.d_model=256", "model.tiny.n_layers=4", "model.tiny.n_heads=4",
        "rollout.text.gen_length=32", "rollout.text.steps=16", "rollout.text.block_length=8",
    ]),
    # text-to-image only: the warm start too (its text and mmu parts need prompts of those tasks)
    "t2i": (MULTIMODAL, ["data.mixture={text: 0, mmu: 0, t2i: 1.0}", "data.prompts_per_step=8",
                         "model.warm_start.tasks=[t2i]"]),
    "mixed": (MULTIMODAL, []),
}
SMOKE_STEPS, SMOKE_WARMUP = 2, 1
SMOKE_OVERRIDES = ["rollout.group_size=2"]
SMOKE_MULTIMODAL = ["model.warm_start.steps=5"]
SMOKE = "every config, 2 steps of which 1 warm-up, G = 2, a 5-step multimodal warm start"
IMAGE_SPLIT = {"image_sampling": "time/image_gen_compute_s", "decode": "time/image_decode_s",
               "clip_scoring": "time/clip_compute_s", "update": "time/update_compute_s"}


def measure(name: str, config: Path, overrides: list[str], steps: int, warmup: int, root: Path) -> dict:
    cfg = load_config(config, overrides + [
        f"run.dir={root}", f"run.name={name}", f"run.steps={steps}", "run.plot=false",
        f"run.checkpoint_every={10 * steps}", "run.max_wall_s=null",
    ])
    setup_s, rows = run_driver(cfg)
    rows = rows[warmup:]
    step = statistics.mean(r["time/step_s"] for r in rows)
    gen = statistics.mean(r["time/gen_compute_s"] for r in rows)
    reward = statistics.mean(r["time/reward_compute_s"] for r in rows)
    update = statistics.mean(r["time/update_compute_s"] for r in rows)
    overhead = step - gen - reward - update
    phases = {k.removeprefix("time/").removesuffix("_s"): statistics.mean(r[k] for r in rows)
              for k in rows[0] if k.startswith("time/") and k.endswith("_s")}
    image_split = {}
    if all("time/image_gen_compute_s" in r for r in rows):
        image_split = {k: statistics.mean(r[key] for r in rows) for k, key in IMAGE_SPLIT.items()}
        # rule and model (CLIP) actors score in parallel: the driver's reward wall time minus the
        # longer of the two is moving pixels and results and the Ray calls
        image_split["reward_transfer"] = statistics.mean(max(0.0, r["time/reward_s"] - max(
            r["time/reward_compute_s"] - r["time/clip_compute_s"], r["time/clip_compute_s"])) for r in rows)
    return {
        "config": name, "setup_s": round(setup_s, 2), "steps_measured": len(rows), "step_s": step,
        "image_split": image_split,
        "generate_compute_s": gen, "reward_compute_s": reward, "update_compute_s": update,
        "overhead_s": overhead, "overhead_share": overhead / step, "phases": phases,
        "rollouts_per_s": statistics.mean(r["throughput/rollouts_per_s"] for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of "
                        + ",".join(CONFIGS))
    add_smoke_flag(parser, SMOKE)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup = SMOKE_STEPS, SMOKE_WARMUP
    ensure_local_ray_env()
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            config, overrides = CONFIGS[name]
            if args.smoke:
                overrides = overrides + SMOKE_OVERRIDES + (SMOKE_MULTIMODAL if config == MULTIMODAL else [])
            results[name] = r = measure(name, config, overrides, args.steps, args.warmup, Path(tmp))
            print(f"{name:>6}: step {r['step_s'] * 1e3:7.1f} ms = generate {r['generate_compute_s'] * 1e3:6.1f}"
                  f" + reward {r['reward_compute_s'] * 1e3:5.1f} + update {r['update_compute_s'] * 1e3:6.1f}"
                  f" + overhead {r['overhead_s'] * 1e3:5.1f} ms ({100 * r['overhead_share']:.1f}%)", flush=True)
            print("        phases (driver wall, ms): " + ", ".join(
                f"{k} {v * 1e3:.1f}" for k, v in r["phases"].items()), flush=True)
            if r["image_split"]:
                print("        image split (ms): " + ", ".join(
                    f"{k} {v * 1e3:.1f} ({100 * v / r['step_s']:.0f}%)" for k, v in r["image_split"].items()),
                    flush=True)
    ray.shutdown()
    out = {}
    for name, r in results.items():
        out[f"overhead_{name}"] = round(r["overhead_share"], 4)
        out[f"step_ms_{name}"] = round(r["step_s"] * 1e3, 1)
        out[f"rollouts_per_s_{name}"] = round(r["rollouts_per_s"], 1)
        for k, v in r["image_split"].items():
            out[f"{k}_ms_{name}"] = round(v * 1e3, 1)
    print_result(out, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
