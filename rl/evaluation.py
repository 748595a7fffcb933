"""Held-out evaluation in the loop: the rollout workers sample, the reward actors score, between RL steps.

    evaluator = Evaluator(cfg.eval, prompts, rollout_group, reward_pool, store)
    m = evaluator.run(step, seed)      # at step 0, every `eval.every` steps and at the last step

Per evaluation, on the first `eval.num_prompts` prompts of the eval set (always the same ones):
    greedy    one response per prompt with the eval sampler (default: temperature 0, the plain exact
              sampler: no cache, no threshold)                 -> eval/accuracy, eval/reward_mean
    pass@k    when eval.k > 1: k responses per prompt at eval.pass_temperature with the same sampler
              -> eval/pass@k = mean over prompts of [any of the k is correct]   (n = k, the unbiased
              estimator 1 - C(n - c, k) / C(n, k) reduces to this)
A response is correct when every reward named in eval.correct_rewards scored > 0 on it (default: math).
The workers hold the current policy (no second model copy); records are stored like rollouts under
evals/step=N/ so the dashboard can show them.
"""

from __future__ import annotations

import numpy as np

from rl.scoring import score_records

EVAL_SEED_OFFSET = 7_777_777  # eval draws never coincide with a training step's seeds


class Evaluator:
    def __init__(self, section, prompts: list, rollout, reward_pool, store, scorer) -> None:
        self.cfg = section
        self.prompts = prompts[: section.num_prompts] if section.num_prompts else prompts
        self.rollout, self.reward_pool, self.store = rollout, reward_pool, store
        self.score = scorer  # records -> rewards, filling reward and reward_components (the driver's)

    def due(self, step: int, last_step: int) -> bool:
        return step == 0 or step == last_step or step % self.cfg.every == 0

    def _correct(self, records) -> np.ndarray:
        names = self.cfg.correct_rewards
        return np.array([all(r.reward_components.get(n, {}).get("value", 0.0) > 0 for n in names) for r in records])

    def run(self, step: int, seed: int) -> dict:
        c = self.cfg
        greedy_sampler = c.sampler_overrides()
        records = self.rollout.generate(self.prompts, 1, seed=seed + EVAL_SEED_OFFSET, text_sampler=greedy_sampler)
        rewards = self.score(records)
        correct = self._correct(records)
        for r in records:
            r.step = step
        m = {"eval/accuracy": float(correct.mean()), "eval/reward_mean": float(rewards.mean()),
             "eval/prompts": len(records)}
        stored = list(records)
        if c.k > 1:
            sampler = greedy_sampler | {"temperature": c.pass_temperature}
            samples = self.rollout.generate(self.prompts, c.k, seed=seed + EVAL_SEED_OFFSET + 1, text_sampler=sampler)
            self.score(samples)
            hits = self._correct(samples).reshape(len(self.prompts), c.k)
            for r in samples:
                r.step = step
            m[f"eval/pass@{c.k}"] = float(hits.any(1).mean())
            m["eval/sample_accuracy"] = float(hits.mean())
            stored += samples
        self.store.append(step, stored)
        return m


def eval_summary(metrics: list[dict]) -> dict:
    """first / best / last of every eval/* metric over the evaluations of a run."""
    rows = [m for m in metrics if "eval/accuracy" in m]
    if not rows:
        return {}
    out = {}
    for key in sorted({k for m in rows for k in m if k.startswith("eval/") and k != "eval/prompts"}):
        values = [(m["step"], m[key]) for m in rows if key in m]
        best = max(values, key=lambda sv: sv[1])
        out[key] = {"first": values[0][1], "best": best[1], "best_step": best[0], "last": values[-1][1],
                    "first_step": values[0][0], "last_step": values[-1][0]}
    return {"eval": out}


def build_eval_prompts(cfg) -> list:
    """The eval set of a run config: eval.files (read like the text task's own files, same fields), else
    the text task's held-out split (rl/tasks `Task.heldout`; [] when it has none)."""
    from rl.tasks import get_task

    name, source = cfg.data.task_source("text")
    task = get_task(name)
    return task.eval_prompts(cfg.eval.files, source) if cfg.eval.files else task.heldout(source)


class _NoStore:
    def append(self, step, records):  # `unigrpo eval` without --out keeps nothing
        return None


def evaluate_policy(cfg, prompts: list, out_dir=None) -> dict:
    """One evaluation of cfg.model.path on `prompts` with freshly started rollout workers and reward actors."""
    import tempfile
    from pathlib import Path

    from rl.store import RolloutStore

    c = cfg
    from rl.builders import build_reward_pool, build_rollout_group, start_ray, token_ranges

    start_ray(c, learner=False)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(out_dir) if out_dir else Path(tmp)
        run_dir.mkdir(parents=True, exist_ok=True)
        rollout = build_rollout_group(c, Path(c.model.path))
        pool = build_reward_pool(c, run_dir)
        try:
            store = RolloutStore(run_dir, "evals", token_ranges(c.model.path)) if out_dir else _NoStore()
            evaluator = Evaluator(c.eval, prompts, rollout, pool, store, lambda recs: score_records(pool, recs))
            return {"policy": str(c.model.path), **evaluator.run(0, c.run.seed)}
        finally:
            pool.shutdown()
            rollout.shutdown()


def eval_line(step: int, m: dict) -> str:
    extra = "".join(f"  {k[5:]} {v:.3f}" for k, v in m.items() if k.startswith("eval/pass@"))
    return (f"eval step {step}: held-out accuracy {m['eval/accuracy']:.3f} on {m['eval/prompts']} prompts"
            f"{extra}  ({m.get('time/eval_s', 0.0):.1f} s)")
