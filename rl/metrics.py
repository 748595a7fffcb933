"""Metrics: one JSON line per step in metrics.jsonl, a readable console line, and the reward plot."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"

    def log(self, step: int, values: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **values}, default=float, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.read() if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def console_line(step: int, total: int, m: dict) -> str:
    return (
        f"step {step:>4}/{total}  reward {m['reward/mean']:.3f}  acc {m.get('reward/math/mean', float('nan')):.2f}"
        f"  loss {m.get('learner/loss', float('nan')):+.4f}  kl {m.get('learner/kl', float('nan')):.4f}"
        f"  clip {m.get('learner/clip_frac', float('nan')):.2f}  zero-var {m['adv/zero_variance_groups']}"
        f"/{m['adv/groups']}  {m['time/step_s']:.2f}s (gen {m['time/generate_s']:.2f} rew {m['time/reward_s']:.2f}"
        f" upd {m['time/update_s']:.2f} [old/ref {m.get('learner/old_ref_logprob_s', float('nan')):.2f}]"
        f" pub {m['time/publish_s']:.2f})"
    )


def moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_rewards(metrics: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    rewards = [m["reward/mean"] for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, rewards, color="#9ab", lw=1, label="mean reward per step")
    ax.plot(steps, moving_average(rewards, 10), color="#136", lw=2, label="moving average (10 steps)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
