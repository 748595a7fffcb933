"""Histograms over the rollout index (rl/dashboard/histograms.py): every bar's filter lists exactly the
rows it counted, on run directories written by the run's own writers (tests/dashboard_runs.py)."""

from __future__ import annotations

import numpy as np
import pytest
from dashboard_runs import RANGES, make_run, records

from rl.dashboard.histograms import bin_of, float_edges, histogram, integer_edges
from rl.dashboard.rollouts import QueryError
from rl.dashboard.runs import RunRegistry
from rl.store import RolloutStore
from rollout.record import RolloutRecord


def _index(run):
    r = RunRegistry([run]).get(run.name)
    r.refresh()
    return r.rollouts


def _listed(idx, f: dict, params: dict) -> int:
    """How many rows the rollouts page lists for these filters plus a bar's parameters (as the URL has them)."""
    q = {**f, **{k: (v if k in ("component", "version", "worker", "task") else float(v)) for k, v in params.items()}}
    if "version" in params:
        q["version"] = int(params["version"])
    return idx.rollouts(q, "step", True, 0, 1)["total"]


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    """4 steps whose advantages sit exactly on the bin edges (a value on an edge belongs to the bin
    above it, the largest to the last bin) and rewards with many ties."""
    run = tmp_path_factory.mktemp("h") / "edges"
    make_run(run, steps=3)
    recs = records(4)
    for k, rec in enumerate(recs):
        rec["advantage"] = [-1.0, -0.9, -0.1, 0.0, 0.1, 0.3, 0.9, 1.0][k]
    RolloutStore(run, ranges=RANGES).append(4, [RolloutRecord.from_row(r, strict=True) for r in recs])
    return run


@pytest.mark.parametrize("field, f", [
    ("advantage", {"step_min": 4, "step_max": 4}), ("advantage", {}), ("reward", {}), ("length", {}),
    ("tokens", {}), ("nfe", {}), ("gen_s", {}), ("value", {"component": "math"}),
    ("reward", {"step_min": 2, "step_max": 3, "task": "math"}),
])
def test_every_bin_lists_exactly_its_rows(edge_run, field, f):
    idx = _index(edge_run)
    for bins in (1, 4, 20):
        h = histogram(idx, f, field, bins)
        counts = [b["count"] for b in h["bins"]]
        assert sum(counts) + h["missing"] == h["total"] == idx.rollouts(f, "step", True, 0, 1)["total"]
        for b in h["bins"]:
            assert _listed(idx, f, b["params"]) == b["count"], (field, bins, b)


def test_edges_are_half_open_with_a_closed_last_bin(edge_run):
    idx = _index(edge_run)
    h = histogram(idx, {"step_min": 4, "step_max": 4}, "advantage", 20)
    assert h["bins"][0]["lo"] == -1.0 and h["bins"][-1]["hi"] == 1.0
    assert set(h["bins"][0]["params"]) == {"advantage_min", "advantage_lt"}
    assert set(h["bins"][-1]["params"]) == {"advantage_min", "advantage_max"}  # 1.0 itself is counted
    assert h["bins"][0]["count"] == 1 and h["bins"][1]["count"] == 1    # -1.0 | -0.9 (an edge: the next bin)
    assert h["bins"][-1]["count"] == 2                                  # [0.9, 1.0]: both ends counted
    zero = next(b for b in h["bins"] if b["lo"] == 0.0)  # 0.0 is an edge: it opens a bin
    assert zero["count"] == 1
    # float32 edges: the value stored in the index compares the same on both sides
    e = float_edges(-1.0, 1.0, 20)
    assert np.array_equal(e, e.astype(np.float32).astype(np.float64))
    assert list(bin_of(np.array([-1.0, 0.0, 1.0]), e, False)) == [0, 10, 19]


def test_integer_bins():
    assert list(integer_edges(3, 7, 20)) == [3, 4, 5, 6, 7, 8]         # one value a bin, [lo, lo + 1)
    assert list(integer_edges(0, 99, 10)) == list(range(0, 101, 10))
    e = integer_edges(0, 100, 10)                                       # 101 values: width 11
    assert e[1] - e[0] == 11 and e[-1] > 100
    assert list(bin_of(np.array([0, 10, 11, 100]), e, True)) == [0, 0, 1, 9]


def test_split_by_version_and_worker(edge_run):
    idx = _index(edge_run)
    h = histogram(idx, {}, "reward", 5, by="version")
    assert [s["key"] for s in h["series"]] == ["0", "1", "2", "3"]
    for i, b in enumerate(h["bins"]):
        assert sum(s["counts"][i] for s in h["series"]) == b["count"]
        for s in h["series"]:
            assert _listed(idx, {}, {**b["params"], **s["params"]}) == s["counts"][i]
    w = histogram(idx, {"step_min": 2}, "length", 5, by="worker")
    assert [s["key"] for s in w["series"]] == ["rollout-0", "rollout-1"]
    for i, b in enumerate(w["bins"]):
        for s in w["series"]:
            assert _listed(idx, {"step_min": 2}, {**b["params"], **s["params"]}) == s["counts"][i]


def test_bad_requests_are_messages(edge_run):
    idx = _index(edge_run)
    for args in (("nope",), ("value",), ("reward", 20, "colour")):
        with pytest.raises(QueryError):
            histogram(idx, {}, *args)
    with pytest.raises(QueryError, match="component"):
        histogram(idx, {"component": "clip"}, "value")
    assert histogram(idx, {"step_min": 99}, "reward")["bins"] == []


def test_through_the_app_a_bar_s_query_string_lists_its_rows(edge_run):
    """/api/run/<id>/histogram, then /api/run/<id>/rollouts with the page's filters and a bar's
    parameters as query strings (the link the page builds); the group view's token diff and its text."""
    import asyncio
    from urllib.parse import urlencode

    from aiohttp.test_utils import TestClient, TestServer

    from rl.dashboard.server import build_app

    registry = RunRegistry([edge_run])
    host = {"Host": "127.0.0.1"}

    async def fetch():
        async with TestClient(TestServer(build_app(registry, hosts=frozenset({"127.0.0.1"})))) as client:
            async def get(what, **q):
                resp = await client.get(f"/api/run/edges/{what}?{urlencode(q)}", headers=host)
                assert resp.status == 200, await resp.text()
                return await resp.json()
            for _ in range(50):  # the app's refresher indexes the run
                if (await get("info"))["store"]["rollouts"]:
                    break
                await asyncio.sleep(0.1)
            out = []
            for field, extra in (("value", {"component": "math"}), ("advantage", {}), ("length", {})):
                h = await get("histogram", field=field, bins=7, step_min=2, by="version", **extra)
                for b in h["bins"]:
                    listed = await get("rollouts", step_min=2, limit=1, **b["params"])
                    out.append((listed["total"], b["count"]))
            return out, await get("group", step=4, group=0)

    pairs, group = asyncio.run(fetch())
    assert pairs and all(listed == count for listed, count in pairs)
    r = group["responses"][1]
    assert len(r["token_text"]) == len(r["ids"]) == len(r["differs"]) and r["token_text"][0].startswith("#")
    assert r["flags"] == ["cut"] and r["worker"] == "rollout-1" and r["nfe"] == 8
