"""The elastic rollout fleet (rollout.max_workers; rollout/elastic.py, docs/elastic.md): does throughput rise
when rollout capacity joins mid-run, and do steps go on when it leaves?

A simulated cluster (ray.cluster_utils.Cluster, as benchmarks/scale.py): a head node for the driver, the
learner rank and the reward actor, and node n1 offering the rollout resources (`worker_node: 1`) to the one
rollout worker of the placement group. `rollout.max_workers=3`. The run trains on a thread while this (the
main) thread changes the cluster, each after `--segment` steps at the current size:

    segment 1   1 worker                       (n1)
    segment 2   node n2 joins -> 2 workers     (an elastic worker starts there, gets the weights, takes a shard)
    segment 3   node n3 joins -> 3 workers
    segment 4   node n3 is removed -> 2 workers (its shard re-runs elsewhere; the run goes on)

Model compute is benchmarks/scale.py's calibrated sleep (MMaDA-8B generation on one H200 per sample, x
--time-scale), because the simulated nodes share this machine's two cores: with real compute a second worker
would compete for the same cores and measure the machine, not the fleet. Everything else is real: actors
joining and leaving, weights fetched before a newcomer's first shard, shards cut per fleet size, records,
rewards, the DeepSpeed learner rank (its update a sleep too). The batch is 16 prompts x G = 8 every step.

Per segment (the --segment steps after the first step that shows the new fleet size, so the join itself is
not in it): fleet size, median generate wall time (time/generate_s), rollouts/s over the generate phase,
step time, and how long the change took to take effect. Ratios are against segment 1 in the same
run; the ideal is the worker count. Ends with `RESULT {json}`.

    .venv/bin/python benchmarks/elastic.py [--segment 5] [--time-scale 0.05]
    .venv/bin/python benchmarks/elastic.py --smoke    # 2 steps a segment, one join: ~1-2 minutes, figures meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import CONFIGS, add_smoke_flag, print_result, train_rows
from scale import install_sleeps

from policy.placement import ensure_local_ray_env, patient_node_registration
from rl.config import load_config

ROLLOUT_NODE = {"worker_node": 1}  # what a node offers a rollout worker (rollout.placement.resources)
PROMPTS, G = 16, 8


def start_cluster():
    from ray.cluster_utils import Cluster

    patient_node_registration(600.0)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "resources": {"head": 4},
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"n1": 1, **ROLLOUT_NODE})
    cluster.wait_for_nodes()
    return cluster


def metrics_rows(run_dir: Path) -> list[dict]:
    """The training rows the run has written so far (it appends metrics.jsonl as it goes)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return train_rows([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def wait_for(run_dir: Path, what, deadline_s: float = 900.0) -> dict:
    """The first training row for which what(row) holds (the run writes metrics.jsonl as it goes)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        hit = next((r for r in metrics_rows(run_dir) if what(r)), None)
        if hit is not None:
            return hit
        time.sleep(0.2)
    raise TimeoutError(f"no step satisfied the condition within {deadline_s:.0f} s")


def summarise(rows: list[dict]) -> dict:
    gen = statistics.median(r["time/generate_s"] for r in rows)
    return {"steps": [r["step"] for r in rows], "workers": sorted({r["fleet/workers"] for r in rows}),
            "generate_s": gen, "rollouts_per_s_generating": PROMPTS * G / gen,
            "step_s": statistics.median(r["time/step_s"] for r in rows)}


def run_plan(cluster, run_dir: Path, plan: list[tuple[str, int]], segment: int) -> list[dict]:
    """Apply each change, wait for the first step that shows it, then time `segment` steps at that size."""
    nodes, segments, removed = {}, [], 0
    for change, size in plan:
        verb, _, name = change.partition(" ")
        if verb == "join":  # capacity appears: a node offering the rollout resources
            nodes[name] = cluster.add_node(num_cpus=2, resources={name: 1, **ROLLOUT_NODE})
        elif verb == "remove":  # the node goes, mid-run
            cluster.remove_node(nodes.pop(name))
            removed += 1
        t0, after = time.monotonic(), segments[-1]["steps"][-1] if segments else 0
        first = wait_for(run_dir, lambda r, after=after, size=size, removed=removed: r["step"] > after
                         and r["fleet/workers"] == size and r["fleet/left"] >= removed)
        rows = [wait_for(run_dir, lambda r, s=s: r["step"] == s)
                for s in range(first["step"] + 1, first["step"] + 1 + segment)]
        segments.append({"change": change, "changed_at_step": first["step"],
                         "seconds_to_take_effect": time.monotonic() - t0 if verb != "start" else 0.0, **summarise(rows)})
        print(f"{change}: {size} worker(s) from step {first['step']}", flush=True)
    return segments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segment", type=int, default=5, help="steps timed at each fleet size")
    parser.add_argument("--time-scale", type=float, default=0.05, help="x MMaDA-8B's H200 compute per sample")
    add_smoke_flag(parser, "2 steps a segment, one join, time scale 0.02")
    args = parser.parse_args()
    if args.smoke:
        args.segment, args.time_scale = 2, 0.02
    # (change, the fleet size it leads to)
    plan = [("start", 1), ("join n2", 2)]
    if not args.smoke:
        plan += [("join n3", 3), ("remove n3", 2)]

    ensure_local_ray_env()
    # the sleepy actor classes live in benchmarks/scale.py: the cluster's workers import them from there
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])
    import ray

    from rl.driver import Driver

    cluster = start_cluster()
    ray.init(address=cluster.address, log_to_driver=False)
    install_sleeps(args.time_scale)
    load, error = os.getloadavg(), {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "elastic"
        cfg = load_config(CONFIGS / "tiny.yaml", [
            f"ray.address={cluster.address}", f"run.dir={tmp}", "run.name=elastic", "run.steps=100000",
            "run.plot=false", "run.checkpoint_every=100000", "run.max_wall_s=null", f"data.prompts_per_step={PROMPTS}",
            f"rollout.group_size={G}", "rollout.num_workers=1", "rollout.max_workers=3",
            "rollout.placement={strategy: PACK, resources: {worker_node: 1}}",
            "rewards.num_workers=1", "rewards.placement={strategy: PACK, resources: {head: 1}}",
            "learner.num_ranks=1", "learner.placement={strategy: PACK, resources: {head: 1}}",
            "model.tiny={d_model: 32, n_layers: 1, n_heads: 2, codebook_size: 16, seed: 0}"])
        driver = Driver(cfg, console=False)
        try:
            driver.setup()
            trainer = threading.Thread(target=lambda: error.setdefault("train", _train(driver)), daemon=True)
            trainer.start()
            segments = run_plan(cluster, run_dir, plan, args.segment)
        finally:
            driver.stop.requested = True  # the loop finishes its step and returns
            trainer.join(timeout=600)
            rows = metrics_rows(run_dir)
            driver.shutdown()
    ray.shutdown()
    cluster.shutdown()
    if error.get("train") is not None:
        raise error["train"]

    base = segments[0]
    for seg in segments:
        seg["throughput_ratio"] = seg["rollouts_per_s_generating"] / base["rollouts_per_s_generating"]
        print(f"{seg['change']:>10}: steps {seg['steps'][0]}-{seg['steps'][-1]}, workers {seg['workers']}, generate "
              f"{seg['generate_s']:.2f} s, {seg['rollouts_per_s_generating']:.1f} rollouts/s generating "
              f"({seg['throughput_ratio']:.2f}x), step {seg['step_s']:.2f} s", flush=True)
    last = rows[-1]
    print_result({
        "segments": segments,
        "throughput_ratio_2_workers": segments[1]["throughput_ratio"],
        "throughput_ratio_3_workers": segments[2]["throughput_ratio"] if len(segments) > 2 else None,
        "steps_continuous": [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "steps": len(rows),
        "fleet": {"joined": last["fleet/joined"], "left": last["fleet/left"], "restarts_rollout": last["restarts/rollout"]},
        "time_scale": args.time_scale, "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}, args.smoke)
    return 0


def _train(driver) -> Exception | None:
    try:
        driver.train()
    except Exception as err:  # noqa: BLE001 - re-raised by main
        return err
    return None


if __name__ == "__main__":
    sys.exit(main())
