"""Fast text sampler (prefix KV cache + confidence threshold + early stop) vs the plain LLaDA algorithm.

    .venv/bin/python benchmarks/sampler.py            # < 5 min on 2 CPU cores, ends with `RESULT {json}`

A random model has near-uniform confidences (no threshold ever fires) and no notion of EOS, which would
make any speed comparison meaningless. So the script first trains a small policy for about a minute on
a closed synthetic, offline corpus of short tasks ("count from 3 to 9" -> "3 4 5 6 7 8 9",
"spell cat" -> "c a t", "repeat cat 2 times" -> "cat cat") with LLaDA's masked-diffusion SFT objective (answer followed by EOS padding to gen_length,
t ~ U(0, 1), loss on masked response tokens weighted 1/t), saves it with save_pretrained and loads it
back through `policy.loading.load_policy`, the path a real checkpoint takes. Then, on the same held-out
prompts, at temperature 0:

    plain:      use_cache=False, fixed schedule (steps = gen_length, one token per step), no early stop
    cache_only: use_cache=True (block-only window), same schedule, no early stop
    fast:       use_cache=True (block-only window), threshold=0.9, early_stop=True

Agreement (the fast path is an approximation, so it is measured, not assumed):
    agreement          fraction of prompts whose decoded response (cut at the first EOS) is identical
                       to the plain sampler's -- the strict, sequence-level number that matters for RL
                       (a reward sees the decoded answer)
    token_agreement    fraction of the gen_length positions with the same id (inflated by EOS padding)
    content_agreement  same, restricted to positions up to and including the plain response's first EOS
    cache_agreement    `agreement` of cache_only vs plain: the cost of the stale prefix K/V alone
    accuracy_*         fraction of answers equal to the task's ground truth, per sampler
Speed: wall time of the plain run, median of 3 runs for the (short) cached runs; generated tokens/s counts all gen_length response positions of every prompt (the output shape is
the same for all samplers, so the speed ratio is the wall-time ratio); forwards per sample is the number
of model calls each sample took part in.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.loading import load_policy  # noqa: E402
from policy.model import MMadaModelLM  # noqa: E402
from policy.prompts import chat_prompt_ids, left_pad  # noqa: E402
from policy.tiny import build_tiny_tokenizer, tiny_config  # noqa: E402
from policy.vocab import VocabLayout  # noqa: E402
from rollout.text_sampler import TextSamplerConfig, generate_text  # noqa: E402

WORDS = ["cat", "dog", "sun", "tree", "bird", "fish", "moon", "star", "rain", "leaf", "rock", "wind"]


def make_task(rng: random.Random) -> tuple[str, str]:
    """One of ~250 distinct (question, answer) pairs: a small, closed corpus a tiny model can learn in a
    minute, with answers of 1 to ~40 characters (so some responses span two 32-token blocks)."""
    kind = rng.randrange(3)
    if kind == 0:
        a, k = rng.randrange(0, 20), rng.randrange(1, 7)
        return f"count from {a} to {a + k}", " ".join(str(i) for i in range(a, a + k + 1))
    w = rng.choice(WORDS)
    if kind == 1:
        return f"spell {w}", " ".join(w)
    n = rng.randrange(1, 9)
    return f"repeat {w} {n} times", " ".join([w] * n)


def training_batch(rng, tokenizer, layout, batch_size, gen_length):
    tasks = [make_task(rng) for _ in range(batch_size)]
    prompt, pmask = left_pad([chat_prompt_ids(tokenizer, layout, q) for q, _ in tasks], layout.pad_id)
    response = torch.full((batch_size, gen_length), layout.eos_id)
    for i, (_, a) in enumerate(tasks):
        ids = tokenizer(a, add_special_tokens=False)["input_ids"][: gen_length - 1]
        response[i, : len(ids)] = torch.tensor(ids)
    return prompt, pmask, response


def train_policy(directory: Path, gen_length: int, d_model: int, n_layers: int, max_steps: int,
                 time_budget_s: float, lr: float = 3e-3, seed: int = 0) -> dict:
    """LLaDA SFT objective on the synthetic corpus; writes a policy directory like a real checkpoint."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = build_tiny_tokenizer()
    layout = VocabLayout.from_tokenizer(tokenizer, codebook_size=16)
    model = MMadaModelLM(tiny_config(layout, d_model=d_model, n_layers=n_layers, n_heads=4))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 20
    start, step, loss_ema = time.perf_counter(), 0, None
    while step < max_steps and time.perf_counter() - start < time_budget_s:
        # cosine decay over the planned steps, so a run cut by the time budget still ends at a low LR
        lr_scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / max_steps))
        for group in opt.param_groups:
            group["lr"] = lr * lr_scale
        # Most batches use a short EOS tail (cheap, and the answer is a larger share of the loss); one in
        # eight uses the full gen_length so that EOS is learnt at every position the sampler will fill.
        length = gen_length if step % 8 == 0 else min(gen_length, 48)
        prompt, pmask, response = training_batch(rng, tokenizer, layout, 16, length)
        B = response.shape[0]
        t = (1 - 1e-3) * torch.rand(B, 1) + 1e-3  # LLaDA: p_mask = (1 - eps) t + eps
        masked = torch.rand(B, length) < t
        x = torch.cat([prompt, torch.where(masked, layout.mask_id, response)], dim=1)
        where = torch.cat([torch.zeros_like(prompt, dtype=torch.bool), masked], dim=1)
        attn = torch.cat([pmask, torch.ones_like(response)], dim=1)
        logits = model(x, attention_mask=attn, logits_at=where).logits
        ce = torch.nn.functional.cross_entropy(logits.float(), response[masked], reduction="none")
        loss = (ce / t.expand_as(masked)[masked]).sum() / (B * length)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        step += 1
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return {"train_steps": step, "train_s": round(time.perf_counter() - start, 1), "train_loss": round(loss_ema, 4)}


def decoded(out, tokenizer, layout) -> list[str]:
    texts = []
    for ids in out.response_ids.tolist():
        cut = ids.index(layout.eos_id) if layout.eos_id in ids else len(ids)
        texts.append(tokenizer.decode(ids[:cut], skip_special_tokens=True))
    return texts


def timed(policy, prompt, mask, config, repeats: int = 1):
    """Median wall time over `repeats` runs (the CPU is shared, so short runs are repeated)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate_text(policy.model, prompt, mask, policy.layout, config)
        times.append(time.perf_counter() - start)
    return out, sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--train-seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared CPU)")
    ap.add_argument("--model-dir", type=Path, default=None, help="reuse/keep the trained policy here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    directory = args.model_dir or Path(tmp.name) / "policy"
    info: dict = {}
    if not (directory / "config.json").is_file():
        info = train_policy(directory, args.gen_length, args.d_model, args.n_layers, args.train_steps,
                            args.train_seconds, args.lr)
        print(f"trained: {info}")
    policy = load_policy(directory)
    tok, layout = policy.tokenizer, policy.layout

    rng = random.Random(12345)  # a fresh draw from the same closed task set the model was trained on
    tasks = [make_task(rng) for _ in range(args.prompts)]
    prompt, mask = left_pad([chat_prompt_ids(tok, layout, q) for q, _ in tasks], layout.pad_id)

    gen = args.gen_length
    plain_cfg = TextSamplerConfig(gen_length=gen, steps=gen, block_length=args.block_length, temperature=0.0,
                                  use_cache=False, threshold=None, early_stop=False)
    cache_cfg = replace(plain_cfg, use_cache=True, further_horizon=0)
    fast_cfg = replace(cache_cfg, threshold=args.threshold, early_stop=True)

    timed(policy, prompt[:2], mask[:2], replace(fast_cfg, gen_length=args.block_length))  # warm-up
    fast, fast_s = timed(policy, prompt, mask, fast_cfg, repeats=3)
    cache_only, cache_s = timed(policy, prompt, mask, cache_cfg, repeats=3)
    plain, plain_s = timed(policy, prompt, mask, plain_cfg)

    texts = {name: decoded(out, tok, layout) for name, out in
             [("plain", plain), ("cache_only", cache_only), ("fast", fast)]}
    truth = [a for _, a in tasks]
    content = torch.zeros_like(plain.response_ids, dtype=torch.bool)
    for i, ids in enumerate(plain.response_ids.tolist()):
        end = ids.index(layout.eos_id) + 1 if layout.eos_id in ids else len(ids)
        content[i, :end] = True
    same = fast.response_ids == plain.response_ids
    n_tokens = prompt.shape[0] * gen

    result = {
        "speedup": round(plain_s / fast_s, 2),
        "agreement": sum(a == b for a, b in zip(texts["fast"], texts["plain"])) / len(tasks),
        "token_agreement": round(same.float().mean().item(), 4),
        "content_agreement": round(same[content].float().mean().item(), 4),
        "cache_agreement": sum(a == b for a, b in zip(texts["cache_only"], texts["plain"])) / len(tasks),
        "cache_speedup": round(plain_s / cache_s, 2),
        "plain_tokens_per_s": round(n_tokens / plain_s, 1),
        "fast_tokens_per_s": round(n_tokens / fast_s, 1),
        "plain_forwards_per_sample": plain.sample_forwards.float().mean().item(),
        "fast_forwards_per_sample": fast.sample_forwards.float().mean().item(),
        "accuracy_plain": sum(a == b for a, b in zip(texts["plain"], truth)) / len(tasks),
        "accuracy_fast": sum(a == b for a, b in zip(texts["fast"], truth)) / len(tasks),
        "plain_s": round(plain_s, 2),
        "fast_s": round(fast_s, 2),
        "gen_length": gen,
        "block_length": args.block_length,
        "threshold": args.threshold,
        "prompts": len(tasks),
        "model": {"d_model": policy.model.config.d_model, "n_layers": policy.model.config.n_layers, **info},
    }
    print(f"{'sampler':<11} {'time s':>8} {'tok/s':>9} {'fwd/sample':>11}")
    for name, out, secs in [("plain", plain, plain_s), ("cache_only", cache_only, cache_s), ("fast", fast, fast_s)]:
        print(f"{name:<11} {secs:8.2f} {n_tokens / secs:9.1f} {out.sample_forwards.float().mean().item():11.1f}")
    for (q, a), p, f in zip(tasks, texts["plain"], texts["fast"]):
        print(f"  {q!r:<28} truth={a!r:<24} plain={p!r:<24} fast={f!r}")
    print("fast config:", json.dumps(asdict(fast_cfg)))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
