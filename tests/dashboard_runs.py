"""Run directories for the dashboard tests, written by the run's own writers (RolloutStore, MetricsLog)
so the dashboard reads exactly the format a run produces."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rl.dashboard.flags import TokenRanges
from rl.metrics import MetricsLog
from rl.store import RolloutStore
from rollout.record import RolloutRecord

RANGES = TokenRanges(eos_id=0, mask_id=999, text_end=1000, image_lo=1000, image_hi=1064)  # the flags' layout
XSS = ('<script>alert(1)</script>', '<img src=x onerror="alert(2)">', '<a href="javascript:alert(3)">click</a>')


def records(step: int, groups: int = 2, G: int = 4, gen: int = 8, seed: int = 0, xss: bool = False,
            image: bool = False) -> list[dict]:
    rng = random.Random(seed * 1000 + step)
    out = []
    for g in range(groups):
        for i in range(G):
            correct = rng.random() < 0.3 + 0.1 * step
            status = "ok" if (g, i) != (1, 3) else ("timeout" if step % 2 else "unparsable")
            answer = str(7 if correct else rng.randint(1, 9))
            text = f"The answer is {answer}"
            if xss and i < len(XSS):
                text = f"{XSS[i]} answer {answer}"
            unmask = list(range(gen))
            rng.shuffle(unmask)
            rec = {
                "prompt_id": f"toy-{g + 10 * (step % 2)}", "group_index": i, "task": "t2i" if image else "math",
                "policy_version": step - 1, "prompt_ids": [1, 2, 3], "prompt_mask": [1, 1, 1],
                "response_ids": _ids(text, gen, g, i), "worker": f"rollout-{(g + i) % 2}",
                "response_text": text, "image_codes": None, "image_png": None,
                "unmask_step": unmask, "confidence": [round(rng.random(), 3) for _ in range(gen)],
                "early_filled": [False] * gen, "num_forwards": gen,
                "sampler": {"kind": "text", "steps": gen}, "timings": {"gen_s": 0.1, "batch_size": groups * G},
                "seed": step, "group": g, "gold": "7", "question": f"Repeat the number: 7 (group {g})",
                "reward": (2.0 if correct else 0.0) if status == "ok" else 0.0,
                "reward_components": {"math": {"value": float(correct and status == "ok"), "status": status,
                                               "detail": "no answer (boxed)" if status != "ok" else "integer"}},
                "advantage": rng.uniform(-1, 1), "step": step,
            }
            if image:  # a text-to-image rollout: a 4x4 code grid and its decoded PNG
                codes = [rng.randrange(64) for _ in range(16)]
                order = list(range(16))
                rng.shuffle(order)
                rec |= {"response_text": "", "image_codes": codes, "image_png": _png(codes), "unmask_step": order,
                        "confidence": [round(rng.random(), 3) for _ in range(16)], "early_filled": [False] * 16,
                        "response_ids": [1000 + c for c in codes], "question": f"a red square {g}",
                        "sampler": {"kind": "image", "steps": 16},
                        "reward_components": {"clip": {"value": rng.random(), "status": "ok", "detail": ""}}}
            if xss and g == 0 and i == 0:
                rec["question"] = XSS[0] + " what is 3+4?"
                rec["gold"] = XSS[1]
            out.append(rec)
    return out


def _ids(text: str, gen: int, g: int, i: int) -> list[int]:
    """Text ids ending in EOS (0) padding; per step, response (0, 1) runs into the length limit (no EOS:
    flagged `cut`) and response (1, 0) holds an id outside the text vocabulary (flagged `odd_ids`)."""
    body = [40 + (ord(c) % 50) for c in text[: gen - 2]]
    if (g, i) == (1, 0):
        body[1] = 5000
    return body + [99 if (g, i) == (0, 1) else 0] * (gen - len(body))


def _png(codes: list[int]) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    grid = np.array(codes, dtype=np.uint8).reshape(4, 4) * 4
    buf = io.BytesIO()
    Image.fromarray(np.stack([grid, 255 - grid, grid], -1)).resize((32, 32), Image.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def metrics(step: int, recs: list[dict]) -> dict:
    rewards = [r["reward"] for r in recs]
    mean = sum(rewards) / len(rewards)
    if "math" not in recs[0]["reward_components"]:
        return {"reward/mean": mean, "rollouts": len(recs), "time/step_s": 1.0}
    return {
        "reward/mean": mean, "reward/std": (sum((x - mean) ** 2 for x in rewards) / len(rewards)) ** 0.5,
        "reward/math/mean": sum(r["reward_components"]["math"]["value"] for r in recs) / len(recs),
        "reward/math/timeout": sum(r["reward_components"]["math"]["status"] == "timeout" for r in recs),
        "reward/math/error": 0, "reward/math/unparsable": sum(r["reward_components"]["math"]["status"] == "unparsable" for r in recs),
        "adv/zero_variance_groups": 0, "adv/groups": 2, "policy_version": step, "rollouts": len(recs),
        "learner/loss": 0.1 / step, "learner/kl": 0.01 * step, "learner/clip_frac_low": 0.01, "learner/clip_frac_high": 0.02,
        "learner/ratio_max": 1.0 + step, "learner/entropy": 2.0 - 0.1 * step, "response/len_mean": 20.0,
        "time/generate_s": 0.5, "time/reward_s": 0.2, "time/update_s": 1.0, "time/publish_s": 0.1, "time/store_s": 0.01,
        "time/step_s": 1.9, "time/gen_compute_s": 0.4, "time/reward_compute_s": 0.1, "time/update_compute_s": 0.9,
        "throughput/rollouts_per_s": len(recs) / 1.9,
        # as an asynchronous run logs them (rl/pipeline.py): one batch ahead from the second step
        "time/idle/rollout": 0.79, "time/idle/learner": 0.53, "time/idle/reward": 0.95,
        f"async/lag_{min(step - 1, 1)}": len(recs), "async/dropped": 0, "learner/ess_fraction": 1.0 if step == 1 else 0.9,
    }


def write_step(run_dir: Path, step: int, **kw) -> None:
    recs = records(step, **kw)
    RolloutStore(run_dir, ranges=RANGES).append(step, [RolloutRecord.from_row(r, strict=True) for r in recs])
    MetricsLog(run_dir).log(step, metrics(step, recs))


def make_run(run_dir: Path, steps: int = 3, **kw) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"run: {{name: {run_dir.name}}}\n")
    for s in range(1, steps + 1):
        write_step(run_dir, s, **kw)
    (run_dir / "summary.json").write_text(json.dumps({"steps": steps, "wall_s": 5.0}))
    return run_dir
