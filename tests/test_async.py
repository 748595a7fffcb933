"""Asynchronous rollouts (rl/pipeline.py, trainer/behaviour.py, docs/async.md): the importance weights of
stale rows use the policy that sampled them, exactly; the staleness bound; the loop one batch ahead."""

import numpy as np
import pytest
import ray
import torch

from policy.loading import load_policy
from policy.tiny import build_tiny_policy
from policy.weight_sync import load_state_into
from rl.config import ConfigError, load_config
from rl.pipeline import split_stale
from trainer.batch import TrainBatch
from trainer.learner_group import LearnerConfig, LearnerGroup, UniGRPOConfig
from trainer.unigrpo import masked_token_logprobs, masks_for_update, scored_positions, text_support


def batch(layout, versions, seed=0, n=6, prompt=8, response=12) -> TrainBatch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 90, size=(n, prompt + response))
    resp = np.zeros(ids.shape, bool)
    resp[:, prompt:] = True
    return TrainBatch(ids, resp, rng.normal(size=n).astype(np.float32), versions=np.asarray(versions, dtype=np.int64))


def first_iteration(model_new, model_old, b: TrainBatch, ucfg: UniGRPOConfig, update_index: int, layout) -> dict:
    """Brute force, with both versions held as separate models, on the learner's first inner iteration's masks
    (mu = 1, so pi_theta = pi_new when the loss is evaluated): w = pi_new / pi_old per masked token, its ESS
    share (sum w)^2 / (n sum w^2), and the policy loss of each off-policy objective (docs/async.md):
        behaviour:  -sum_t c_t min(w_t A, clip(w_t, 1 - eps, 1 + eps) A)        (the clip centred on pi_old)
        decoupled:  -sum_t c_t min(w_t, cap) A                                  (r = pi_theta / pi_new = 1)
    with c_t = 1 / (k_i N) ("sequence" normalisation)."""
    positions = scored_positions(b.input_ids, b.response_mask, layout.eos_id, ucfg.response_positions)
    _, masked = masks_for_update(positions, ucfg, update_index)
    x, m = torch.from_numpy(b.input_ids), torch.from_numpy(masked[0])
    img = torch.zeros(len(x), dtype=torch.bool)
    support = text_support(ucfg, layout.text_vocab_size, layout.mask_id)  # what the learner normalises over
    with torch.no_grad():
        new = masked_token_logprobs(model_new, x, m, img, layout.mask_id, layout.image_slice,
                                    text_support=support)[0].double()
        old = masked_token_logprobs(model_old, x, m, img, layout.mask_id, layout.image_slice,
                                    text_support=support)[0].double()
    w = torch.exp(new - old)
    row = torch.nonzero(m)[:, 0]
    adv = torch.from_numpy(b.advantages).double()[row]
    c = 1.0 / (m.sum(1).double()[row] * len(x))
    behaviour = -(c * torch.minimum(w * adv, w.clamp(1 - ucfg.eps_low, 1 + ucfg.eps_high) * adv)).sum()
    decoupled = -(c * w.clamp(max=ucfg.behaviour_weight_cap) * adv).sum()
    return {"ess": float(w.sum() ** 2 / (len(w) * (w * w).sum())), "behaviour": float(behaviour),
            "decoupled": float(decoupled), "capped": float((w > ucfg.behaviour_weight_cap).double().mean())}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("off_policy", ["decoupled", "behaviour"])
def test_stale_rows_are_weighted_by_the_policy_that_sampled_them(ray_cluster, tmp_path, off_policy):
    """After one update (version 0 -> 1), rows sampled by version 0 are corrected with pi_0, not the learner's
    pi_1: the learner's first-iteration importance weights and policy loss equal a brute-force reference
    holding both versions (to 1e-6), for both off-policy objectives; the same rows marked fresh (version 1)
    have every weight 1."""
    policy = build_tiny_policy(tmp_path / "policy", seed=0, d_model=32, n_heads=4)
    layout = load_policy(policy).layout
    # a cap the weights reach, so that the truncation is exercised too
    ucfg = UniGRPOConfig(mu=1, beta=0.0, seed=3, off_policy=off_policy, behaviour_weight_cap=1.05)
    group = LearnerGroup.create(1, str(policy), LearnerConfig(lr=5e-2, micro_batch_tokens=64, keep_versions=1), ucfg)
    try:
        group.update(batch(layout, [0] * 6, seed=1))  # version 0 -> 1; the rank keeps version 0's weights
        v0, v1 = load_policy(policy).model, load_policy(policy).model
        load_state_into(v1, ray.get(group.publish_object_store()))
        stale = batch(layout, [0] * 6, seed=2)
        expected = first_iteration(v1, v0, stale, ucfg, update_index=1, layout=layout)
        assert expected["ess"] < 0.999, "the update must have moved the policy for this test to mean anything"
        assert 0 < expected["capped"] < 1, expected
        assert abs(expected["behaviour"] - expected["decoupled"]) > 1e-4, "the objectives must differ here"
        stats = group.update(stale)  # update index 1, learner at version 1
        assert abs(stats["ess_fraction"] - expected["ess"]) <= 1e-6, (stats, expected)
        assert abs(stats["policy_loss"] - expected[off_policy]) <= 1e-6, (stats["policy_loss"], expected)
        assert stats["behaviour_capped_frac"] == (pytest.approx(expected["capped"]) if off_policy == "decoupled" else 0)
        fresh = group.update(batch(layout, [2] * 6, seed=3))  # learner at version 2
        assert fresh["ess_fraction"] == pytest.approx(1.0, abs=1e-12) and fresh["behaviour_capped_frac"] == 0
        mixed = batch(layout, [1, 2, 1, 2, 1, 2], seed=4)  # learner at 3: rows of 1 are two behind
        with pytest.raises(ray.exceptions.RayTaskError, match="no copy of policy version 1"):
            group.update(mixed)  # only K = 1 version is kept: the driver must have dropped them
    finally:
        group.shutdown()


def test_split_stale_keeps_what_the_bound_allows():
    class R:
        def __init__(self, v):
            self.policy_version = v

    records = [R(5), R(4), R(3), R(5)]
    keep, counts = split_stale(records, learner_version=5, max_staleness=1)
    assert keep == [0, 1, 3] and counts == {"async/lag_0": 2, "async/lag_1": 1, "async/lag_2": 1, "async/dropped": 1}
    assert split_stale(records, 5, 0)[0] == [0, 1, 2, 3]  # synchronous: nothing is dropped


def test_config_refuses_staleness_where_it_cannot_work(tmp_path):
    with pytest.raises(ConfigError, match="max_staleness=1 with placement.mode=colocated"):
        load_config(None, ["rollout.max_staleness=1", "placement.mode=colocated"])
    from rl.preflight import check_deepspeed_config

    cfg = load_config(None, ["rollout.max_staleness=1", "learner.deepspeed_config=configs/deepspeed/zero3.json"])
    with pytest.raises(ConfigError, match="ZeRO-3"):
        check_deepspeed_config(cfg)


def test_one_batch_ahead_in_the_real_loop(ray_cluster, tmp_path):
    """configs/tiny.yaml for 4 steps with max_staleness 1: step 1's batch is fresh, every later one was
    sampled one version behind the learner and is trained on with its own behaviour policy (ESS < 1);
    nothing is dropped; the run checkpoints and finishes."""
    from rl.driver import Driver
    from tests.test_rl_e2e import metrics

    length = "rewards.functions=[{name: length, path: 'tests.plugins.e2e_rewards:length_bonus'}]"  # varies: updates
    cfg = load_config(None, ["rollout.max_staleness=1", "run.steps=4", length, "run.plot=false", "run.max_wall_s=null",
                             f"run.dir={tmp_path}", "run.name=async", "run.checkpoint_every=2"])
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        summary = driver.train()
    finally:
        driver.shutdown()
    rows = [r for r in metrics(tmp_path / "async") if "reward/mean" in r]
    assert summary["steps"] == 4 and [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["async/lag_0"] == rows[0]["rollouts"] and rows[0]["learner/ess_fraction"] == pytest.approx(1.0)
    assert any(r.get("learner/grad_norm", 0.0) > 0 for r in rows[:-1]), "no update moved the weights: a vacuous run"
    for prev, r in zip(rows, rows[1:]):
        assert r["async/lag_1"] == r["rollouts"] and r["async/dropped"] == 0
        # the previous update moved the weights (a non-zero advantage) -> behaviour != current: ESS < 1
        moved = prev.get("learner/grad_norm", 0.0) > 0
        assert (r["learner/ess_fraction"] < 1.0) == moved, (prev.get("learner/grad_norm"), r["learner/ess_fraction"])
    assert all(0.0 <= r["time/idle/rollout"] <= 1.0 for r in rows)
    # the timeline (span/*, seconds from the step's start): step 1 generates its own batch; every later step
    # trains on a batch whose generation began during the previous step, and updates within its own wall time
    assert 0 <= rows[0]["span/generate_start_s"] < rows[0]["span/generate_end_s"] <= rows[0]["span/update_start_s"]
    for r in rows[1:]:
        assert r["span/generate_start_s"] < 0 <= r["span/update_start_s"] < r["span/update_end_s"] <= r["time/step_s"]
        assert r["span/reward_end_s"] >= r["span/reward_start_s"] >= r["span/generate_start_s"]
    assert (tmp_path / "async" / "checkpoints" / "step_4").is_dir()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("transport", ["object_store", "broadcast"])
def test_a_rollout_worker_lost_while_the_learner_updates_rejoins_without_losing_a_step(ray_cluster, tmp_path,
                                                                                       transport):
    """K = 1 with one rollout worker, killed (Ray restarts it) at the start of step 3's update, while step 4's
    batch generates on it: the worker comes back with the weights the batch is sampled with (object store:
    the payload still held) or, when no payload of that version is left (broadcast), the learner's newest
    (gathered after the update, tagged with its version); the run goes on: every step completes once,
    nothing restarts from a checkpoint, and each step trains on records at most one version old."""
    from rl.driver import Driver
    from tests.test_rl_e2e import metrics

    length = "rewards.functions=[{name: length, path: 'tests.plugins.e2e_rewards:length_bonus'}]"
    cfg = load_config(None, ["rollout.max_staleness=1", "run.steps=6", length, "run.plot=false", "run.max_wall_s=null",
                             f"run.dir={tmp_path}", "run.name=async-kill", "run.checkpoint_every=100",
                             f"run.weight_transport={transport}"])
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        real_update, killed = driver.learner.update, []

        def update(batch):
            if driver.step + 1 == 3 and not killed:  # this step's update; step 4's batch is generating
                killed.append(driver.rollout.workers[0])
                ray.kill(driver.rollout.workers[0], no_restart=False)
            return real_update(batch)

        driver.learner.update = update
        summary = driver.train()
    finally:
        driver.shutdown()
    rows = [r for r in metrics(tmp_path / "async-kill") if "reward/mean" in r]
    assert killed and summary["steps"] == 6 and [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["restarts/rollout"] == 1 and rows[-1]["restarts/learner"] == 0 and rows[-1]["restarts/driver"] == 0
    for r in rows:
        assert r["async/dropped"] == 0 and r.get("async/lag_0", 0) + r.get("async/lag_1", 0) == r["rollouts"], r
    # step 4's batch came from the restarted worker: the version it was given decides the lag
    lag = "async/lag_1" if transport == "object_store" else "async/lag_0"
    assert rows[3].get(lag) == rows[3]["rollouts"], rows[3]
