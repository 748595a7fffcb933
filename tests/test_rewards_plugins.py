"""Plugins (by path and by entry point), containment of raising/hanging rewards, off-main-thread timeouts."""

import sys
import textwrap
import threading
import time

import pytest

from rewards.api import RewardInput, RewardSpec
from rewards.engine import LocalScorer
from rewards.registry import entry_point_names
from rewards.sandbox import Call, SandboxPool

PLUGIN = textwrap.dedent('''
    import os, time
    from rewards.api import RewardResult

    def length_bonus(inp, scale=1.0):
        return scale * min(len(inp.response), 10) / 10

    def boom(inp):
        raise RuntimeError("plugin bug")

    def sleepy(inp, seconds=60):
        time.sleep(seconds)
        return 1.0

    def quits(inp):
        os._exit(3)

    def detailed(inp):
        return RewardResult(0.5, "ok", "half")

    class Batched:
        def __init__(self, bonus=0.0):
            self.bonus = bonus
        def __call__(self, batch):
            return [len(x.prompt) + self.bonus for x in batch]
''')


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "uni_plug.py").write_text(PLUGIN)
    dist = tmp_path / "uni_plug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uni-plug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[unigrpo.rewards]\nep_length = uni_plug:length_bonus\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in [m for m in sys.modules if m.startswith("uni_plug")]:
        del sys.modules[m]
    return tmp_path


def _inp(resp="hello world", task="math"):
    return RewardInput(task, "prompt", resp, "1")


def test_plugin_by_path_and_entry_point(plugin_dir):
    assert "ep_length" in entry_point_names()
    specs = [RewardSpec("byfn", kwargs={"scale": 2.0}, path="uni_plug:length_bonus"),
             RewardSpec("bycls", path="uni_plug:Batched", kwargs={"bonus": 1.0}),
             RewardSpec("ep_length", weight=3.0),
             RewardSpec("detailed", path="uni_plug:detailed")]
    scorer = LocalScorer(specs)
    try:
        (s,) = scorer.score([_inp("hello")])
    finally:
        scorer.close()
    assert s.components["byfn"].value == pytest.approx(1.0)
    assert s.components["bycls"].value == pytest.approx(7.0)
    assert s.components["ep_length"].value == pytest.approx(0.5)
    assert s.components["detailed"].detail == "half"
    assert s.total == pytest.approx(1.0 + 7.0 + 1.5 + 0.5)


def test_raising_sleeping_and_exiting_plugins_are_contained(plugin_dir):
    pool = SandboxPool(num_procs=2)
    try:
        calls = [Call(RewardSpec("boom", path="uni_plug:boom").to_dict(), _inp(), 5),
                 Call(RewardSpec("sleepy", path="uni_plug:sleepy").to_dict(), _inp(), 1.0),
                 Call(RewardSpec("quits", path="uni_plug:quits").to_dict(), _inp(), 5),
                 Call(RewardSpec("missing", path="uni_plug:nope").to_dict(), _inp(), 5),
                 Call(RewardSpec("math").to_dict(), _inp("\\boxed{1}"), 5)]
        pool.warm_up()  # worker start-up is not part of any deadline; time the calls only
        t0 = time.monotonic()
        res = pool.run(calls)
        assert time.monotonic() - t0 < 8
        assert [r.status for r in res] == ["error", "timeout", "error", "error", "ok"]
        assert "plugin bug" in res[0].detail and res[4].value == 1.0
        assert pool.restarts >= 2  # the sleeper was killed, the exiting worker replaced
        assert pool.run([Call(RewardSpec("math").to_dict(), _inp("\\boxed{1}"), 5)])[0].value == 1.0
    finally:
        pool.close()


def test_timeout_enforced_from_non_main_thread(plugin_dir):
    pool = SandboxPool(num_procs=1)
    pool.warm_up()  # start-up (importing sympy) is outside deadlines; a loaded machine takes seconds for it
    out = {}

    def work():
        t0 = time.monotonic()
        out["res"] = pool.run([Call(RewardSpec("sleepy", path="uni_plug:sleepy").to_dict(), _inp(), 0.5),
                               Call(RewardSpec("math").to_dict(), _inp("\\boxed{1}"), 5)])
        out["dt"] = time.monotonic() - t0

    try:
        t = threading.Thread(target=work)
        t.start()
        t.join(60)
        assert not t.is_alive()
    finally:
        pool.close()
    assert [r.status for r in out["res"]] == ["timeout", "ok"]
    assert out["dt"] < 10


def test_hostile_math_is_cut_by_deadline_not_hang():
    """Even if a check were expensive, the deadline holds: a tiny timeout forces the kill path."""
    pool = SandboxPool(num_procs=1)
    try:
        pool.warm_up()  # start-up is outside the deadline (tests/test_faults_rewards.py); time the call
        t0 = time.monotonic()
        r = pool.run([Call(RewardSpec("math").to_dict(),
                           _inp("\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(300)) + "}"), 0.05)])[0]
        assert r.status in ("timeout", "unparsable", "ok") and r.value == 0.0
        assert time.monotonic() - t0 < 5
    finally:
        pool.close()
