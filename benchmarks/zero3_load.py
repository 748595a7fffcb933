"""ZeRO-3 learner start-up memory: every rank loading the whole model (baseline) vs each rank reading only
its own slice under deepspeed.zero.Init (trainer/sharded_load.py), side by side in one run.

    .venv/bin/python benchmarks/zero3_load.py                       # ~57M params (230 MB fp32), 2 ranks
    .venv/bin/python benchmarks/zero3_load.py --d-model 512 --layers 4
    .venv/bin/python benchmarks/zero3_load.py --smoke          # d_model 64, 2 layers, still 2 ranks each way

For each way, `ranks` fresh processes (gloo, CPU; both ways at the same time) run the learner's real start-up, `Learner.setup`:
policy load, frozen reference policy (beta > 0, as configs/multinode.yaml), DeepSpeed ZeRO-3 engines
and optimizer, with configs/deepspeed/zero3.json. Per rank, measured after the imports:

  peak_rss_mb     the kernel's peak resident set (VmHWM, reset through /proc/self/clear_refs just before
                  setup) minus the resident set at that moment
  peak_anon_mb    peak of RssAnon (sampled every 2 ms) minus its value then: private memory only, without
                  safetensors' mmapped file pages (page cache, which the kernel can drop)
  load_*          the same two at the end of the load phase (policy and reference built, before
                  DeepSpeed's engines, whose buffers and optimizer state are the same either way)
  read_fraction   checkpoint elements this rank read for the policy / elements in the model
  equal           after setup, every parameter of the trained engine and of the reference, gathered,
                  equals the checkpoint bit for bit

Prints one final line `RESULT {json}` with both ways and the ratios sliced / full.

How long, on the shared 2-core machine (2026-12-03, load average 2-5 from other jobs): `--smoke` 20-48 s
(four rank processes importing DeepSpeed; figures meaningless). The full run was not re-timed; about a
minute or two more than the smoke run (a 230 MB model built, then loaded by four ranks; an estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, add_smoke_flag, print_result

SMOKE_ARGS = {"d_model": 64, "layers": 2}  # still 2 ranks, both ways


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def rank_main(rank: int, world: int, port: int, path: str, sliced: bool) -> dict:
    """One learner rank's start-up, measured (runs in its own process)."""
    import torch
    from safetensors.torch import load_file

    import trainer.learner as learner_module
    from trainer.engine import import_deepspeed, load_deepspeed_config
    from trainer.learner import Learner, LearnerConfig, UniGRPOConfig

    torch.set_num_threads(1)
    deepspeed = import_deepspeed()
    import transformers.modeling_utils  # noqa: F401 - imports are not the load

    cfg = LearnerConfig(deepspeed_config="configs/deepspeed/zero3.json", bf16=False, sliced_load=sliced)
    learner = Learner(rank, world, path, cfg, UniGRPOConfig(beta=0.01), load_deepspeed_config(cfg, world, False))
    peak_anon, running = [0], [True]

    def sample() -> None:
        while running[0]:
            peak_anon[0] = max(peak_anon[0], status_kb("RssAnon"))
            time.sleep(0.002)

    def peaks() -> dict:
        return {"peak_rss_mb": (status_kb("VmHWM") - rss0) / 1024,
                "peak_anon_mb": (max(peak_anon[0], status_kb("RssAnon")) - anon0) / 1024}

    # the end of the load phase: both policies built, DeepSpeed's engines not yet (learner.setup calls
    # build_train_engine right after loading)
    load_phase, real_build = {}, learner_module.build_train_engine
    learner_module.build_train_engine = lambda *a, **k: (load_phase.update(peaks()), real_build(*a, **k))[1]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    rss0, anon0 = status_kb("VmRSS"), status_kb("RssAnon")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    info = learner.setup("127.0.0.1", port)
    seconds = time.perf_counter() - t0
    running[0] = False
    sampler.join()
    out = {"rank": rank, **peaks(), **{f"load_{k}": v for k, v in load_phase.items()}, "setup_s": seconds}
    numel = sum(p.ds_numel for p in learner.engine.module.parameters())
    out["read_fraction"] = info["checkpoint_elements_read"] / numel
    out["local_fraction"] = sum(p.ds_tensor.numel() for p in learner.engine.module.parameters()) / numel
    ckpt = load_file(str(Path(path) / "model.safetensors"))
    equal = True
    for model in (learner.engine.module, learner.ref):
        for name, p in model.named_parameters():
            with deepspeed.zero.GatheredParameters([p]):
                equal &= torch.equal(p.data.cpu(), ckpt[name].to(p.dtype))
    out["equal"] = bool(equal)
    return out


def start_ranks(path: Path, world: int, sliced: bool) -> list[subprocess.Popen]:
    from trainer.learner import free_port

    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    args = ["--rank-port", str(free_port()), "--world", str(world), "--path", str(path)] + (["--sliced"] if sliced else [])
    return [subprocess.Popen([sys.executable, __file__, "--rank", str(r), *args], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]


def collect(procs: list[subprocess.Popen]) -> list[dict]:
    outs = []
    for p in procs:
        text, _ = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"rank exited {p.returncode}:\n{text[-3000:]}")
        outs.append(json.loads(next(line for line in text.splitlines() if line.startswith("RANK "))[5:]))
    return outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--checkpoint-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                    help="dtype of the safetensors file (MMaDA-8B's is bfloat16); training is fp32 on CPU")
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rank-port", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sliced", action="store_true", help=argparse.SUPPRESS)
    add_smoke_flag(ap, "d_model 64, 2 layers (a ~1 MB checkpoint), still 2 ranks each way")
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE_ARGS)
    if args.rank is not None:
        out = rank_main(args.rank, args.world, args.rank_port, args.path, args.sliced)
        print("RANK " + json.dumps(out), flush=True)
        return

    from policy.tiny import build_tiny_policy

    with tempfile.TemporaryDirectory() as tmp:
        import torch

        path = build_tiny_policy(Path(tmp) / "policy", codebook_size=64, d_model=args.d_model,
                                 n_layers=args.layers, n_heads=8, dtype=getattr(torch, args.checkpoint_dtype))
        model_mb = (path / "model.safetensors").stat().st_size / 2**20
        result = {"model_mb": round(model_mb, 1), "checkpoint_dtype": args.checkpoint_dtype, "ranks": args.ranks}
        # both ways at once (memory is per process; only setup_s feels the shared cores)
        procs = {way: start_ranks(path, args.ranks, sliced) for way, sliced in (("full", False), ("sliced", True))}
        for way in procs:
            ranks = collect(procs[way])
            result[way] = {k: round(max(r[k] for r in ranks), 3) for k in
                           ("load_peak_rss_mb", "load_peak_anon_mb", "peak_rss_mb", "peak_anon_mb",
                                     "read_fraction", "local_fraction", "setup_s")}
            result[way]["equal"] = all(r["equal"] for r in ranks)
            r = result[way]
            print(f"{way:>6}: per rank (max over {args.ranks}) load phase: peak RSS +{r['load_peak_rss_mb']:.0f} MB, "
                  f"anonymous +{r['load_peak_anon_mb']:.0f} MB; whole setup: peak RSS +{r['peak_rss_mb']:.0f} MB, "
                  f"anonymous +{r['peak_anon_mb']:.0f} MB; read {result[way]['read_fraction']:.2f} "
                  f"of a {model_mb:.0f} MB {args.checkpoint_dtype} checkpoint, setup {result[way]['setup_s']:.1f} s, "
                  f"equal to the checkpoint: {result[way]['equal']}", flush=True)
    for k in ("load_peak_rss_mb", "load_peak_anon_mb", "peak_rss_mb", "peak_anon_mb", "read_fraction"):
        result[f"ratio_{k}"] = round(result["sliced"][k] / max(result["full"][k], 1e-9), 3)
    print_result(result, args.smoke)


if __name__ == "__main__":
    main()
