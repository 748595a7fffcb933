"""The elastic rollout fleet (rollout.max_workers; rollout/elastic.py, docs/elastic.md).

Config checks run in milliseconds. The fleet itself runs on a simulated cluster (ray.cluster_utils.Cluster,
as tests/test_multinode.py): one rollout worker on n1 in its placement group, room for a second one nowhere;
a node offering the rollout resources joins mid-run (an elastic worker starts there, gets the current weights,
and takes a shard), then that node is removed mid-run (its shard re-runs on n1, the worker is retired). Every
step keeps every group exactly once, all counted in metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from rl.config import ConfigError, load_config
from tests.test_multinode import ROOT, TINY, actor_nodes

ROLLOUT_NODE = {"worker_node": 1}  # what a node offers a rollout worker here (rollout.placement.resources)


def test_max_workers_below_the_fleet_or_colocated_is_refused():
    with pytest.raises(ConfigError, match="rollout.max_workers=1 is below rollout.num_workers=2"):
        load_config(None, TINY + ["rollout.num_workers=2", "rollout.max_workers=1"])
    with pytest.raises(ConfigError, match="rollout.max_workers with placement.mode=colocated"):
        load_config(None, TINY + ["rollout.max_workers=2", "placement.mode=colocated"])
    assert load_config(None, TINY).rollout.max_workers is None  # a fixed fleet by default


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    from policy.placement import patient_node_registration

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    patient_node_registration()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "resources": {"head": 2},
                                                      "include_dashboard": False})
    c.n1 = c.add_node(num_cpus=2, resources={"n1": 1, **ROLLOUT_NODE})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(run_dir: Path, what, deadline_s: float = 400.0) -> dict | None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        hit = next((r for r in _rows(run_dir) if "reward/mean" in r and what(r)), None)
        if hit is not None:
            return hit
        time.sleep(0.2)
    return None


def _train(driver) -> Exception | None:
    try:
        driver.train()
    except Exception as err:  # noqa: BLE001 - reported by the test
        return err
    return None


@pytest.mark.slow
def test_workers_join_when_a_node_appears_and_leave_when_it_goes(cluster, tmp_path):
    """The run trains on a thread; this (main) thread adds and removes the node (Cluster.add_node installs
    signal handlers: main thread only) and asks the run to stop two steps after the leave."""
    from rl.driver import Driver

    overrides = TINY + [
        f"run.dir={tmp_path}", "run.name=elastic", "run.steps=400", "run.checkpoint_every=1000",
        "rollout.num_workers=1", "rollout.max_workers=2",
        "rollout.placement={strategy: PACK, resources: {worker_node: 1}}",
        "rewards.num_workers=1", "rewards.placement={strategy: PACK, resources: {head: 1}}",
        "learner.num_ranks=1", "learner.placement={strategy: PACK, resources: {head: 1}}",
    ]
    driver, run_dir, events = Driver(load_config(None, overrides), console=False), tmp_path / "elastic", {}
    try:
        driver.setup()
        assert actor_nodes(driver.rollout.workers) == ["n1"]
        trainer = threading.Thread(target=lambda: events.setdefault("error", _train(driver)), daemon=True)
        trainer.start()
        try:
            assert _wait_for(run_dir, lambda r: r["step"] >= 1), "no first step"
            node = cluster.add_node(num_cpus=2, resources={"n2": 1, **ROLLOUT_NODE})  # capacity appears
            events["joined_at"] = _wait_for(run_dir, lambda r: r.get("fleet/workers") == 2)
            assert events["joined_at"], "no worker joined"
            cluster.remove_node(node)  # the node goes, mid-run
            events["left_at"] = _wait_for(run_dir, lambda r: r.get("fleet/left", 0) >= 1)
            assert events["left_at"], "the worker never left"
            assert _wait_for(run_dir, lambda r: r["step"] >= events["left_at"]["step"] + 2), "steps stopped"
        finally:
            driver.stop.requested = True  # the loop finishes its step and returns
            trainer.join(timeout=600)
        assert events.get("error") is None, events["error"]
        rows = [r for r in driver.metrics.read() if "reward/mean" in r]
        assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "the run went on through join and leave"
        workers = [r["fleet/workers"] for r in rows]
        joined, left = events["joined_at"]["step"], events["left_at"]["step"]
        assert workers[0] == 1 and workers[joined - 1] == 2 and max(workers) == 2, workers  # grew on the join
        assert rows[-1]["fleet/joined"] == 1 and rows[-1]["fleet/left"] == 1, rows[-1]  # ... and shrank
        assert workers[-1] == 1 and rows[-1]["restarts/rollout"] == 1, workers  # the leave counted as a loss
        for r in rows:  # every group of every step, once; sampled with the learner's current weights
            records = driver.store.read_step(r["step"])
            assert sorted((x["group"], x["group_index"]) for x in records) == [(g, i) for g in range(4)
                                                                               for i in range(4)]
            assert {x["policy_version"] for x in records} == {r["step"] - 1}  # a newcomer had the weights
        # steps on two workers cut the batch in two shards (the slowest shard's compute holds half the prompts);
        # recorded, not asserted: the simulated nodes share this loaded machine's 2 cores
        print({"workers": workers, "joined_step": joined, "left_step": left,
               "gen_compute_s": [round(r["time/gen_compute_s"], 3) for r in rows],
               "step_s": [round(r["time/step_s"], 2) for r in rows]})
    finally:
        driver.shutdown()
