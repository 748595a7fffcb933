"""RewardPool on real Ray actors: weighted totals, task filters, statuses, cache, timeouts inside an
actor, and recovery when a reward actor dies."""

import os
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray

from rewards.api import RewardInput, RewardSpec
from rewards.pool import RewardPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = textwrap.dedent('''
    import time
    def boom(inp):
        raise ValueError("bad plugin")
    def sleepy(inp):
        time.sleep(60)
        return 1.0
''')


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("plug")
    (d / "pool_plug.py").write_text(PLUGIN)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    path = os.pathsep.join([ROOT, str(d), os.environ.get("PYTHONPATH", "")])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield d
    ray.shutdown()


@pytest.mark.timeout(300)
def test_pool_scores_weights_tasks_statuses_and_cache(ray_cluster):
    specs = [RewardSpec("math", weight=2.0, tasks=["math"]),
             RewardSpec("format", weight=0.5),
             RewardSpec("boom", path="pool_plug:boom", tasks=["math"]),
             RewardSpec("sleepy", path="pool_plug:sleepy", timeout_s=1.0, tasks=["math"])]
    pool = RewardPool(specs, num_workers=1)
    try:
        batch = [RewardInput("math", "q", "<think>r</think> \\boxed{12}", "12"),
                 RewardInput("math", "q", "\\boxed{9^{9^{9}}}", "1"),
                 RewardInput("chat", "q", "<think>r</think> hi", None)]
        out = pool.score(batch)
        a, b, c = out
        assert a.components["math"].value == 1.0 and a.components["format"].value == 1.0
        assert a.components["boom"].status == "error" and a.components["sleepy"].status == "timeout"
        assert a.total == pytest.approx(2.0 * 1 + 0.5 * 1)  # non-ok components contribute nothing
        assert b.components["math"].status == "unparsable" and b.total == 0.0
        assert set(c.components) == {"format"} and c.total == pytest.approx(0.5)
        st = pool.stats()
        assert st["counts"]["math"]["ok"] == 1 and st["counts"]["math"]["unparsable"] == 1
        assert st["counts"]["sleepy"]["timeout"] == 2 and st["counts"]["boom"]["error"] == 2
        again = pool.score(batch[:1])
        assert again[0].components["math"].value == 1.0
        assert pool.stats()["cache_hits"]["math"] == 1
    finally:
        pool.shutdown()


@pytest.mark.timeout(300)
def test_dead_rule_actor_is_restarted_and_work_retried(ray_cluster, tmp_path):
    """The actor is killed (by PID) while it is scoring: deterministic, the call is in flight. The pool
    waits for the restarted actor, resubmits the chunk, and counts each sample once."""
    marker = tmp_path / "started"
    slow = RewardSpec("slow", path="tests.plugins.faulty_rewards:slow_ok", timeout_s=30,
                      kwargs={"marker": str(marker), "seconds": 2.0})
    pool = RewardPool([RewardSpec("math"), slow], num_workers=1)
    try:
        pid = ray.get(pool.rule_actors[0].pid.remote())
        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(pool.score, [RewardInput("math", "", "\\boxed{3}", "3"),
                                         RewardInput("math", "", "\\boxed{4}", "5")])
            deadline = time.time() + 60
            while not marker.exists() and time.time() < deadline:
                time.sleep(0.05)
            assert marker.exists()
            os.kill(pid, 9)
            out = fut.result(timeout=240)
        assert [s.components["math"].status for s in out] == ["ok", "ok"]
        assert [s.components["slow"].status for s in out] == ["ok", "ok"]
        assert [s.total for s in out] == [2.0 * 1.0 + 1.0, 1.0]  # math's default weight is the paper's 2.0
        st = pool.stats()
        assert st["retries"] == 1
        assert sum(st["counts"]["math"].values()) == 2  # nothing counted twice
        assert ray.get(pool.rule_actors[0].pid.remote()) != pid
    finally:
        pool.shutdown()
