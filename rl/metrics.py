"""Metrics: one JSON line per step in metrics.jsonl, a readable console line, and the reward plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rewards.api import STATUSES
from rl.checkpoints import human_bytes


class MetricsLog:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"

    def log(self, step: int, values: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **values}, default=float, sort_keys=True) + "\n")

    def read(self, having: str | None = None) -> list[dict]:
        """Every well-formed row (with `having`: only rows that hold that key, parsed alone). A process
        killed mid-write leaves a half line at the end (and a disk that filled up may leave one anywhere):
        such a line is not a step that happened, so it is skipped rather than making the run unresumable;
        `bad_lines` counts them."""
        self.bad_lines = 0
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip() or (having is not None and f'"{having}"' not in line):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                self.bad_lines += 1
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                if having is None or having in row:
                    rows.append(row)
            else:
                self.bad_lines += 1
        return rows

    def truncate_after(self, step: int) -> None:
        """Keep the rows up to `step` (a resume), written to a temporary file and renamed over the old
        one, so a crash here never leaves a half-truncated log."""
        kept = [r for r in self.read() if r["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        os.replace(tmp, self.path)


def step_metrics(records, rewards, adv, stats: dict, phases: dict, published: dict) -> dict:
    """One step's metrics: rewards (total and per component, with failure counts), advantages, learner
    statistics, phase times, and the weight publication (transport, bytes, seconds)."""
    m = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()),
        "adv/zero_variance_groups": adv.zero_variance_groups,
        "adv/groups": adv.groups,
        "policy_version": published["publish/version"],
        "rollouts": len(records),
        "response/len_mean": mean(len(r.response_text) for r in records),
    }
    for name in sorted({k for r in records for k in r.reward_components}):
        comps = [r.reward_components[name] for r in records if name in r.reward_components]
        m[f"reward/{name}/mean"] = mean(c["value"] for c in comps)
        for status in STATUSES:  # every failure status is counted ("invalid": non-finite or absurd values)
            if status == "ok":
                continue
            m[f"reward/{name}/{status}"] = sum(c["status"] == status for c in comps)
    m.update(task_metrics(records, rewards, adv))
    m.update({f"learner/{k}": v for k, v in stats.items()})
    m.update({f"time/{k}_s": v for k, v in phases.items()})
    m.update(published)
    m["time/update_compute_s"] = stats.get("compute_s", 0.0)  # no update (no learner stats): none spent, not NaN
    return m


def no_update_reason(m: dict) -> str | None:
    """Why a step's row has no learner statistics (no batch reached the learner), or None if it has them."""
    if "learner/loss" in m:
        return None
    flat, groups = m.get("adv/zero_variance_groups"), m.get("adv/groups")
    if flat is not None and flat == groups:
        return f"all {groups} groups have equal rewards" if groups != 1 else "its one group has equal rewards"
    return "no rows reached the learner"


def console_line(step: int, total: int, m: dict, score: tuple[str, str] | None = None) -> str:
    """One step in one line. `score`: the (label, metric) shown as the run's score, its text task's
    `console_metric` (rl/tasks); None: the file tasks' answer accuracy, which every text task shows."""
    from rl.tasks.text_files import ANSWER_ACCURACY

    label, key = score or ANSWER_ACCURACY
    restarts = {k.split("/", 1)[1]: m[k] for k in ("restarts/rollout", "restarts/reward", "restarts/learner")
                if m.get(k)}
    no_update = no_update_reason(m)
    if no_update is None:
        learner = (f"  loss {m['learner/loss']:+.4f}  kl {m.get('learner/kl', float('nan')):.4f}"
                   f"  clip {m.get('learner/clip_frac', float('nan')):.2f}")
        update = f" upd {m['time/update_s']:.2f} [old/ref {m.get('learner/old_ref_logprob_s', float('nan')):.2f}]"
    else:
        learner, update = f"  no update: {no_update}", ""
    return (
        f"step {step:>4}/{total}  reward {m['reward/mean']:.3f}  {label} {m.get(key, float('nan')):.2f}"
        f"{learner}  zero-var {m['adv/zero_variance_groups']}"
        f"/{m['adv/groups']}  {m['time/step_s']:.2f}s (gen {m['time/generate_s']:.2f} rew {m['time/reward_s']:.2f}"
        f"{update} pub {m['time/publish_s']:.2f} {m.get('publish/transport', '')} "
        f"{human_bytes(m.get('publish/bytes', 0))})"
        + (f"  restarts {' '.join(f'{k}={v}' for k, v in restarts.items())}" if restarts else "")
    )


def task_metrics(records, rewards, adv) -> dict:
    """Per task kind (text / mmu / t2i): mean reward, rollouts, groups without signal, mean |advantage|.
    Groups never mix tasks, so group normalisation already gives per-task advantages."""
    from rollout.record import task_kind

    out = {}
    kinds = [task_kind(r.task) for r in records]
    for kind in sorted(set(kinds)):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        groups = {records[i].group for i in idx}
        flat = sum(1 for g in groups if len({float(rewards[i]) for i in idx if records[i].group == g}) == 1)
        out[f"reward/task/{kind}/mean"] = mean(float(rewards[i]) for i in idx)
        out[f"task/{kind}/rollouts"] = len(idx)
        out[f"task/{kind}/zero_variance_groups"] = flat
        out[f"task/{kind}/adv_abs_mean"] = mean(abs(float(adv.values[i])) for i in idx)
    return out


def per_task_summary(metrics: list[dict]) -> dict:
    """reward first10 / last10 of each task (over the steps that had that task)."""
    out = {}
    kinds = sorted({k.split("/")[2] for m in metrics for k in m if k.startswith("reward/task/")})
    for kind in kinds:
        values = [m[f"reward/task/{kind}/mean"] for m in metrics if f"reward/task/{kind}/mean" in m]
        k = min(10, len(values))
        out[f"reward_first10/{kind}"] = mean(values[:k])
        out[f"reward_last10/{kind}"] = mean(values[-k:])
    return out


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

    evals = [m for m in metrics if "eval/accuracy" in m]
    metrics = [m for m in metrics if "reward/mean" in m]
    steps = [m["step"] for m in metrics]
    rewards = [m["reward/mean"] for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, rewards, color="#9ab", lw=1, label="train reward per step")
    ax.plot(steps, moving_average(rewards, 10), color="#136", lw=2, label="train reward, moving average (10)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if evals:  # held-out accuracy (temperature 0) on its own axis
        acc = ax.twinx()
        acc.plot([m["step"] for m in evals], [m["eval/accuracy"] for m in evals], "o-", color="#c52", lw=2,
                 label="held-out accuracy (greedy)")
        acc.set_ylim(0, 1)
        acc.set_ylabel("held-out exact-answer accuracy")
        h2, l2 = acc.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
