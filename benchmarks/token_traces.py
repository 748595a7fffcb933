"""Token traces: bytes per traced rollout, and how much they add to a 1M-rollout run's store.

The rollout partitions are benchmarks/dashboard.py's synthetic steps (500 rollouts a step, 50 prompts x
G = 10, generation length 256, ~4 GiB for 2,000 steps), written with the store's settings. One traced group
(run.trace_groups = 1: 10 rollouts) goes through the real path: stratified masks for mu = 2
(trainer/unigrpo.py masks_for_update), TokenTrace.add per iteration, merge_ranks, trace_table and
write_traces. Log-probs are random floats (log confidence + noise: incompressible mantissas, as a model's
are), the sampler's confidences are the synthetic rollouts' own. It reports:

    bytes_per_traced_rollout      the step's trace partition / traced rollouts
    bytes_per_pair                per (token, iteration)
    rollout_bytes_per_step        the rollout partition of one step
    growth_one_group              trace bytes / rollout bytes at 1 traced group a step (the default)
    growth_all_groups             the same with every group traced (run.trace_groups = -1, debug)
    store_1m_gib, traces_1m_gib   a 1M-rollout run (2,000 steps): the store and its traces at 1 group a step
    add_ms                        TokenTrace.add's time for the traced group, both iterations (CPU)

    .venv/bin/python benchmarks/token_traces.py           # 5 steps, medians
    .venv/bin/python benchmarks/token_traces.py --smoke   # 1 step (seconds)

Ends with `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import torch
from _common import add_smoke_flag, print_result
from dashboard import GEN, PER_STEP, _corpus, build_step  # the synthetic 1M-rollout store's steps

from rl.token_traces import trace_table, traced_rows, write_traces
from trainer.token_trace import TokenTrace, merge_ranks
from trainer.unigrpo import UniGRPOConfig, masks_for_update

MU = 2
PROMPT = 64
RUN_ROLLOUTS = 1_000_000


def traced_partition(step: int, table, k: int, out: Path, rng) -> tuple[int, int, int, float]:
    """(bytes, traced rollouts, (token, iteration) pairs, add seconds) of one step's trace partition."""
    rows = table.select(["group_index", "policy_version", "confidence", "early_filled"]).to_pylist()
    groups = np.repeat(np.arange(len(rows) // 10), 10)
    traced = traced_rows(groups, k)
    records = [SimpleNamespace(group=int(g), group_index=r["group_index"], policy_version=r["policy_version"],
                               confidence=r["confidence"], early_filled=r["early_filled"])
               for g, r, t in zip(groups, rows, traced) if t]
    n = len(records)
    positions = np.zeros((n, PROMPT + GEN), bool)
    positions[:, PROMPT:] = True
    ratios, masked = masks_for_update(positions, UniGRPOConfig(mu=MU, seed=step), step)
    conf = np.array([r.confidence for r in records], np.float64)
    tr = TokenTrace(np.ones(n, bool), 0.2, 0.2)
    add_s = 0.0
    for it in range(MU):
        m = torch.from_numpy(masked[it])
        row, col = np.nonzero(masked[it])
        old = torch.from_numpy((np.log(conf[row, col - PROMPT]) + rng.normal(0, 0.3, len(row))).astype(np.float32))
        logp = old + torch.from_numpy(rng.normal(0, 0.05 * it, len(row)).astype(np.float32))
        adv = torch.from_numpy(rng.normal(0, 1, n).astype(np.float32))[torch.from_numpy(row)]
        t0 = time.perf_counter()
        tr.add(it, np.arange(n), m, logp, old, old - 0.01, adv, torch.rand(len(row)) * 5)
        add_s += time.perf_counter() - t0
    trace = merge_ranks([tr.result()], [0], ratios, positions)
    path = write_traces(out, step, trace_table(step, records, trace))
    return path.stat().st_size, n, len(trace["row"]), add_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    add_smoke_flag(ap, "1 step")
    args = ap.parse_args()
    steps = 1 if args.smoke else args.steps
    rng = np.random.default_rng(0)
    corpus = _corpus(rng)
    per_step, one, every = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for step in range(1, steps + 1):
            table = build_step(step, rng, corpus)
            part = Path(tmp) / "rollouts" / f"step={step}"
            part.mkdir(parents=True)
            pq.write_table(table, part / "part-0.parquet", compression="zstd")
            per_step.append((part / "part-0.parquet").stat().st_size)
            one.append(traced_partition(step, table, 1, Path(tmp) / "one", rng))
            every.append(traced_partition(step, table, -1, Path(tmp) / "all", rng))
    rollout_bytes = statistics.median(per_step)
    one_bytes = statistics.median(b for b, _, _, _ in one)
    all_bytes = statistics.median(b for b, _, _, _ in every)
    run_steps = RUN_ROLLOUTS // PER_STEP
    result = {
        "bytes_per_traced_rollout": round(one_bytes / one[0][1], 1),
        "bytes_per_pair": round(one_bytes / statistics.median(p for _, _, p, _ in one), 2),
        "pairs_per_traced_rollout": round(statistics.median(p for _, _, p, _ in one) / one[0][1], 1),
        "rollout_bytes_per_rollout": round(rollout_bytes / PER_STEP, 1),
        "rollout_bytes_per_step": int(rollout_bytes),
        "growth_one_group": round(one_bytes / rollout_bytes, 4),
        "growth_all_groups": round(all_bytes / rollout_bytes, 3),
        "store_1m_gib": round(rollout_bytes * run_steps / 2**30, 2),
        "traces_1m_gib": round(one_bytes * run_steps / 2**30, 3),
        "add_ms": round(1000 * statistics.median(s for _, _, _, s in one), 2),
        "steps": steps, "mu": MU, "gen_length": GEN, "rollouts_per_step": PER_STEP,
    }
    print_result(result, smoke=args.smoke)


if __name__ == "__main__":
    main()
