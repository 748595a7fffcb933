"""The multimodal demo's t2i learning loop alone, in one process, in seconds: what makes it learn or stall.

The same pieces as `configs/tiny_multimodal.yaml` (the tiny policy and its t2i warm start, the image
sampler, the palette tokenizer, the `region_colour` reward, trainer/unigrpo.py's masks, log-probs and
loss), without Ray, DeepSpeed or the text and mmu tasks: per RL step `--prompts` captions x G images,
group-normalised advantages, mu clipped updates with torch AdamW (linear warm-up, grad clip). One
thread. Reports the reward (x weight, CLIP left out) of the first and last 10 steps, the box ("inside")
pixel accuracy and the zero-variance groups of the last 10 steps, for each setting and seed.

    reward   = weight * |colour pixels & box| / |colour pixels | box|      (--metric iou, the demo's)
    or       = weight * (w * inside + (1 - w) * outside)                  (--metric accuracy, w = --inside-weight:
                                                                            pays for the black background)

    python benchmarks/t2i_probe.py                                   # the demo's settings, seeds 0-2
    python benchmarks/t2i_probe.py --warm-start 0 --init llada --metric accuracy --inside-weight 0.25 \
        --beta 0 --guidance 3.5                                      # the settings before the warm start:
                                                                     # the policy learns an all-black canvas
    python benchmarks/t2i_probe.py --guidance 3.5 --beta 0           # CFG on, no KL
    python benchmarks/t2i_probe.py --lr 0 --steps 10                 # the warm-started policy's reward
    python benchmarks/t2i_probe.py --supervised --warm-start 0       # cross-entropy on the target codes
                                                                     # instead of RL: how fast full
                                                                     # supervision learns the captions
    python benchmarks/t2i_probe.py --smoke                           # seed 0, 4 steps: checks it runs

Baseline: the policy's own reward over its first 10 steps (`ratio` = last10 / first10); `--lr 0` is the
no-learning reference. Ends with `RESULT {json}`.

How long, on the shared 2-core machine (2026-12-03): `--smoke` (a 10-step warm start, 4 RL steps of 2
prompts x G = 4) 5-7 s, figures meaningless. The full run (3 seeds x (200-step warm start + 150 steps of
3 prompts x 8)) was not re-timed; a few minutes (an estimate).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
from _common import add_smoke_flag, print_result

from policy.image_io import tensor_to_uint8
from policy.loading import load_policy
from policy.palette_tokenizer import PaletteTokenizer
from policy.prompts import t2i_prompt_ids, t2i_row_parts, t2i_uncond_prompt_ids
from policy.tiny import build_tiny_policy
from rewards.api import RewardInput
from rewards.examples.region_colour import region_colour
from rl.advantages import group_normalise
from rl.config import WarmStartSpec
from rl.data import ImageEncoder
from rl.tasks import shapes
from rollout.image_sampler import ImageSamplerConfig, generate_image
from trainer.batch import batch_from_rollouts
from trainer.sft import warm_start
from trainer.unigrpo import (
    UniGRPOConfig,
    masked_token_logprobs,
    masks_for_update,
    scored_positions,
    token_weights,
    unigrpo_loss,
)

SMOKE_ARGS = {"seeds": "0", "warm_start": 10, "steps": 4, "prompts": 2, "group_size": 4, "warmup": 2}


def scene_codes(palette: PaletteTokenizer, gold: dict, size: int) -> torch.Tensor:
    """The palette codes of the scene a caption describes (what a perfect image would be)."""
    img = np.zeros((size, size, 3), np.float32) + np.array(gold["background"])
    x0, y0, x1, y1 = (round(v * size) for v in gold["box"])
    img[y0:y1, x0:x1] = gold["rgb"]
    return palette.encode(torch.from_numpy(img).permute(2, 0, 1)[None] / 127.5 - 1.0)[0]


def supervised_step(model, layout, conds, targets, opt, sched) -> None:
    """loss = cross-entropy of the target codes at every (masked) image position, image-code slice."""
    ids = torch.tensor([c for c, _ in conds])
    mask = torch.tensor([m for _, m in conds])
    positions = (ids == layout.mask_id).nonzero()[:, 1].view(len(conds), -1)
    hidden = model(ids, attention_mask=mask, compute_logits=False).hidden_states
    hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
    logits = torch.nn.functional.linear(hidden, model.lm_head.weight[layout.image_slice])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.stack(targets).reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def run(a, seed: int) -> dict:
    torch.manual_seed(seed)
    tmp = tempfile.TemporaryDirectory()  # removed once this run is over
    directory = tmp.name
    build_tiny_policy(directory, codebook_size=8, seed=0, init=a.init, d_model=64, n_layers=2, n_heads=4)
    if a.warm_start:  # the demo's t2i warm start (rl/warm_start.py): colour words and position words, apart
        encoder = ImageEncoder(PaletteTokenizer(), a.resolution)
        images = [(c, encoder.encode(png, "warm start")) for c, png in shapes.t2i_warm_start_rows(a.resolution)]
        ws = WarmStartSpec()  # the config's warm-start batch size and learning rate
        warm_start(directory, [], 4, a.warm_start, ws.batch_size, ws.lr, seed, images=images, max_text_len=a.max_text_len)
    policy = load_policy(directory)
    model, tok, layout = policy.model, policy.tokenizer, policy.layout
    ref = copy.deepcopy(model).eval().requires_grad_(False) if a.beta > 0 else None  # frozen pi_ref = initial policy
    palette = PaletteTokenizer()
    n = (a.resolution // palette.patch) ** 2
    rows = shapes.t2i_rows(256, 2)  # the demo's t2i rows (data.seed 0 + offset 2)
    random.Random(seed).shuffle(rows)
    sampler = ImageSamplerConfig(steps=a.image_steps, guidance_scale=a.guidance, temperature=1.0)
    ucfg = UniGRPOConfig(mu=a.mu, mask_schedule=a.mask_schedule, beta=a.beta, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup) if a.warmup else 1.0)
    gen = torch.Generator().manual_seed(seed)
    uncond, uncond_mask = t2i_uncond_prompt_ids(tok, layout, n, a.max_text_len)
    targets = {r["caption"]: scene_codes(palette, json.loads(r["answer"]), a.resolution) for r in rows}
    rewards, inside, zero_var = [], [], []
    for step in range(a.steps):
        batch = [rows[(step * a.prompts + i) % len(rows)] for i in range(a.prompts)]
        jobs = [r for r in batch for _ in range(a.group_size)]
        conds = [t2i_prompt_ids(tok, layout, r["caption"], n, a.max_text_len) for r in jobs]
        model.eval()
        out = generate_image(model, torch.tensor([c for c, _ in conds]), torch.tensor([m for _, m in conds]),
                             torch.tensor([uncond]), torch.tensor([uncond_mask]), layout, sampler, gen)
        model.train()
        r_step, in_step = [], []
        for r, img in zip(jobs, tensor_to_uint8(palette.decode(out.codes))):
            res = region_colour(RewardInput(task="t2i", prompt=r["caption"], response="", gold=r["answer"],
                                            image=np.asarray(img)), inside_weight=a.inside_weight, metric=a.metric)
            in_step.append(float(res.detail.split()[0].split("=")[1]))
            r_step.append(a.weight * res.value)
        adv = group_normalise(np.array(r_step), np.repeat(np.arange(a.prompts), a.group_size))
        rewards.append(float(np.mean(r_step)))
        inside.append(float(np.mean(in_step)))
        zero_var.append(adv.zero_variance_groups)
        # the rows batch_from_rollouts reads (trainer/batch.py SampledRow: what a RolloutRecord carries)
        records = [SimpleNamespace(**dict(zip(("prompt_ids", "prompt_mask", "suffix_ids"), t2i_row_parts(c, m, n))),
                                   task="t2i", response_ids=layout.code_to_token(out.codes[i]).tolist())
                   for i, (c, m) in enumerate(conds)]
        if a.supervised:
            supervised_step(model, layout, conds, [targets[r["caption"]] for r in jobs], opt, sched)
            continue
        tb = batch_from_rollouts(records, adv.values)
        _, masked = masks_for_update(scored_positions(tb.input_ids, tb.response_mask, layout.eos_id, "all"), ucfg, step)
        ids, attn = torch.from_numpy(tb.input_ids), torch.from_numpy(tb.attention_mask)
        is_image, advantages = torch.from_numpy(tb.is_image), torch.from_numpy(tb.advantages)

        def logprobs(m, net=model, ids=ids, attn=attn, is_image=is_image):
            return masked_token_logprobs(net, ids, m, is_image, layout.mask_id, layout.image_slice,
                                         attention_mask=attn)[0]

        with torch.no_grad():
            old = [logprobs(torch.from_numpy(masked[i])) for i in range(a.mu)]
            refs = [logprobs(torch.from_numpy(masked[i]), ref) if ref is not None else None for i in range(a.mu)]
        for i in range(a.mu):
            m = torch.from_numpy(masked[i])
            row = torch.nonzero(m)[:, 0]
            # weights as in the demo: 1/(k_i * N) with N the whole mixed batch (9 prompts x G)
            w = token_weights(row, m.sum(1), "sequence", a.batch_rows, int(m.sum()))
            loss, _ = unigrpo_loss(logprobs(m), old[i], refs[i], advantages[row], w, ucfg)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    first, last = float(np.mean(rewards[:10])), float(np.mean(rewards[-10:]))
    return {"seed": seed, "first10": round(first, 3), "last10": round(last, 3), "ratio": round(last / first, 2) if first > 0 else None,
            "inside_first10": round(float(np.mean(inside[:10])), 3), "inside_last10": round(float(np.mean(inside[-10:])), 3),
            "zero_variance_groups_last10": round(float(np.mean(zero_var[-10:])), 1),
            "curve": [round(float(np.mean(rewards[i:i + 10])), 2) for i in range(0, len(rewards), 10)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150, help="RL steps (the demo fits ~150-180 in 170 s)")
    p.add_argument("--prompts", type=int, default=3, help="t2i prompts per step (a third of the demo's 9)")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--batch-rows", type=int, default=72, help="rows of the whole mixed batch (loss weights)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20, help="linear LR warm-up, optimizer steps (mu per RL step)")
    p.add_argument("--mu", type=int, default=2)
    p.add_argument("--beta", type=float, default=0.1, help="KL(pi_theta || pi_ref) weight, pi_ref the initial policy")
    p.add_argument("--init", choices=("llada", "scaled"), default="scaled",
                   help="tiny policy init (model.tiny.init): LLaDA's N(0, 0.02) or policy.tiny.scaled_init_")
    p.add_argument("--mask-schedule", default="stratified")
    p.add_argument("--guidance", type=float, default=0.0, help="CFG scale (the demo: 0, see its config)")
    p.add_argument("--image-steps", type=int, default=4)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--max-text-len", type=int, default=40)
    p.add_argument("--metric", choices=("accuracy", "iou"), default="iou")
    p.add_argument("--inside-weight", type=float, default=0.25)
    p.add_argument("--weight", type=float, default=2.0)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--warm-start", type=int, default=200, help="SFT steps of the demo's t2i warm start (0: none)")
    p.add_argument("--supervised", action="store_true", help="cross-entropy on the target codes instead of RL")
    add_smoke_flag(p, "seed 0, a 10-step warm start, 4 RL steps of 2 prompts x G = 4")
    a = p.parse_args()
    if a.smoke:
        vars(a).update(SMOKE_ARGS)
    torch.set_num_threads(1)
    t0 = time.time()
    results = []
    for seed in (int(s) for s in a.seeds.split(",")):
        results.append(run(a, seed))
        print(json.dumps(results[-1]), flush=True)
    ratios = [r["ratio"] for r in results if r["ratio"] is not None] or [None]
    print_result({"settings": {k: v for k, v in vars(a).items() if k != "seeds"}, "runs": results,
                  "ratio_min": min(ratios, key=lambda v: v or 0), "ratio_max": max(ratios, key=lambda v: v or 0),
                  "seconds": round(time.time() - t0, 1)}, a.smoke)


if __name__ == "__main__":
    main()
