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
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "resources": {"head": 1},
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


def _join_then_leave(cluster, run_dir: Path, events: dict) -> None:
    """After step 1: a node with room joins; once a step ran with two workers, that node goes."""
    if _wait_for(run_dir, lambda r: r["step"] >= 1) is None:
        return
    events["node"] = cluster.add_node(num_cpus=2, resources={"n2": 1, **ROLLOUT_NODE})
    events["joined_after_step"] = max(r["step"] for r in _rows(run_dir))
    if _wait_for(run_dir, lambda r: r.get("fleet/workers") == 2) is None:
        return
    events["removed_after_step"] = max(r["step"] for r in _rows(run_dir))
    cluster.remove_node(events["node"])


@pytest.mark.slow
def test_workers_join_when_a_node_appears_and_leave_when_it_goes(cluster, tmp_path):
    from rl.driver import Driver

    overrides = TINY + [
        f"run.dir={tmp_path}", "run.name=elastic", "run.steps=8", "run.checkpoint_every=100",
        "rollout.num_workers=1", "rollout.max_workers=2",
        "rollout.placement={strategy: PACK, resources: {worker_node: 1}}",
        "rewards.num_workers=1", "rewards.placement={strategy: PACK, resources: {head: 1}}",
        "learner.num_ranks=1", "learner.placement={strategy: PACK, resources: {head: 1}}",
    ]
    driver = Driver(load_config(None, overrides), console=False)
    events: dict = {}
    try:
        driver.setup()
        assert actor_nodes(driver.rollout.workers) == ["n1"]
        mover = threading.Thread(target=_join_then_leave, args=(cluster, tmp_path / "elastic", events))
        mover.start()
        driver.train()
        mover.join()
        rows = [r for r in driver.metrics.read() if "reward/mean" in r]
        assert [r["step"] for r in rows] == list(range(1, 9)), "the run went on through the join and the leave"
        workers = [r["fleet/workers"] for r in rows]
        assert workers[0] == 1 and 2 in workers, workers  # the fleet grew when the node joined ...
        assert "removed_after_step" in events, f"no step ran with two workers before the run ended: {workers}"
        assert rows[-1]["fleet/joined"] >= 1 and rows[-1]["fleet/left"] >= 1, rows[-1]  # ... and shrank
        assert workers[-1] == 1 and rows[-1]["restarts/rollout"] >= 1, workers  # the leave counted as a loss
        for r in rows:  # every group of every step, once; sampled with the learner's current weights
            records = driver.store.read_step(r["step"])
            assert sorted((x["group"], x["group_index"]) for x in records) == [(g, i) for g in range(4)
                                                                               for i in range(4)]
            assert {x["policy_version"] for x in records} == {r["step"] - 1}  # a newcomer had the weights
        # the step that ran on two workers cut the batch in two shards: the slowest shard's compute holds half
        # the prompts (recorded, not asserted: timings on this loaded machine are noise)
        print({"workers": workers, "gen_compute_s": [round(r["time/gen_compute_s"], 3) for r in rows],
               "step_s": [round(r["time/step_s"], 2) for r in rows], "events": {k: v for k, v in events.items()
                                                                                if k != "node"}})
    finally:
        driver.shutdown()
