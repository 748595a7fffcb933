"""Scale-out in simulation: the real driver, Ray actors and data paths; model compute replaced by sleeps.

Part 1, weak scaling of the RL step. N = 1, 2, 4, 8, 16 rollout workers on a simulated 4-node cluster
(ray.cluster_utils.Cluster), each worker getting the same 8 prompts x G = 8 every step, as a 64-GPU run
would. Everything but model compute is real: the driver loop, RolloutGroup sharding, records crossing
the object store (full-size: 256 response ids, trajectories, text), the sandboxed math reward, group
advantages, TrainBatch building, the learner group call, weight publishing, the Parquet store, metrics.
The run is `configs/tiny.yaml` (named explicitly: the toy task, no warm start, no eval set) with the
sizes above. Model compute is a sleep calibrated from the H200 measurements of MMaDA-8B shapes
(benchmarks/gpu_8b.py, docs/benchmarks.md), scaled by TIME_SCALE so the run fits on a CPU machine:

    update:   7,857 tokens/s per GPU (UniGRPO forward+backward)
    forward:  3 x that (a forward is a third of forward+backward FLOPs at the same utilisation)
    sampler:  prefix cache 2.7x faster than plain LLaDA (256 forwards of the whole 320-token sequence)
    gen_s per sample    = 256 * 320 / (3 * 7857) / 2.7                       ~ 1.29 s (batched)
    update_s per rollout = mu * 320 / 7857 + mu * 320 / (3 * 7857)  (pi_old pass), on 3 learner GPUs
                           per rollout GPU (configs/mmada_8b_math.yaml: 2 rollout + 6 learner GPUs)

Scaling efficiency E(N) = throughput(N) / (N * throughput(1)) = step(1) / step(N) (weak scaling): the
baseline is N = 1, perfect scaling E = 1, the goal E(16) >= 0.9.
Because the sleeps are TIME_SCALE of real compute while driver work is not scaled, the measured E is
a lower bound; `efficiency_real` puts the measured overhead seconds next to unscaled compute.

Part 1b, the colocated mode (rl/colocated.py) at the same sizes: N real colocated DeepSpeed ranks, each
standing for the 4 GPUs of a disaggregated N rollout + 3N learner run (1 + LEARNER_GPUS_PER_ROLLOUT_GPU),
on the same 64 N rollouts a step; a rank's sampler sleeps its shard's generation split over its 4 GPUs
and its update its rows' (UPDATE_S_ONE_GPU per rollout per GPU). Nothing is published. `modes` compares
the two at every size measured in both: the measured ratio (time scale, tiny weights), and the same
driver seconds next to unscaled compute with MMaDA-8B's 16 GB published (this run's object-store fit, or
an NCCL broadcast at an assumed 25 GB/s), plus the idle share of each GPU group. N = 16 is the 64-GPU point.

Part 2, weight publishing: payloads of 8 / 32 / 96 MB to N = 1, 4, 16 receiver actors on the same
cluster, (a) one ray.put and N pulls (object store fan-out), (b) a gloo broadcast group (rank 0 the
publisher, policy/weight_sync.py). A least-squares fit t = a + b * bytes + c * bytes * N per transport
is the publish time model docs/scaling.md extrapolates from.

    .venv/bin/python benchmarks/scale.py [--steps 4] [--sizes 1,2,4,8,16] [--time-scale 0.025] [--nodes 4]
    .venv/bin/python benchmarks/scale.py --smoke   # 2 nodes, N = 1, 2 (both modes), 2 steps, 1-2 MB to 1-2 receivers
Ends with `RESULT {json}`.

How long, on the shared 2-core machine (2026-12-03, load average 2-5 from other jobs): `--smoke` 45-88 s
(figures meaningless). The full run was not re-timed here; `--steps 3` was recorded at about 10 minutes
(docs/benchmarks.md), so the default 4 steps take somewhat more.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from policy.placement import ensure_local_ray_env

ensure_local_ray_env()  # before ray is imported

import numpy as np  # noqa: E402
from _common import CONFIGS, add_smoke_flag, print_result, run_driver  # noqa: E402

import rl.colocated  # noqa: E402
import rollout.group  # noqa: E402
import trainer.learner  # noqa: E402
import trainer.learner_group  # noqa: E402
from rl.colocated import ColocatedRank  # noqa: E402
from rl.config import load_config  # noqa: E402
from rl.plan import H200  # noqa: E402  (the calibrated constants, defined once there)
from rollout.worker import RolloutWorker  # noqa: E402
from trainer.learner import Learner  # noqa: E402

UPDATE_TOKENS_PER_S = H200.update_tps  # benchmarks/gpu_8b.py on one H200 (docs/benchmarks.md)
FORWARD_TOKENS_PER_S = H200.forward_tps
CACHE_SPEEDUP = H200.cache_speedup
PROMPT, GEN, MU = 64, 256, 4
SEQ = PROMPT + GEN
GEN_S_PER_SAMPLE = GEN * SEQ / FORWARD_TOKENS_PER_S / CACHE_SPEEDUP
LEARNER_GPUS_PER_ROLLOUT_GPU = 3
UPDATE_S_PER_ROLLOUT = (MU * SEQ / UPDATE_TOKENS_PER_S + MU * SEQ / FORWARD_TOKENS_PER_S) / LEARNER_GPUS_PER_ROLLOUT_GPU
PROMPTS_PER_WORKER, G = 8, 8
# colocated: every GPU generates and trains; N simulated ranks stand for the 4N GPUs of a disaggregated
# N rollout + 3N learner GPU run, on the same 64N rollouts per step
GPUS_PER_COLOCATED_RANK = 1 + LEARNER_GPUS_PER_ROLLOUT_GPU
UPDATE_S_ONE_GPU = UPDATE_S_PER_ROLLOUT * LEARNER_GPUS_PER_ROLLOUT_GPU
WEIGHTS_GB = 16.2  # MMaDA-8B in bf16 (8.08B parameters)
SMOKE_ARGS = {"steps": 2, "sizes": "1,2", "colocated_sizes": "1,2", "nodes": 2, "time_scale": 0.005,
              "publish_mb": "1,2", "publish_receivers": "1,2"}


class SleepyRolloutWorker(RolloutWorker):
    """The real worker (weights, records, versions) with generation replaced by a calibrated sleep."""

    time_scale = 0.025
    gpus = 1  # GPUs this actor stands for (a simulated colocated rank stands for GPUS_PER_COLOCATED_RANK)

    def _generate_text(self, jobs, generator, text_config=None):
        time.sleep(len(jobs) * GEN_S_PER_SAMPLE / self.gpus * self.time_scale)
        rng = np.random.default_rng(int(torch_seed(generator)))
        records = []
        for prompt, g in jobs:
            answer = str(rng.integers(1, 10))
            records.append(self._record(
                prompt, g, prompt_ids=list(rng.integers(0, 100, PROMPT)), prompt_mask=[1] * PROMPT,
                response_ids=list(rng.integers(0, 100, GEN)), suffix_ids=[], response_text=f"The answer is {answer}",
                unmask_step=list(rng.integers(0, GEN, GEN)), confidence=list(rng.random(GEN)),
                early_filled=[False] * GEN, num_forwards=GEN, sampler={"kind": "text", "sleep": True},
                timings={"gen_s": len(jobs) * GEN_S_PER_SAMPLE / self.gpus * self.time_scale, "batch_size": len(jobs)}))
        return records


def torch_seed(generator) -> int:
    return int(generator.initial_seed()) % 2**32


class SleepyLearner(Learner):
    """A real DeepSpeed rank (weights, checkpoints, publishing) whose update is a calibrated sleep."""

    time_scale = 0.025

    def update_seconds(self, rows: int, num_responses: int) -> float:
        # weak scaling: learner GPUs grow with the rollout GPUs (3 per rollout GPU), so each learner GPU's
        # share of the update is constant; this rank stands for its share of them:
        #   t = (rows on this rank / all rows) * (PROMPTS_PER_WORKER * G rollouts) * update_s_per_rollout
        return rows / num_responses * PROMPTS_PER_WORKER * G * UPDATE_S_PER_ROLLOUT

    def update(self, shard, masked, num_responses, tokens_per_iter, num_micro, version=0):
        t = self.update_seconds(shard.num_rows, num_responses) * self.time_scale
        time.sleep(t)
        zeros = {k: 0.0 for k in trainer.learner.SUM_KEYS}
        zeros["token_count"] = float(masked.sum())
        return {**zeros, "ratio_max": 1.0, "grad_norm": [0.0] * self.ucfg.mu, "lr": [self.cfg.lr] * self.ucfg.mu,
                "compute_s": t, "old_ref_s": 0.0, "skipped_steps": 0, "by_task": {}}


class SleepyColocatedRank(SleepyLearner, ColocatedRank):
    """A real colocated DeepSpeed rank (rl/colocated.py: shards, versions, no publishing) standing for
    GPUS_PER_COLOCATED_RANK GPUs: its sampler sleeps for its shard split over them, and its update for its
    rows on them (each GPU: UPDATE_S_ONE_GPU per rollout)."""

    sampler_class = SleepyRolloutWorker

    def setup(self, master_addr, master_port):
        info = super().setup(master_addr, master_port)
        self.sampler.gpus = GPUS_PER_COLOCATED_RANK
        self.sampler.time_scale = self.time_scale
        return info

    def update_seconds(self, rows: int, num_responses: int) -> float:
        return rows * UPDATE_S_ONE_GPU / GPUS_PER_COLOCATED_RANK


def install_sleeps(time_scale: float, worker_class: type | None = None, learner_class: type | None = None) -> None:
    """Rollout workers and learner ranks start as the sleepy classes (in this, the driver's, process);
    benchmarks/overlap.py passes subclasses with sleeps of its own (and their time_scale already set)."""
    import ray

    from policy.actor_group import ACTOR_MAX_RESTARTS

    SleepyRolloutWorker.time_scale = SleepyLearner.time_scale = SleepyColocatedRank.time_scale = time_scale
    worker_class, learner_class = worker_class or SleepyRolloutWorker, learner_class or SleepyLearner

    def start(index, policy_path, text_config=None, image_config=None, num_gpus_per_worker=0,
              num_cpus_per_worker=1, max_restarts=ACTOR_MAX_RESTARTS, placement=None, **worker_kwargs):
        """rollout.worker.start_rollout_worker, starting a SleepyRolloutWorker (no GPU: it only sleeps)."""
        return ray.remote(worker_class).options(
            num_gpus=0, num_cpus=num_cpus_per_worker, max_restarts=max_restarts, **(placement or {}),
        ).remote(str(policy_path), text_config, image_config, **worker_kwargs)

    assert rollout.group.start_rollout_worker is not None
    rollout.group.start_rollout_worker = start
    trainer.learner_group.LearnerGroup.actor_class = ray.remote(learner_class)
    rl.colocated.ColocatedLearnerGroup.actor_class = ray.remote(SleepyColocatedRank)


def measure_step(n: int, steps: int, root: Path, address: str, colocated: bool = False) -> dict:
    """One run at size n: n rollout workers (disaggregated) or n simulated colocated ranks standing for
    GPUS_PER_COLOCATED_RANK GPUs each; either way PROMPTS_PER_WORKER x G x n rollouts per step."""
    # configs/tiny.yaml (toy task, no warm start, no eval set) with the tiny policy shrunk further: the
    # model is never run (sleeps stand in for it), only its weights travel
    mode = ["placement.mode=colocated", f"learner.num_ranks={n}", "learner.placement.strategy=SPREAD"] if colocated \
        else [f"rollout.num_workers={n}", "rollout.placement.strategy=SPREAD"]
    cfg = load_config(CONFIGS / "tiny.yaml", [
        f"ray.address={address}", f"run.dir={root}", f"run.name={'c' if colocated else 'n'}{n}", f"run.steps={steps}",
        "run.plot=false", "run.checkpoint_every=1000", "run.max_wall_s=null", f"rollout.group_size={G}",
        f"data.prompts_per_step={PROMPTS_PER_WORKER * n}", *mode,
        f"rewards.num_workers={max(1, n // 8)}", f"unigrpo.mu={MU}",
        "model.tiny={d_model: 32, n_layers: 1, n_heads: 2, codebook_size: 16, seed: 0}",
    ])
    rows = run_driver(cfg)[1][1:]  # the first step warms every path
    step = statistics.mean(r["time/step_s"] for r in rows)
    gen = statistics.mean(r["time/gen_compute_s"] for r in rows)
    update = statistics.mean(r["time/update_compute_s"] for r in rows)
    compute = gen + update
    out = {
        "mode": "colocated" if colocated else "disaggregated", "gen_compute_s": gen, "update_compute_s": update,
        "workers": n, "rollouts_per_step": rows[0]["rollouts"], "step_s": step, "model_compute_s": compute,
        "reward_compute_s": statistics.mean(r["time/reward_compute_s"] for r in rows),
        "driver_overhead_s": step - compute,
        "rollouts_per_s": statistics.mean(r["throughput/rollouts_per_s"] for r in rows),
        "publish_s": statistics.mean(r["time/publish_s"] for r in rows),
        "phases": {k[5:-2]: statistics.mean(r[k] for r in rows) for k in rows[0] if k.startswith("time/")},
    }
    print(f"{out['mode'][:5]} N={n:>2}: {out['rollouts_per_s']:7.1f} rollouts/s  step {step:6.2f} s = model {compute:5.2f} s "
          f"+ overhead {out['driver_overhead_s']:5.2f} s (reward {out['reward_compute_s']:.2f} s, "
          f"publish {out['publish_s']:.3f} s)", flush=True)
    return out


def start_cluster(nodes: int):
    """A simulated cluster: `nodes` raylets on this machine, 32 logical CPUs in all."""
    from ray.cluster_utils import Cluster

    from policy.placement import patient_node_registration

    patient_node_registration(600.0)
    per_node = max(4, 32 // nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False,
                                                            "object_store_memory": 600 * 2**20})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=per_node, object_store_memory=600 * 2**20)
    cluster.wait_for_nodes()
    return cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_publish(sizes_mb: list[int], counts: list[int], repeats: int = 3) -> list[dict]:
    """Object-store fan-out vs a gloo broadcast group, payload size x receivers."""
    import ray
    import torch

    from policy.weight_sync import init_weight_group, send_weights

    @ray.remote(num_cpus=0.1)
    class Receiver:
        def pull(self, payload) -> int:
            return int(sum(a.nbytes for a in payload["state"].values()))

        def join(self, port, rank, world) -> bool:
            from policy.weight_sync import BroadcastReceiver

            self.rx = BroadcastReceiver("127.0.0.1", port, rank, world)
            return True

        def receive(self) -> int:
            _, state = self.rx.receive_state()
            return int(sum(t.numel() * t.element_size() for t in state.values()))

    receivers = [Receiver.options(scheduling_strategy="SPREAD").remote() for _ in range(max(counts))]
    results = []
    for n in counts:
        port = free_port()
        world = n + 1
        joins = [r.join.remote(port, i + 1, world) for i, r in enumerate(receivers[:n])]
        group = init_weight_group("127.0.0.1", port, 0, world)
        ray.get(joins)
        for mb in sizes_mb:
            numel = mb * 2**20 // 4
            tensors = {f"w{i}": torch.randn(numel // 8) for i in range(8)}
            entries = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
            payload = {"version": 1, "state": {k: t.numpy() for k, t in tensors.items()}}
            for transport in ("object_store", "broadcast"):
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    if transport == "object_store":
                        ref = ray.put(payload)
                        got = ray.get([r.pull.remote(ref) for r in receivers[:n]])
                        del ref
                    else:
                        refs = [r.receive.remote() for r in receivers[:n]]
                        send_weights(group, 1, entries, iter(tensors.values()))
                        got = ray.get(refs)
                    times.append(time.perf_counter() - t0)
                    assert all(g == numel // 8 * 8 * 4 for g in got)
                results.append({"transport": transport, "mb": mb, "receivers": n, "s": statistics.median(times)})
                print(f"publish {transport:>12}: {mb:>3} MB -> {n:>2} receivers  {results[-1]['s']:.3f} s", flush=True)
        group.pg = None
    for r in receivers:
        ray.kill(r)
    return results


def fit_publish(results: list[dict], transport: str) -> dict:
    """t = a + b * bytes + c * bytes * (N - 1), least squares."""
    rows = [r for r in results if r["transport"] == transport]
    x = np.array([[1.0, r["mb"] * 2**20, r["mb"] * 2**20 * (r["receivers"] - 1)] for r in rows])
    y = np.array([r["s"] for r in rows])
    (a, b, c), *_ = np.linalg.lstsq(x, y, rcond=None)
    return {"a_s": float(a), "s_per_gb": float(b) * 2**30, "s_per_gb_per_extra_receiver": float(c) * 2**30}


def compare_modes(disaggregated: list[dict], colocated: list[dict], scale: float, store: dict) -> dict:
    """Both modes at each size measured in both, and at the largest such size (16 = the 64-GPU point):
    measured steps (sleeps at `scale`, the tiny policy's weights), and the same driver seconds next to
    unscaled H200 compute with MMaDA-8B's 16 GB published by this run's object-store model (a + b S +
    c S (N - 1)) or by an NCCL broadcast at 25 GB/s (assumed, rl/plan.py), plus the ZeRO-3 gather of the
    inference copy at the same assumed speed. Idle share of each GPU group = 1 - its compute / step."""
    by_n = {s["workers"]: s for s in disaggregated}
    out = {}
    for c in colocated:
        d = by_n.get(c["workers"])
        if d is None:
            continue
        n = c["workers"]
        size = WEIGHTS_GB * 1e9 / 2**30  # the fit is per GiB
        publish = {"object_store": store["a_s"] + store["s_per_gb"] * size
                   + store["s_per_gb_per_extra_receiver"] * size * (n - 1),
                   "nccl_assumed": WEIGHTS_GB * 1e9 / 25e9}
        gen_d, upd_d = d["gen_compute_s"] / scale, d["update_compute_s"] / scale
        gen_c, upd_c = c["gen_compute_s"] / scale, c["update_compute_s"] / scale
        real_c = gen_c + upd_c + c["driver_overhead_s"] + WEIGHTS_GB * 1e9 / 25e9
        row = {"gpus": 4 * n, "rollouts_per_step": c["rollouts_per_step"],
               "measured_ratio": d["step_s"] / c["step_s"],
               "colocated_real_step_s": real_c,
               "idle_colocated": 1 - (gen_c + upd_c) / real_c}
        for transport, pub in publish.items():
            real_d = gen_d + upd_d + d["driver_overhead_s"] + pub
            row[f"disaggregated_real_step_s_{transport}"] = real_d
            row[f"ratio_real_{transport}"] = real_d / real_c
            row[f"idle_rollout_{transport}"] = 1 - gen_d / real_d
            row[f"idle_learner_{transport}"] = 1 - upd_d / real_d
        out[str(4 * n)] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        print(f"{4 * n:>3} GPUs: colocated {real_c:.1f} s/step vs disaggregated "
              f"{row['disaggregated_real_step_s_object_store']:.1f} s (object store) / "
              f"{row['disaggregated_real_step_s_nccl_assumed']:.1f} s (NCCL): "
              f"{row['ratio_real_object_store']:.2f}x / {row['ratio_real_nccl_assumed']:.2f}x "
              f"(measured at time scale: {row['measured_ratio']:.2f}x)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--colocated-sizes", default="1,2,4,8,16",
                        help="simulated colocated ranks (each standing for 4 GPUs); empty: skip")
    parser.add_argument("--time-scale", type=float, default=0.025)
    parser.add_argument("--publish-mb", default="8,32,96")
    parser.add_argument("--publish-receivers", default="1,4,16")
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes (raylets) sharing 32 logical CPUs")
    add_smoke_flag(parser, "2 simulated nodes, N = 1, 2 workers for 2 steps at time scale 0.005, publishing "
                   "1-2 MB to 1-2 receivers")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE_ARGS)
    import ray

    cluster = start_cluster(args.nodes)
    ray.init(address=cluster.address, log_to_driver=False)
    install_sleeps(args.time_scale)
    steps = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in [int(s) for s in args.sizes.split(",")]:
                steps.append(measure_step(n, args.steps, Path(tmp), cluster.address))
            colocated = [measure_step(n, args.steps, Path(tmp), cluster.address, colocated=True)
                         for n in [int(s) for s in args.colocated_sizes.split(",") if s]]
        publish = measure_publish([int(s) for s in args.publish_mb.split(",")],
                                  [int(s) for s in args.publish_receivers.split(",")])
    finally:
        ray.shutdown()
        cluster.shutdown()

    base = steps[0]
    scale = args.time_scale
    for s in steps:
        s["efficiency"] = base["step_s"] / s["step_s"]
        # the same overhead seconds next to unscaled (real H200) compute
        real = lambda x: x["model_compute_s"] / scale + x["driver_overhead_s"]  # noqa: E731
        s["efficiency_real"] = real(base) / real(s)
    last = steps[-1]
    model = {t: fit_publish(publish, t) for t in ("object_store", "broadcast")}
    out = {
        "workers": last["workers"], "efficiency_at_n": round(last["efficiency"], 3),
        "efficiency_real_at_n": round(last["efficiency_real"], 3), "goal": 0.9,
        "rollouts_per_s": {s["workers"]: round(s["rollouts_per_s"], 1) for s in steps},
        "driver_overhead_s": {s["workers"]: round(s["driver_overhead_s"], 3) for s in steps},
        "publish_s_tiny_policy": {s["workers"]: round(s["publish_s"], 3) for s in steps},
        "time_scale": scale, "gen_s_per_sample_real": round(GEN_S_PER_SAMPLE, 3),
        "update_s_per_rollout_real": round(UPDATE_S_PER_ROLLOUT, 4),
        "publish_model": {t: {k: round(v, 4) for k, v in m.items()} for t, m in model.items()},
        "publish": publish,
        "modes": compare_modes(steps, colocated, scale, model["object_store"]),
    }
    print_result(out, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
