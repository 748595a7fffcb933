"""What one step logs, and what a run leaves in summary.json: assembled in one place, off the loop.

    timer = StepTimer(); with timer.time("generate"): ...
    m = report_step(records, rewards, adv, stats, timer, published, groups, counters)
    summary = run_summary(metrics_rows, ...)

`report_step` adds to rl/metrics.py's per-step statistics (rewards, advantages, learner, publication)
what only the driver knows: actor-side compute per phase, restart counters, wall time and throughput.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from rl.metrics import mean, per_task_summary, step_metrics


class StepTimer:
    """Wall time per phase of one step: `with timer.time("update"): ...`; and when each phase ran
    (`spans`, perf_counter seconds), logged as span/<phase>_start_s and _end_s relative to the step's start:
    the dashboard's timeline. A phase of an asynchronous step may start before the step (the batch it
    trains on generated during the previous update): a negative start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    @contextmanager
    def time(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            t1 = time.perf_counter()
            self.phases[name] = self.phases.get(name, 0.0) + t1 - t0
            self.span(name, t0, t1)

    def span(self, name: str, t0: float, t1: float) -> None:
        """Phase `name` ran from t0 to t1 (perf_counter); a phase met twice spans both."""
        if name in self.spans:
            t0, t1 = min(t0, self.spans[name][0]), max(t1, self.spans[name][1])
        self.spans[name] = (t0, t1)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class BusyMeter:
    """Seconds a reward actor kind spent scoring since the last reading (a restarted actor restarts at 0)."""

    def __init__(self) -> None:
        self.last = 0.0

    def since_last(self, busy_total: float) -> float:
        delta, self.last = max(0.0, busy_total - self.last), busy_total
        return delta


def report_step(records, rewards, adv, stats: dict, timer: StepTimer, published: dict, *, rollout,
                reward_pool, reward_busy: BusyMeter, clip_busy: BusyMeter, counters: dict[str, int],
                has_images: bool, gen_timings: dict | None = None) -> dict:
    """One step's metrics row. `counters`: the driver's own (learner/driver restarts, skipped updates).
    gen_timings: the model compute of this step's batch (default: the rollout group's last generation)."""
    timings = gen_timings if gen_timings is not None else rollout.last_timings
    reward_compute_s = reward_busy.since_last(reward_pool.busy_seconds())
    clip_compute_s = clip_busy.since_last(reward_pool.busy_seconds("model"))
    m = step_metrics(records, rewards, adv, stats, timer.phases, published)
    if has_images:  # where an image step's time goes
        m.update({"time/image_gen_compute_s": timings["image_gen_s"],
                  "time/image_decode_s": timings["decode_s"],
                  "time/clip_compute_s": clip_compute_s})
    m.update({
        "restarts/rollout": rollout.restarts,
        "restarts/reward": reward_pool.restarts,
        "reward/retries": reward_pool.stats().get("retries", 0),
        "restarts/learner": counters["learner"],
        "restarts/driver": counters["driver"],
        "learner/skipped_in_a_row": counters["skipped_in_a_row"],
        "time/step_s": timer.elapsed(),
        "time/gen_compute_s": timings["gen_s"],
        "time/reward_compute_s": reward_compute_s,
    })
    if "gather_s" in timings:  # colocated (rl/colocated.py): inside the ranks' generation
        m.update({"time/inference_gather_s": timings["gather_s"], "time/optimizer_offload_s": timings["offload_s"]})
    # the share of the step each group was not computing (its own compute over the step's wall time)
    step_s = max(m["time/step_s"], 1e-9)
    m.update({"time/idle/rollout": max(0.0, 1 - timings["gen_s"] / step_s),
              "time/idle/learner": max(0.0, 1 - stats.get("compute_s", 0.0) / step_s),
              "time/idle/reward": max(0.0, 1 - reward_compute_s / step_s)})
    m.update(getattr(rollout, "fleet_metrics", dict)())  # an elastic fleet's size, joins and leaves
    m["throughput/rollouts_per_s"] = len(records) / m["time/step_s"]
    m["throughput/tokens_per_s"] = sum(len(r.response_ids) for r in records) / m["time/step_s"]
    for name, (t0, t1) in timer.spans.items():  # the timeline: seconds from the step's start
        m[f"span/{name}_start_s"], m[f"span/{name}_end_s"] = t0 - timer.started, t1 - timer.started
    m["time/unix"] = time.time()
    return m


def late_calls(events: list[dict]) -> dict:
    """faults/* of a step in which some actor answered late (policy/deadlines.py), else nothing: how many
    calls were late or overdue, and the longest wait. Rows without them are the common case."""
    if not events:
        return {}
    return {"faults/late_calls": sum(e["event"] == "late" for e in events),
            "faults/overdue_calls": sum(e["event"] == "overdue" for e in events),
            "faults/max_wait_s": max(e["waited_s"] for e in events),
            "faults/late_actors": ", ".join(sorted({e["who"] for e in events}))}


def run_summary(rows: list[dict], evals: dict, **fields) -> dict:
    """summary.json: first / last 10 steps' mean reward (overall and per task), eval summaries, `fields`."""
    steps = [m for m in rows if "reward/mean" in m]  # step rows (eval rows are apart)
    rewards = [m["reward/mean"] for m in steps]
    k = min(10, len(rewards))
    head = {key: fields.pop(key) for key in ("run_id", "steps", "wall_s", "interrupted")}
    return {**head, "reward_first10": mean(rewards[:k]), "reward_last10": mean(rewards[-k:]),
            **per_task_summary(steps), **evals, **fields}
