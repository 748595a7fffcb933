"""The colocated placement (rl/colocated.py): learner ranks that generate give exactly the disaggregated
mode's records and learning curve, and a rank lost while generating is recovered like any lost rank."""

import dataclasses

import numpy as np
import pytest

from rl import builders
from rl.colocated import ColocatedRolloutGroup
from rl.config import load_config
from rl.data import build_run_dataset
from rl.driver import Driver
from tests.test_rl_e2e import ROOT, comparable, metrics

MULTIMODAL = ROOT / "configs" / "tiny_multimodal.yaml"
FAST_MM = ["model.warm_start=null", "data.prompts_per_step=5", "rollout.group_size=3", "run.plot=false",
           "run.max_wall_s=null", "rewards.num_model_workers=0",
           "rewards.functions=[{name: math, weight: 2.0, tasks: [math], kwargs: {last_number_fallback: true}}]"]


def records_as_dicts(records) -> list[dict]:
    """Every field but the wall-clock timings and who sampled it (`worker`: a rollout worker or a rank)."""
    out = []
    for r in records:
        d = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name not in ("timings", "worker")}
        d["image"] = None if d["image"] is None else np.asarray(d["image"]).tobytes()
        out.append(d)
    return out


def test_records_equal_the_disaggregated_modes(ray_cluster, tmp_path):
    """Same prompts (text, MMU, T2I with CFG), seed, weights and number of shards: the records of 2 colocated
    ranks equal those of 2 rollout workers field by field, before and after an update."""
    from trainer.batch import batch_from_rollouts

    overrides = FAST_MM + ["learner.num_ranks=2", "rollout.num_workers=2", "rollout.image.guidance_scale=1.5",
                           "rollout.text.use_cache=true", "rollout.text.threshold=0.9"]
    cfg = load_config(MULTIMODAL, overrides + [f"run.dir={tmp_path}"])
    colocated_cfg = load_config(MULTIMODAL, overrides + [f"run.dir={tmp_path}", "placement.mode=colocated"])
    policy = builders.build_policy(cfg, tmp_path)
    workers = builders.build_rollout_group(cfg, policy)
    learner = builders.build_learner_group(colocated_cfg, policy)
    ranks = ColocatedRolloutGroup(learner)
    prompts = build_run_dataset(cfg).next_batch(5)
    assert {p.task for p in prompts} >= {"mmu", "t2i"}, "the batch must exercise every sampler"
    one_worker = builders.build_rollout_group(cfg.model_copy(update={"rollout": cfg.rollout.model_copy(
        update={"num_workers": 1, "num_shards": 2})}), policy)
    try:
        a, b = workers.generate(prompts, 3, seed=11), ranks.generate(prompts, 3, seed=11)
        assert len(a) == 15 and records_as_dicts(a) == records_as_dicts(b)
        # rollout.num_shards: one worker running both shards gives the same records again
        assert records_as_dicts(one_worker.generate(prompts, 3, seed=11)) == records_as_dicts(a)
        # one update on the ranks, its weights published to the workers: both sample from version 1
        rewards = np.linspace(-1, 1, len(b))
        learner.update(batch_from_rollouts(b, rewards - rewards.mean()))
        workers.load_weights(learner.policy_version, learner.publish_object_store())
        a2, b2 = workers.generate(prompts, 3, seed=12), ranks.generate(prompts, 3, seed=12)
        assert {r.policy_version for r in b2} == {1}
        assert records_as_dicts(a2) == records_as_dicts(b2)
        assert records_as_dicts(b2) != records_as_dicts(ranks.generate(prompts, 3, seed=11)), "the seed matters"
    finally:
        for group in (workers, one_worker, learner):
            group.shutdown()


@pytest.mark.parametrize("inference_weights", ["keep", "free"])
def test_zero3_ranks_gather_once_per_version(ray_cluster, tmp_path, inference_weights):
    """Under ZeRO-3 each rank samples from the full weights gathered from the partitions: the same records as
    rollout workers with those weights. `keep` gathers once per policy version (a second generation at the
    same version reuses the copy), `free` gathers for every generation; never once per forward."""
    from trainer.batch import batch_from_rollouts

    overrides = ["learner.num_ranks=2", "rollout.num_workers=2", "learner.deepspeed_config=configs/deepspeed/zero3.json",
                 f"run.dir={tmp_path}", "rollout.text.gen_length=8", "rollout.text.steps=8", "rollout.text.block_length=4"]
    cfg = load_config(None, overrides)
    colocated = load_config(None, overrides + ["placement.mode=colocated", f"placement.inference_weights={inference_weights}"])
    policy = builders.build_policy(cfg, tmp_path)
    workers, learner = builders.build_rollout_group(cfg, policy), builders.build_learner_group(colocated, policy)
    ranks = ColocatedRolloutGroup(learner)
    prompts = build_run_dataset(cfg).next_batch(3)
    try:
        b = ranks.generate(prompts, 2, seed=5)
        assert ranks.last_timings["gathers"] == 2  # both ranks, once
        assert records_as_dicts(workers.generate(prompts, 2, seed=5)) == records_as_dicts(b)
        again = ranks.generate(prompts, 2, seed=6)
        assert ranks.last_timings["gathers"] == (0 if inference_weights == "keep" else 2)
        rewards = np.linspace(-1, 1, len(b))
        learner.update(batch_from_rollouts(b, rewards - rewards.mean()))
        workers.load_weights(learner.policy_version, learner.publish_object_store())
        after = ranks.generate(prompts, 2, seed=6)
        assert ranks.last_timings["gathers"] == 2  # a new version: gathered again
        assert records_as_dicts(workers.generate(prompts, 2, seed=6)) == records_as_dicts(after)
        assert records_as_dicts(after) != records_as_dicts(again), "the update changed the samples"
    finally:
        workers.shutdown()
        learner.shutdown()


def train(tmp_path, name, overrides, config=None):
    cfg = load_config(config, ["run.plot=false", "run.max_wall_s=null", f"run.dir={tmp_path}", f"run.name={name}",
                               *overrides])
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        return driver, driver.train()
    finally:
        driver.shutdown()


def without(row: dict, prefixes: tuple[str, ...]) -> dict:
    return {k: v for k, v in comparable(row).items() if not k.startswith(prefixes)}


@pytest.mark.slow  # two demo runs
def test_demo_learns_identically_in_both_modes(ray_cluster, tmp_path):
    """The seeded demo (warm start, held-out evaluation) for 4 steps: 2 colocated ranks against 2 rollout
    workers + 2 learner ranks. Rewards, losses, KL, grad norms and held-out accuracy are equal exactly."""
    demo, common = ROOT / "configs" / "demo.yaml", ["run.steps=4", "eval.every=2", "learner.num_ranks=2"]
    train(tmp_path, "disaggregated", common + ["rollout.num_workers=2"], demo)
    _, summary = train(tmp_path, "colocated", common + ["placement.mode=colocated"], demo)
    a, b = metrics(tmp_path / "disaggregated"), metrics(tmp_path / "colocated")
    assert len(a) == len(b) and any("eval/accuracy" in r for r in b) and any("loss" in str(r) for r in b)
    assert [without(r, ("publish/",)) for r in a] == [without(r, ("publish/",)) for r in b]
    published = [r for r in b if "publish/bytes" in r]
    assert published and all(r["publish/bytes"] == 0 and r["publish/transport"] == "colocated" for r in published)
    assert summary["restarts"]["rollout"] == 0


def test_a_rank_lost_while_generating_restarts_from_the_checkpoint(ray_cluster, tmp_path):
    """Kill a rank while step 2's generation is in flight on it: the driver restarts the learner group from
    the last checkpoint (restarts/learner 1) and the run finishes every step."""
    import ray

    overrides = ["placement.mode=colocated", "learner.num_ranks=2", "run.steps=3", "run.checkpoint_every=1"]
    cfg = load_config(None, ["run.plot=false", "run.max_wall_s=null", f"run.dir={tmp_path}", "run.name=lost",
                             *overrides])
    driver, killed = Driver(cfg, console=False), []
    try:
        driver.setup()
        learner, wait_all = driver.learner, driver.learner._all

        def kill_in_step_2(kind, refs, *args, **kwargs):
            if kind.startswith("generate") and driver.step == 1 and not killed:
                ray.kill(learner.actors[1], no_restart=True)  # its generate call is submitted, not answered
                killed.append(kind)
            return wait_all(kind, refs, *args, **kwargs)

        learner._all = kill_in_step_2
        summary = driver.train()
    finally:
        driver.shutdown()
    assert killed and summary["steps"] == 3 and summary["restarts"]["learner"] == 1
    rows = metrics(tmp_path / "lost")
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]
    assert rows[-1]["restarts/learner"] == 1
