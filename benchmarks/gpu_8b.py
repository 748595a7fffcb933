"""MMaDA-8B-shaped checks on one GPU: the real parameter shapes in bf16, random weights.

The full run needs a CUDA GPU with >= 80 GB (without one it exits 2 and says so; `make bench` skips
it); it needs only torch and transformers. It answers what the CPU tests cannot: do the model, the
samplers and the UniGRPO objective run at the real size, how fast, and in how much memory. Baselines,
in the same run: the full-logits forward (1.), plain LLaDA sampling (2.), a bf16 matmul peak (3.).

1. forward: `logits_at` (LM head at chosen positions only) equals the full-logits forward.
2. samplers at gen_length 256, block 32, batch 8: plain LLaDA (full recompute every step) vs the
   prefix-KV-cache path (random weights give flat confidences, so only the cache is exercised, not
   the threshold or early stop); tokens/s for each and the ratio.
3. UniGRPO: masked-token log-probs with grad (LM head only at masked positions, fp32 log-softmax in
   chunks), the clipped loss, backward; tokens/s, model FLOP/s and the share of a bf16 matmul peak
   measured in the same run, and peak memory.

    .venv/bin/python benchmarks/gpu_8b.py            # on a GPU machine
    .venv/bin/python benchmarks/gpu_8b.py --smoke    # the same code on CPU, tiny shapes (CI; --tiny: old name)
Ends with `RESULT {json}`.

`--smoke`: d_model 64, 2 layers, MMaDA-8B's 134,656-token vocabulary, batch 2, prompts of 16 and
responses of 32 tokens, no matmul peak (MFU null); it never uses a GPU. How long: `--smoke` 8-19 s on
the shared 2-core machine (2026-12-03; figures meaningless). The full run was not re-timed (no GPU
here); its H200 figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from _common import add_smoke_flag, print_result

from policy.config import MMadaConfig
from policy.model import MMadaModelLM
from policy.vocab import VocabLayout
from rollout.text_sampler import TextSamplerConfig, generate_text
from trainer.unigrpo import (
    UniGRPOConfig,
    masked_token_logprobs,
    masks_for_update,
    token_weights,
    unigrpo_loss,
)

SMOKE_ROWS = 2


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, n=8192, reps=10) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_smoke_flag(ap, "CPU, d_model 64, 2 layers, MMaDA-8B's vocabulary, 2 rows of 16 + 32 tokens")
    ap.add_argument("--tiny", dest="smoke", action="store_true", help="the old name of --smoke")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.smoke:
        args.batch = min(args.batch, SMOKE_ROWS)
    elif not torch.cuda.is_available():
        print("gpu_8b.py measures MMaDA-8B shapes on a CUDA GPU (>= 80 GB) and none is visible; "
              "`--smoke` runs the same code on CPU with tiny shapes", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.bfloat16
    layout = VocabLayout.mmada_8b()
    if args.smoke:
        config = MMadaConfig(d_model=64, n_layers=2, n_heads=4, mlp_hidden_size=128)
    else:
        config = MMadaConfig()  # MMaDA-8B: 32 layers, d_model 4096, MLP 12288, vocab 134656
    torch.manual_seed(0)
    t = time.perf_counter()
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = MMadaModelLM(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "params_b": round(params / 1e9, 3), "build_s": round(time.perf_counter() - t, 1)}
    print(json.dumps(result), flush=True)

    # 1. logits only where asked == full logits
    ids = torch.randint(0, layout.text_vocab_size, (2, 96), device=device)
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[:, -32:] = True
    with torch.no_grad():
        full = model(ids).logits
        part = model(ids, logits_at=where).logits
    result["logits_at_max_abs_diff"] = float((full[where].float() - part.float()).abs().max())
    del full, part

    # 2. samplers: plain vs prefix cache at the setting
    prompt_len, gen = (16, 32) if args.smoke else (64, 256)
    prompt = torch.randint(0, layout.text_vocab_size, (args.batch, prompt_len), device=device)
    timings = {}
    outputs = {}
    for name, use_cache in (("plain", False), ("cache", True)):
        cfg = TextSamplerConfig(gen_length=gen, steps=gen, block_length=32, temperature=0.0, use_cache=use_cache,
                                further_horizon=0, early_stop=False)  # cached steps feed the block only
        sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            out = generate_text(model, prompt, None, layout, cfg, torch.Generator(device=device).manual_seed(0))
        sync(device)
        timings[name] = time.perf_counter() - t
        outputs[name] = out.response_ids
        result[f"{name}_tokens_per_s"] = round(args.batch * gen / timings[name], 1)
        result[f"{name}_forwards"] = out.num_forwards
        print(name, timings[name], flush=True)
    result["cache_speedup"] = round(timings["plain"] / timings["cache"], 2)
    result["cache_token_agreement"] = float((outputs["plain"] == outputs["cache"]).float().mean())

    # 3. one UniGRPO backward at the real size
    torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
    model.train()
    model.gradient_checkpointing_enable()
    rows, resp = (SMOKE_ROWS, 32) if args.smoke else (8, 256)
    inp = torch.randint(0, layout.text_vocab_size, (rows, prompt_len + resp), device=device)
    response_mask = np.zeros(tuple(inp.shape), dtype=bool)
    response_mask[:, prompt_len:] = True
    ucfg = UniGRPOConfig(mu=1)
    _, masks = masks_for_update(response_mask, ucfg, 0)
    masked = torch.from_numpy(masks[0]).to(device)
    is_image = torch.zeros(rows, dtype=torch.bool, device=device)
    adv = torch.randn(rows, device=device)
    with torch.no_grad():
        old, _ = masked_token_logprobs(model, inp, masked, is_image, layout.mask_id, layout.image_slice)
    times = []
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        logp, _ = masked_token_logprobs(model, inp, masked, is_image, layout.mask_id, layout.image_slice)
        row = torch.nonzero(masked)[:, 0]
        w = token_weights(row, masked.sum(1), "sequence", rows, int(masked.sum()))
        loss, _ = unigrpo_loss(logp, old, None, adv[row], w, ucfg)
        loss.backward()
        sync(device)
        times.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=False)
    step = min(times)
    tokens = rows * inp.shape[1]
    # forward + backward + checkpoint recompute of the blocks: 8 N per token; LM head at masked rows only
    flops = 8 * model.num_flops_per_token(inp.shape[1]) / 2 * tokens + 6 * config.d_model * config.vocab_size * int(masked.sum())
    peak = matmul_peak(device, dtype) if device.type == "cuda" else None  # a CPU bf16 peak means nothing
    result.update({
        "update_tokens_per_s": round(tokens / step, 1), "update_s": round(step, 3),
        "update_tflops": round(flops / step / 1e12, 1),
        "matmul_peak_tflops": round(peak / 1e12, 1) if peak else None,
        "update_mfu": round(flops / step / peak, 3) if peak else None,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None,
        "masked_tokens": int(masked.sum()),
    })
    print_result(result, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
