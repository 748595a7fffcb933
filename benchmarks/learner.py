"""Learner throughput: tokens/s of one UniGRPO `update` and its model-FLOPs utilisation (MFU).

    .venv/bin/python benchmarks/learner.py                 # fp32, the default claim
    .venv/bin/python benchmarks/learner.py --dtype bf16    # bf16 autocast, against a bf16 matmul peak
    .venv/bin/python benchmarks/learner.py --smoke         # the same path, tiny: checks that it runs

A ~31M-parameter policy (d_model 512, 8 layers, MLP 1536, vocab ~4.1k) in a 1-rank DeepSpeed engine
(ZeRO-2, gloo, in-process; no Ray, which would only add a process hop) runs whole updates: mu
iterations, old log-probs for every mask first (no grad), then mu forward+backward+AdamW steps. The
batch is 16 rows of 64 prompt + 192 response tokens drawn from the text ids a rollout can hold (never
[MASK]); text log-probs are taken on the sampler's support at the rollout temperature (1.0), the
learner's default (`unigrpo.logprob_support: sampler`).

Model FLOPs are counted, never measured (recomputation is not credited):
    F_tok  = MMadaModelLM.num_flops_per_token(L)  = 2 * non-embedding matmul params + 4 * L * d * layers
             (non-causal attention: QK^T and AV over all L keys; checked against the module shapes below)
    F_head = 2 * d * V per *masked* token (the LM head runs only there)
    update = mu * [ 3 * (N*L*F_tok + M*F_head)      trained forward + backward
                  + 1 * (N*L*F_tok + M*F_head) ]    no-grad old-policy forward (x2 with a reference model)
MFU = update FLOPs / seconds / peak, the peak being the best torch.matmul rate (4096^2, same dtype and
threads) measured in the same run, before and after the updates (the higher one is used). tokens_per_s = mu * N * L / seconds (tokens through a trained pass).

Baseline: that matmul peak, the most the machine's BLAS does on square fp32 (or bf16) matrices; the
goal is MFU >= 0.4 (recorded: 0.81 on a quiet 2-core machine, docs/benchmarks.md).

How long, on the shared 2-core machine (2026-12-03, load average ~3 from other jobs): the full run
190 s (updates of 22-50 s: the shared CPU; MFU 0.23 there); `--smoke` (a ~0.6M-parameter policy, 4 rows
x 64 tokens, 2 timed updates, a 512^2 matmul peak) 8-11 s, figures meaningless.
Prints one final line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import ROOT, add_smoke_flag, print_result  # noqa: E402

from policy.tiny import build_tiny_policy  # noqa: E402
from trainer.batch import TrainBatch  # noqa: E402
from trainer.engine import load_deepspeed_config  # noqa: E402
from trainer.learner import Learner, LearnerConfig, UniGRPOConfig, free_port  # noqa: E402
from trainer.unigrpo import masks_for_update  # noqa: E402

# the benchmarked policy (~31M parameters) and the smoke mode's (~0.6M, most of it the embedding)
MODEL = {"d_model": 512, "n_layers": 8, "n_heads": 8, "mlp_hidden_size": 1536}
SMOKE_MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 128}
SMOKE_ARGS = {"rows": 4, "prompt": 16, "response": 48, "updates": 2, "peak_n": 512}
ROLLOUT_TEMPERATURE = 1.0  # configs/*.yaml rollout.text.temperature: the sampler support is scored at it


def matmul_peak(dtype: torch.dtype, n: int, repeats: int = 4) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def check_flops_formula(model, seq_len: int) -> None:
    """num_flops_per_token against the modules: 2 * (matmul weights of the blocks) + attention."""
    c = model.config
    block_params = sum(p.numel() for n, p in model.model.transformer.blocks.named_parameters() if p.ndim == 2)
    expected = 2 * block_params + c.n_layers * 4 * seq_len * c.d_model
    got = model.num_flops_per_token(seq_len)
    assert got == expected, (got, expected)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--response", type=int, default=192)
    ap.add_argument("--mu", type=int, default=2)
    ap.add_argument("--micro-batch-tokens", type=int, default=2048)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--peak-n", type=int, default=4096, help="matmul size of the peak measurement")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    add_smoke_flag(ap, "a ~0.6M-parameter policy, 4 rows x 64 tokens, 2 timed updates, a 512^2 matmul peak")
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE_ARGS)
    torch.set_num_threads(args.threads)

    peak_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak_before = matmul_peak(peak_dtype, args.peak_n)
    tmp = tempfile.TemporaryDirectory(prefix="bench_learner_")
    path = build_tiny_policy(Path(tmp.name) / "policy", codebook_size=4000, seed=0,
                             **(SMOKE_MODEL if args.smoke else MODEL))
    cfg = LearnerConfig(lr=1e-5, micro_batch_tokens=args.micro_batch_tokens, autocast_bf16=args.dtype == "bf16",
                        deepspeed_config=str(ROOT / "configs" / "deepspeed" / "zero2.json"))
    # the learner scores text on the sampler's support at the rollout temperature (logprob_support
    # "sampler", the default), as rl/builders.py builds the objective from a config
    ucfg = UniGRPOConfig(mu=args.mu, beta=0.0, temperature=ROLLOUT_TEMPERATURE)
    os.environ["MASTER_PORT"] = str(free_port())
    learner = Learner(0, 1, str(path), cfg, ucfg, load_deepspeed_config(cfg, 1, use_bf16=False))
    learner.setup("127.0.0.1", int(os.environ["MASTER_PORT"]))
    model = learner.engine.module
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())

    n, length = args.rows, args.prompt + args.response
    check_flops_formula(model, length)
    rng = np.random.default_rng(0)
    # what a text rollout holds: text ids, never [MASK] (the sampler suppresses it, so its support does too)
    layout = learner.layout
    ids = rng.choice(np.setdiff1d(np.arange(5, layout.text_vocab_size), [layout.mask_id]), size=(n, length))
    resp = np.zeros((n, length), bool)
    resp[:, args.prompt:] = True
    batch = TrainBatch(ids, resp, rng.normal(size=n).astype(np.float32))

    def one_update(k: int) -> tuple[float, int]:
        _, masked = masks_for_update(resp, ucfg, k)
        tokens = [int(t) for t in masked.sum((1, 2))]
        num_micro = -(-n // max(1, args.micro_batch_tokens // length))
        t = time.perf_counter()
        learner.update(batch, masked, n, tokens, num_micro)
        return time.perf_counter() - t, sum(tokens)

    one_update(0)  # warm-up (allocator, autograd graph, oneDNN kernels)
    times, masked_tokens = zip(*(one_update(k) for k in range(1, args.updates + 1)))
    seconds = float(np.median(times))
    masked_per_update = float(np.mean(masked_tokens))

    f_tok = model.num_flops_per_token(length)
    f_head = 2 * c.d_model * c.embedding_size
    body, head = n * length * f_tok, masked_per_update / args.mu * f_head  # per iteration
    forwards_no_grad = 1 + (1 if ucfg.beta > 0 else 0)
    flops = args.mu * (3 + forwards_no_grad) * (body + head)
    peak = max(peak_before, matmul_peak(peak_dtype, args.peak_n))  # the better of two measurements: a conservative MFU
    result = {
        "tokens_per_s": round(args.mu * n * length / seconds, 1),
        "mfu": round(flops / seconds / peak, 4),
        "model_tflops_per_s": round(flops / seconds / 1e12, 4),
        "peak_matmul_tflops": round(peak / 1e12, 4),
        "dtype": args.dtype,
        "update_s": round(seconds, 3),
        "params_m": round(n_params / 1e6, 1),
        "rows": n,
        "seq_len": length,
        "mu": args.mu,
        "micro_batch_tokens": args.micro_batch_tokens,
        "masked_tokens_per_iter": masked_per_update / args.mu,
        "threads": args.threads,
    }
    print(f"update times {[round(t, 3) for t in times]} s")
    print_result(result, args.smoke)


if __name__ == "__main__":
    main()
