"""The real loop on GPUs, colocated, with an MMaDA-8B-shaped model: 3 steps of driver, Ray, reward actors and
DeepSpeed, reporting the step split, peak GPU memory per phase and the update's MFU (issue #19).

Not yet run on a GPU (no GPU was lent when it was written): README and docs/benchmarks.md say so until it
has. It is prepared to run once, unattended, on whatever GPUs are visible (one H200 expected):

    .venv/bin/python benchmarks/gpu_e2e.py            # on a GPU machine; results also in $OUT/gpu_e2e.json
    .venv/bin/python benchmarks/gpu_e2e.py --plan     # print the plan (sizes, memory, time budget), run nothing
    .venv/bin/python benchmarks/gpu_e2e.py --smoke    # the same code path on CPU with a tiny policy (CI)

On the lent device machine (no Ray or DeepSpeed in its image, nothing fetchable): first, here,
`.venv/bin/python benchmarks/_gpu_deps.py` (packs them, 32 MiB, into .gpu_deps/site.tar.xz), then one run
with carry [".gpu_deps"], timeout_s 600 and the command
    mkdir -p /tmp/site && tar xJf .gpu_deps/site.tar.xz -C /tmp/site && PYTHONPATH=/tmp/site:$PWD \
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_e2e.py

What runs: a random-init policy directory with MMaDA-8B's shapes (32 layers, d 4096, MLP 12288, 32 heads)
and its 134,656-row embedding and LM head (the test tokenizer of policy/tiny.py fills the first rows: the
vocabulary's size, not its words, is what costs): 8.08B parameters, written in bf16 (16 GB) and loaded by the
learner ranks through the project's from_pretrained path; `placement.mode=colocated`, one learner rank per
visible GPU (`learner.num_gpus_per_rank=1`, ZeRO-2, bf16, torch AdamW, gradient checkpointing, beta = 0 so
no reference copy, mu = 1), the math reward in its Ray actor, the arithmetic task, 3 steps of
`Driver.run_step` (no checkpoint).

Memory: how 8B trains on one 141 GB GPU. Mixed precision with fp32 master weights and Adam needs ~20 bytes
per parameter (bf16 params 2 + bf16 grads 2 + fp32 grads, master, m, v 16): 161 GB, more than the GPU.
DeepSpeed's optimizer offload (CPU Adam) would move the 16 bytes, 129 GB, into host memory, which the
lent machine (128 GiB, with Ray, the rank and the load copy beside it) does not have; NVMe offload would
not fit its 64 GiB disk. So the run uses configs/deepspeed/zero2_bf16_states.json: DeepSpeed's
`bf16_master_weights_and_grads` + `bf16_optimizer_states` keep master weights, gradients and Adam's
moments in bf16 on the GPU (12 bytes per parameter: 97 GB, 90 GiB; plus torch AdamW's one bf16 temporary
of the size of the parameters during the step, ~15 GiB, and activations of one 4,096-token micro-batch
with checkpointing, ~2 GiB; generation adds a 1.5 GiB K/V cache). No CPU Adam, so no JIT-compiled op and no
compiler needed (the deepspeed 0.19.8 installed here and carried by _gpu_deps.py ships no prebuilt ops:
cpu_adam would JIT-compile with ninja, which the device image has, and a host C++ compiler, not checked).
Numerically this is not production training (a bf16 master weight drops updates below ~1/256 of itself:
at MMaDA's real learning rates most would vanish), and a random model scores 0 on arithmetic, so the
advantages and gradients are zero; the compute and memory traffic of the step are the real ones, which is
what is measured. With 8 or more GPUs the fp32 config (zero2.json) partitions 16P/N and fits. `--layers N`
runs fewer layers of the same width (`--layers auto` takes the deepest that rl/memory.py puts under 80% of
the GPU: 32 on an H200).

Time budget on one H200, 8 minutes in all (the gpu_8b.py figures: update 7,857 tokens/s at 8B, a
no-grad forward ~3x that, the prefix cache 2.7x the plain sampler):
    build (random init on the GPU) + write 16 GB of bf16 safetensors   ~30-60 s
    timed from_pretrained of it to host fp32 in the same child (warm)  ~20-40 s
    start Ray, the rank's load (fp32 on host, to GPU), DeepSpeed init  ~60-120 s
    per step: 16 rollouts (4 prompts x G 4) of 128 tokens, 64 denoising forwards with the prefix cache,
      batch 16 x ~192 tokens: ~64 x 0.1 s = ~5-10 s; update 16 x 192 = 3,072 tokens: 3,072 / 7,857 =
      0.4 s with backward, + the pi_old pass ~0.15 s, + one AdamW step over 8B bf16 (~0.5 s)  ~10-15 s x 3
    total ~3-5 minutes; a watchdog ends the run at --deadline-s (default 450 s after start) with what it
    measured.

Reported (RESULT, last line): per step generate / reward / update / publish / store seconds, generation
tokens/s, the update's model FLOPs over its wall time (6 P per token forward+backward, 2 P for the no-grad
pi_old pass; tokens = rows x padded length of the batch the learner got) against the H200's dense bf16 peak
(989 TFLOP/s, times the number of GPUs) as MFU (the optimizer step is inside that time, so this MFU is a
floor), and each rank's peak GPU memory while generating and while updating
(torch.cuda.max_memory_allocated, reset between phases). "complete": false when a phase failed or the
deadline came first; whatever was measured is still in the RESULT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import CONFIGS, ROOT, add_smoke_flag, print_result

H200_BF16_DENSE_FLOPS = 989e12  # NVIDIA's H200 SXM dense BF16 tensor-core peak (1,979 with sparsity)
DS_JSON = "configs/deepspeed/zero2_bf16_states.json"  # bf16 master weights, grads and Adam states on the GPU
STEPS = 3
START = time.monotonic()
RESULT: dict = {"complete": False, "phase": "start", "steps": []}
UPDATE_TOKENS: list[int] = []  # per step, from the batch the learner group was given


def say(line: str) -> None:
    print(f"[gpu_e2e {time.monotonic() - START:6.1f} s] {line}", flush=True)


def finish(smoke: bool) -> None:
    """The RESULT line (and $OUT/gpu_e2e.json), complete or not."""
    RESULT["wall_s"] = round(time.monotonic() - START, 1)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_e2e.json").write_text(json.dumps({**RESULT, "smoke": smoke}, indent=2))
    print_result(RESULT, smoke)


def watchdog(deadline_s: float, smoke: bool) -> None:
    def fire():
        say(f"deadline of {deadline_s:.0f} s after start reached during phase {RESULT['phase']!r}: stopping with what was measured")
        RESULT["stopped_by_deadline"] = True
        finish(smoke)
        os._exit(3)

    timer = threading.Timer(max(1.0, deadline_s - (time.monotonic() - START)), fire)
    timer.daemon = True
    timer.start()


def model_config(smoke: bool, layers: int = 32):
    """MMaDA-8B's layer shapes and embedding size over the test tokenizer's layout (smoke: tiny shapes)."""
    from policy.tiny import build_tiny_tokenizer, tiny_config
    from policy.vocab import VocabLayout

    tokenizer = build_tiny_tokenizer()
    layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=64)
    if smoke:
        return tiny_config(layout, d_model=64, n_layers=2, n_heads=4), tokenizer
    config = tiny_config(layout, d_model=4096, n_layers=layers, n_heads=32, mlp_hidden_size=12288,
                         max_sequence_length=4096)
    config.embedding_size = 134656  # MMaDA-8B's rows (policy/config.py default vocab_size)
    return config, tokenizer


def deepest_fitting(gpus: int, gpu_gib: float) -> int:
    """The most layers (<= 32) whose colocated run rl/memory.py puts under 80% of one GPU (the estimate
    leaves out allocator fragmentation: the margin is for it)."""
    from rl.memory import GIB, ModelShape, estimate

    cfg = run_config(Path("/nonexistent"), Path("/tmp"), False, max(gpus, 1), planning=True)
    for layers in range(32, 0, -1):
        shape = ModelShape.from_config(model_config(False, layers)[0])
        if estimate(cfg, shape, max(gpus, 1)).fits(0.8 * gpu_gib * GIB):
            return layers
    return 1


def build_policy(directory: Path, smoke: bool, layers: int) -> None:
    """Random init on the GPU (seconds, not minutes on host cores), bf16, written with save_pretrained."""
    import torch

    from policy.model import MMadaModelLM

    config, tokenizer = model_config(smoke, layers)
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    with torch.device("meta"):
        model = MMadaModelLM(config)
    model = model.to(torch.bfloat16 if not smoke else torch.float32).to_empty(device=device)
    gen = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    t0 = time.monotonic()
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="100GB")
    tokenizer.save_pretrained(directory)
    write_s = time.monotonic() - t0
    del model
    t0 = time.monotonic()  # the learner rank's call (trainer/learner.py), timed here: the run's setup mixes it
    MMadaModelLM.from_pretrained(directory, dtype=torch.float32)  # with Ray and DeepSpeed start-up
    (directory / "timings.json").write_text(json.dumps({"write_s": round(write_s, 1),
                                                         "load_s": round(time.monotonic() - t0, 1)}))


def plan(smoke: bool, gpus: int, layers: int) -> dict:
    """Sizes, parameter count and the memory estimate of rl/memory.py for this run."""
    from rl.memory import ModelShape, estimate, gib, optimizer_bytes_per_param

    config, _ = model_config(smoke, layers)
    cfg = run_config(Path("/nonexistent"), Path("/tmp"), smoke, max(gpus, 1), planning=True)
    shape = ModelShape.from_config(config)
    mem = estimate(cfg, shape, max(gpus, 1))
    role, phase, peak = mem.peak()
    return {"params_b": round(shape.params / 1e9, 3), "layers": config.n_layers, "full_depth_layers": 32,
            "gpus": gpus, "rollouts_per_step": 16,
            "gen_length": cfg.rollout.text.gen_length, "denoising_steps": cfg.rollout.text.steps,
            "estimated_peak_gib": gib(peak), "estimated_peak_phase": f"{role} {phase}",
            "adamw_step_temporary_gib": gib(2 * shape.params),  # torch AdamW's sqrt(v), bf16: not in the estimate
            "estimated_host_optimizer_gib": gib(mem.host_optimizer_bytes),
            "deepspeed_config": cfg.learner.deepspeed_config,
            "optimizer_bytes_per_param": optimizer_bytes_per_param(cfg)}  # 8: bf16 master, grads, Adam moments


def run_config(policy: Path, run_dir: Path, smoke: bool, gpus: int, planning: bool = False):
    from rl.config import load_config

    overrides = [
        f"model.path={policy}", "model.tiny=null", "data.task=toy_arith", "data.prompts_per_step=4",
        "rollout.group_size=4", "rollout.text.gen_length=128", "rollout.text.steps=64", "rollout.text.block_length=32",
        "rollout.text.use_cache=true", "placement.mode=colocated", f"learner.num_ranks={gpus}",
        "unigrpo.mu=1", "unigrpo.beta=0.0", "learner.gradient_checkpointing=true", "learner.micro_batch_tokens=4096",
        f"run.dir={run_dir}", "run.name=gpu_e2e", f"run.steps={STEPS}", "run.plot=false", "run.max_wall_s=null",
        "run.checkpoint_every=1000", "eval.num_prompts=1",
        f"learner.deepspeed_config={DS_JSON}", "learner.bf16=true", "model.dtype=bfloat16",  # smoke too: bf16 on CPU
    ]
    if smoke:
        overrides += ["rollout.text.gen_length=8", "rollout.text.steps=4", "rollout.text.block_length=4"]
    else:
        overrides += ["learner.num_gpus_per_rank=1",
                      f"placement.gpu_memory_gb={gpu_memory_gib() or 131:.0f}"]  # without a GPU: an H200's 131 GiB
    return load_config(CONFIGS / "tiny.yaml", overrides, planning=planning)


def gpu_memory_gib() -> float:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0


def host_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def preconditions(smoke: bool, info: dict) -> str | None:
    """Why this machine cannot run it (None: it can)."""
    import torch

    if smoke:
        return None
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (use --smoke on CPU)"
    if gpu_memory_gib() < 100:
        return f"the GPU has {gpu_memory_gib():.0f} GiB; an 8B model needs >= 100 GiB on one GPU with optimizer offload"
    need = 2.2 * info["params_b"] * 4 + 8 + info["estimated_host_optimizer_gib"]  # fp32 load copy (+ offload)
    if host_memory_gib() < need:
        return (f"host memory {host_memory_gib():.0f} GiB cannot hold the {info['params_b']}B model's fp32 load copy "
                f"and {info['estimated_host_optimizer_gib']} GiB of offloaded optimizer ({need:.0f} GiB needed)")
    free_disk = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    if free_disk < 20:
        return f"{free_disk:.0f} GiB free on {tempfile.gettempdir()}; the bf16 policy needs 16 GiB"
    return None


def instrument(driver) -> dict:
    """Peak GPU memory per phase on each rank: reset before generating and before updating, read after."""
    import ray

    learner, peaks = driver.learner, {"generate": [], "update": []}
    generate, update = learner.generate, learner.update

    def reset():
        ray.get([a.reset_peak_memory.remote() for a in learner.actors])

    def read(phase):
        peaks[phase].append([m["peak_bytes"] / 2**30 for m in learner.memory()])

    def generate_measured(*args, **kwargs):
        reset()
        RESULT["phase"] = f"step {driver.step + 1}: generate"
        out = generate(*args, **kwargs)
        read("generate")
        return out

    def update_measured(batch):
        UPDATE_TOKENS.append(int(batch.input_ids.size))  # rows x padded length: the tokens the model reads
        reset()
        RESULT["phase"] = f"step {driver.step + 1}: update"
        out = update(batch)
        read("update")
        return out

    learner.generate, learner.update = generate_measured, update_measured
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", action="store_true", help="print the plan and exit")
    parser.add_argument("--deadline-s", type=float, default=450.0, help="stop with what was measured after this")
    parser.add_argument("--layers", default="auto", help="transformer layers (MMaDA-8B has 32); auto: the most that fit")
    add_smoke_flag(parser, "CPU, tiny policy, 8-token responses, 3 steps")
    args = parser.parse_args()
    import torch

    gpus = torch.cuda.device_count() if not args.smoke else 1
    layers = 2 if args.smoke else int(args.layers) if args.layers != "auto" else deepest_fitting(gpus, gpu_memory_gib() or 131)
    info = plan(args.smoke, gpus, layers)
    RESULT.update(plan=info, device=torch.cuda.get_device_name(0) if gpus and not args.smoke else "cpu",
                  gpu_memory_gib=round(gpu_memory_gib(), 1), host_memory_gib=round(host_memory_gib(), 1))
    say(f"plan: {json.dumps(info)}")
    why = preconditions(args.smoke, info)
    if args.plan or why:
        if why:
            say(f"cannot run here: {why}")
            RESULT["not_run"] = why
        finish(args.smoke)
        return 2 if why else 0
    watchdog(args.deadline_s, args.smoke)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_e2e_") as tmp:
            policy, run_dir = Path(tmp) / "policy", Path(tmp) / "runs"
            RESULT["phase"] = "build policy"
            t0 = time.monotonic()
            # in a child process: the driver must hold no GPU memory when the learner rank starts
            subprocess.run([sys.executable, __file__, "--build-only", str(policy), str(layers)]
                           + (["--smoke"] if args.smoke else []), check=True, cwd=ROOT,
                           timeout=max(10.0, args.deadline_s - (time.monotonic() - START) - 5))  # killed, not orphaned
            RESULT["build_and_write_s"] = round(time.monotonic() - t0, 1)
            RESULT["policy_bytes"] = sum(f.stat().st_size for f in policy.iterdir())
            RESULT.update(json.loads((policy / "timings.json").read_text()))  # write_s, load_s (from_pretrained, fp32)
            RESULT["build_and_write_s"] = round(RESULT["build_and_write_s"] - RESULT["load_s"], 1)
            say(f"policy built and written: {RESULT['policy_bytes'] / 2**30:.1f} GiB in {RESULT['build_and_write_s']} s "
                f"(write {RESULT['write_s']} s; from_pretrained of it to host fp32 {RESULT['load_s']} s)")
            return run(policy, run_dir, args.smoke, gpus)
    except Exception as err:  # noqa: BLE001 - building, the fit check or Ray's start failed: still a RESULT
        RESULT["error"] = f"{type(err).__name__}: {str(err)[:2000]}"
        say(f"failed in phase {RESULT['phase']!r}: {RESULT['error']}")
        finish(args.smoke)
        return 1


def run(policy: Path, run_dir: Path, smoke: bool, gpus: int) -> int:
    import ray

    from policy.placement import ensure_local_ray_env
    from rl.driver import Driver
    from rl.preflight import check_gpu_memory

    RESULT["phase"] = "fit check, start Ray"
    cfg = run_config(policy, run_dir, smoke, gpus)
    check_gpu_memory(cfg)  # the project's own fit check, before any actor starts
    ensure_local_ray_env()
    ray.init(address="local", num_cpus=max(4, os.cpu_count() or 4), num_gpus=0 if smoke else gpus,
             object_store_memory=4 * 2**30, include_dashboard=False, log_to_driver=True)
    driver = Driver(cfg, console=True)
    try:
        RESULT["phase"] = "setup (Ray actors, load, DeepSpeed)"
        t0 = time.monotonic()
        driver.setup()
        RESULT["setup_s"] = round(time.monotonic() - t0, 1)
        say(f"setup (reward actors, {gpus} learner rank(s) loading the policy, DeepSpeed) took {RESULT['setup_s']} s")
        peaks = instrument(driver)
        driver.publisher.publish()
        for _ in range(STEPS):
            m = driver.run_step()
            RESULT["steps"].append(step_row(m, cfg, smoke))
            RESULT["peak_gpu_gib"] = {k: [max(v) for v in zip(*rows)] for k, rows in peaks.items() if rows}
            say(f"step {driver.step}: {json.dumps(RESULT['steps'][-1])}")
        RESULT["phase"], RESULT["complete"] = "done", True
    except Exception as err:  # noqa: BLE001 - a one-shot run: report what happened, with what was measured
        RESULT["error"] = f"{type(err).__name__}: {str(err)[:2000]}"
        say(f"failed in phase {RESULT['phase']!r}: {RESULT['error']}")
    finally:
        driver.shutdown()
        ray.shutdown()
    finish(smoke)
    return 0 if RESULT["complete"] else 1


def step_row(m: dict, cfg, smoke: bool) -> dict:
    """One step's split, generation speed and the update's MFU."""
    from rl.memory import model_shape

    params = model_shape(cfg).params
    tokens = m.get("learner/masked_tokens", 0)  # masked tokens per iteration; the model reads whole rows
    rows_tokens = UPDATE_TOKENS[-1] if UPDATE_TOKENS else 0
    compute_s = m.get("learner/compute_s", 0.0)
    flops = (6 + 2) * params * rows_tokens * cfg.unigrpo.mu  # forward+backward, plus the no-grad pi_old pass
    gen_tokens = m["rollouts"] * cfg.rollout.text.gen_length
    return {
        "step_s": round(m["time/step_s"], 2),
        **{p: round(m.get(f"time/{p}_s", 0.0), 2) for p in ("generate", "reward", "update", "publish", "store")},
        "gen_compute_s": round(m.get("time/gen_compute_s", 0.0), 2),
        "gather_s": round(m.get("time/inference_gather_s", 0.0), 2), "offload_s": round(m.get("time/optimizer_offload_s", 0.0), 2),
        "gen_tokens_per_s": round(gen_tokens / max(m.get("time/gen_compute_s", 0.0), 1e-9), 1),
        "update_compute_s": round(compute_s, 2), "masked_tokens": tokens, "update_tokens": rows_tokens,
        "update_model_tflops_per_s": round(flops / max(compute_s, 1e-9) / 1e12, 2),
        "mfu": None if smoke else round(flops / max(compute_s, 1e-9) / (H200_BF16_DENSE_FLOPS * cfg.learner.num_ranks), 4),
        "reward_mean": m.get("reward/mean"), "loss": m.get("learner/loss"),
    }


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--build-only":
        build_policy(Path(sys.argv[2]), "--smoke" in sys.argv, int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
