"""Multi-node runs on a simulated cluster: ray.cluster_utils.Cluster starts one raylet per "node" on
this machine, each named by a custom resource (docs/scaling.md, "Testing multi-node on one machine"):

    head   CPU 3, GPU 1 (fake), learner_slot        the driver; learner rank 0
    n1     CPU 3, GPU 1 (fake), learner_slot,       learner rank 1, a rollout worker, a reward actor
           worker_node 2
    n2     CPU 3, worker_node 2                     a rollout worker, a reward actor
    n3     CPU 3, worker_node 2                     joins in the node-loss test: where the lost bundles go

Checked: each group's placement strategy from the config decides where its actors run (PACK / SPREAD /
STRICT_SPREAD), and a group the cluster cannot hold fails fast naming what it asked for; the learner's
gloo rendezvous and the weight broadcast group between ranks and workers on different nodes;
configs/multinode.yaml for two real steps; removing a node that holds a rollout worker and a reward
actor in the middle of a run.

What one machine cannot simulate: every raylet has the address 127.0.0.1, so "cross-node" traffic
(the gloo rendezvous at rank 0's node address, the broadcast, object-store transfers between raylets)
goes over loopback, never a real NIC; and the fake GPUs only steer scheduling (no CUDA, so gloo).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from policy.placement import patient_node_registration
from rl.config import load_config
from rl.driver import Driver

ROOT = Path(__file__).resolve().parent.parent
NODES = ("head", "n1", "n2", "n3")

TINY = ["model.path=null", "model.tiny={d_model: 32, n_layers: 1, n_heads: 2, codebook_size: 16, seed: 0}",
        "model.dtype=float32", "data.task=toy_copy", "data.files=[]", "data.think=false",
        "data.prompts_per_step=4", "rollout.group_size=4", "rollout.num_gpus_per_worker=0",
        "rollout.text={gen_length: 8, steps: 4, block_length: 8}", "learner.num_gpus_per_rank=0",
        "learner.bf16=false", "learner.gradient_checkpointing=false", "unigrpo.mu=1", "run.plot=false",
        "advantages.drop_zero_variance_groups=false"]  # a random tiny policy: keep every group, so it updates
ON_WORKER_NODES = "{strategy: STRICT_SPREAD, resources: {worker_node: 1}}"


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # raylets and their workers inherit this: the worktree's packages win over an installed copy
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    patient_node_registration()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 3, "num_gpus": 1, "resources": {"head": 1, "learner_slot": 1}, "include_dashboard": False})
    c.nodes_by_name = {"head": c.head_node}
    c.nodes_by_name["n1"] = c.add_node(num_cpus=3, num_gpus=1, resources={"n1": 1, "learner_slot": 1, "worker_node": 2})
    c.nodes_by_name["n2"] = c.add_node(num_cpus=3, resources={"n2": 1, "worker_node": 2})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def node_names() -> dict[str, str]:
    """Ray node id -> our name for the node (its naming resource), live nodes only."""
    import ray

    return {n["NodeID"]: next(k for k in NODES if k in n["Resources"]) for n in ray.nodes() if n["Alive"]}


def bundle_nodes(pg) -> list[str]:
    """Where each bundle of a placement group was reserved, by node name, in bundle order."""
    from ray.util.placement_group import placement_group_table

    names, table = node_names(), placement_group_table(pg)["bundles_to_node_id"]
    return [names.get(table[i], "?") for i in sorted(table)]


def actor_nodes(actors, wait_s: float = 120.0) -> list[str]:
    """Where each actor runs, asked of the actor itself (one that is restarting is asked again)."""
    import ray

    names, out = node_names(), []
    for a in actors:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                node = ray.get(a.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()),
                               timeout=wait_s)
                break
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        out.append(names.get(node, "?"))
    return out


def test_each_strategy_places_where_it_says_and_impossible_groups_fail_fast(cluster):
    from policy.placement import PlacementError, bundles, release, reserve

    # the strategies as every group uses them (policy/placement.py), on plain CPU bundles
    cfg = load_config(ROOT / "configs" / "multinode.yaml", TINY)
    assert cfg.learner.placement.strategy == "PACK"  # the learner's default: as few nodes as possible
    for strategy, n, check in [("PACK", 2, lambda at: len(set(at)) == 1),
                               ("SPREAD", 3, lambda at: sorted(at) == ["head", "n1", "n2"]),
                               ("STRICT_SPREAD", 2, lambda at: len(set(at)) == 2)]:
        pg = reserve("learner", bundles(n, 1), strategy, timeout_s=30)
        try:
            assert check(bundle_nodes(pg)), (strategy, bundle_nodes(pg))
        finally:
            release(pg)
    pg = reserve("learner", bundles(2, 1, 1), "PACK", timeout_s=30)  # one fake GPU per node: two nodes
    try:
        assert sorted(bundle_nodes(pg)) == ["head", "n1"]
    finally:
        release(pg)
    # more than the cluster could ever hold: an error at once, with what was asked and what there is
    t0 = time.monotonic()
    with pytest.raises(PlacementError) as err:
        reserve("learner", bundles(3, 1, 1), "PACK", timeout_s=60)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "learner" in msg and "3 x {'CPU': 1, 'GPU': 1}" in msg and "'GPU': 2.0" in msg and "node 2" in msg
    with pytest.raises(PlacementError, match=r"rollout: cannot reserve 3 x .*STRICT_SPREAD.*could never"):
        reserve("rollout", bundles(3, 1, 0, {"worker_node": 1}), "STRICT_SPREAD", timeout_s=60)


@pytest.mark.slow
def test_multinode_yaml_places_groups_and_trains_across_nodes(cluster, tmp_path):
    """configs/multinode.yaml (ZeRO-3, its rewards and UniGRPO settings) shrunk to the tiny policy: learner
    ranks on two nodes (a cross-node gloo rendezvous), workers and reward actors on the worker nodes,
    weights over the broadcast group from rank 0 (head) to workers on n1 and n2."""
    import ray
    from safetensors.numpy import load_file

    overrides = TINY + [
        f"ray.address={cluster.address}", f"run.dir={tmp_path}", "run.name=mn", "run.steps=2",
        "run.checkpoint_every=2", "run.weight_transport=broadcast", "rollout.num_workers=2",
        f"rollout.placement={ON_WORKER_NODES}", "rewards.num_workers=2", f"rewards.placement={ON_WORKER_NODES}",
        "learner.num_ranks=2", "learner.placement={strategy: STRICT_SPREAD, resources: {learner_slot: 1}}",
        # the yaml's rewards, plus one a random policy's responses vary in (non-zero advantages: real updates)
        "rewards.functions=[{name: math, weight: 2.0}, {name: format, weight: 0.5},"
        " {name: length, path: 'tests.plugins.e2e_rewards:length_bonus'}]",
    ]
    cfg = load_config(ROOT / "configs" / "multinode.yaml", overrides)
    assert cfg.learner.deepspeed_config.endswith("zero3.json") and cfg.unigrpo.beta > 0  # the yaml's own
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        assert actor_nodes(driver.learner.actors) == ["head", "n1"]
        assert sorted(actor_nodes(driver.rollout.workers)) == ["n1", "n2"]
        assert sorted(actor_nodes(driver.reward_pool.rule_actors)) == ["n1", "n2"]
        driver.train()
        rows = [r for r in driver.metrics.read() if "reward/mean" in r]
        assert [r["step"] for r in rows] == [1, 2] and all(r["rollouts"] == 16 for r in rows)
        assert [r["publish/transport"] for r in rows] == ["broadcast", "broadcast"]
        assert rows[-1]["publish/receivers"] == 2 and rows[-1]["publish/bytes"] > 0
        assert {r["policy_version"] for r in driver.store.read_step(2)} == {1}
        # the workers on n1 and n2 hold exactly the weights rank 0 exported after the second update
        exported = load_file(tmp_path / "mn" / "checkpoints" / "step_2" / "policy" / "model.safetensors")
        for worker in driver.rollout.workers:
            held = ray.get(worker.__ray_call__.remote(
                lambda self: (self._version, {k: v.numpy().copy() for k, v in self.model.state_dict().items()})))
            assert held[0] == 2 and held[1].keys() == exported.keys()
            assert all((held[1][k] == exported[k]).all() for k in exported)
        initial = load_file(tmp_path / "mn" / "policy_init" / "model.safetensors")
        assert any((initial[k] != exported[k]).any() for k in exported)  # two updates did change them
    finally:
        driver.shutdown()


def _remove_during_step_2(cluster, run_dir: Path, victim: str, done: list) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.1)
    cluster.remove_node(cluster.nodes_by_name.pop(victim))
    done.append(time.monotonic())


@pytest.mark.slow
def test_node_loss_keeps_the_run_going(cluster, tmp_path, capsys):
    """Remove the node holding a rollout worker and a reward actor right after step 1: the run goes on,
    every group of every step is there exactly once, the restarts are counted in metrics.jsonl."""
    overrides = TINY + [
        f"run.dir={tmp_path}", "run.name=loss", "run.steps=4", "run.checkpoint_every=100",
        "rollout.num_workers=2", f"rollout.placement={ON_WORKER_NODES}", "rewards.num_workers=2",
        "rewards.placement={strategy: SPREAD, resources: {worker_node: 1}}", "learner.num_ranks=1",
        "learner.placement={strategy: PACK, resources: {head: 1}}",
    ]
    driver = Driver(load_config(None, overrides), console=True)
    try:
        driver.setup()
        assert actor_nodes(driver.learner.actors) == ["head"]
        workers_at = actor_nodes(driver.rollout.workers)
        rewards_at = actor_nodes(driver.reward_pool.rule_actors)
        assert sorted(workers_at) == ["n1", "n2"] and sorted(rewards_at) == ["n1", "n2"]
        victim = workers_at[0]
        cluster.nodes_by_name["n3"] = cluster.add_node(num_cpus=3, resources={"n3": 1, "worker_node": 2})
        removed: list = []
        remover = threading.Thread(target=_remove_during_step_2, args=(cluster, tmp_path / "loss", victim, removed))
        remover.start()
        driver.train()
        remover.join()
        assert removed, "the node was never removed"
        rows = [r for r in driver.metrics.read() if "reward/mean" in r]
        assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["rollouts"] == 16 for r in rows)
        for step in (1, 2, 3, 4):  # every group regenerated: none lost, none counted twice
            records = driver.store.read_step(step)
            assert sorted((r["group"], r["group_index"]) for r in records) == [(g, i) for g in range(4)
                                                                             for i in range(4)]
            assert {r["policy_version"] for r in records} == {step - 1}
            assert all(c["status"] not in ("error", "timeout")
                       for r in records for c in json.loads(r["reward_components"]).values())
        # one worker and one reward actor lost, each counted once (step 1 was before the loss; a reward
        # actor's restart shows when it answers again, which may be a step or two later on a loaded machine:
        # with 3 steps the full suite once ended at (1, 0))
        restarts = [(r["restarts/rollout"], r["restarts/reward"]) for r in rows]
        assert restarts[0] == (0, 0) and restarts[-1] == (1, 1), restarts
        # the lost actors run again, on the node that replaced the lost one
        assert victim not in actor_nodes(driver.rollout.workers) + actor_nodes(driver.reward_pool.rule_actors)
        assert "n3" in actor_nodes(driver.rollout.workers)
        assert "restarts rollout=" in capsys.readouterr().out
    finally:
        driver.shutdown()
