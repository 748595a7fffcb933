"""Token traces of the learner's update: selection, the rank-side collector, the Parquet partition, its size,
truncation on resume, and the dashboard's readers through the real app (rl/token_traces.py,
trainer/token_trace.py, rl/dashboard/token_traces.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pytest
import torch

from rl.dashboard.token_traces import TraceSummaries, rollout
from rl.store import RolloutStore
from rl.token_traces import TRACES_DIR, read_traces, trace_table, traced_rows
from rollout.record import RolloutRecord
from trainer.token_trace import TokenTrace, merge_ranks
from trainer.unigrpo import UniGRPOConfig, masks_for_update


def _rec(group: int, gi: int, n: int = 4, early_from: int | None = None) -> RolloutRecord:
    conf = [0.5, 0.25, 0.9, 1.0][:n] + np.random.default_rng(n).random(max(0, n - 4)).tolist()
    early = [early_from is not None and i >= early_from for i in range(n)]
    return RolloutRecord(prompt_id=f"p{group}", group_index=gi, group=group, task="math", policy_version=3,
                         prompt_ids=[1, 2], prompt_mask=[1, 1], response_ids=list(range(5, 5 + n)),
                         confidence=conf, early_filled=early, unmask_step=list(range(n)))


def test_traced_rows_picks_first_groups():
    groups = np.array([4, 4, 2, 2, 7, 7])
    assert traced_rows(groups, 1).tolist() == [False, False, True, True, False, False]  # the lowest group id
    assert traced_rows(groups, 2).tolist() == [True, True, True, True, False, False]
    assert not traced_rows(groups, 0).any()
    assert traced_rows(groups, -1).all() and traced_rows(groups, 99).all()


def _one_update(traced, with_ref=True, eps=0.2):
    """A fake micro-batch of 3 rows x 6 columns (2 prompt columns) over two iterations."""
    rng = torch.Generator().manual_seed(0)
    masked = torch.zeros(2, 3, 6, dtype=torch.bool)
    masked[0, :, 2:4] = True
    masked[1, :, 3:6] = True
    tr = TokenTrace(np.asarray(traced), eps, eps)
    expected = []
    for n in range(2):
        m = masked[n]
        k = int(m.sum())
        logp = -torch.rand(k, generator=rng) * 3
        old = logp + (torch.rand(k, generator=rng) - 0.5)  # ratios around exp(+-0.5): some clipped
        ref = old - 0.1 if with_ref else None
        adv = torch.tensor([1.0, -1.0, 0.5])[torch.nonzero(m)[:, 0]]
        tr.add(n, np.arange(3), m, logp, old, ref, adv, torch.rand(k, generator=rng))
        expected.append((m, logp, old, adv))
    return tr.result(), expected


def test_token_trace_keeps_traced_rows_and_the_loss_terms():
    out, expected = _one_update([True, False, True])
    assert set(out["row"].tolist()) == {0, 2}
    assert len(out["row"]) == 2 * 2 + 2 * 3  # rows 0 and 2: 2 masked columns in iteration 1, 3 in iteration 2
    np.testing.assert_allclose(out["ratio"], np.exp(out["logp"] - out["logp_old"]), rtol=1e-6)
    up = (out["ratio"] > 1.2) & (out["advantage"] > 0)
    down = (out["ratio"] < 0.8) & (out["advantage"] < 0)
    assert (out["clipped"] == np.where(up, 1, np.where(down, -1, 0))).all()
    d = (out["logp_old"] - 0.1) - out["logp"]
    np.testing.assert_allclose(out["kl"], np.exp(d) - d - 1, rtol=1e-5, atol=1e-6)
    assert np.isnan(out["logp_version"]).all()
    assert TokenTrace(np.zeros(3, bool), 0.2, 0.2).result() is None  # nothing traced: nothing kept


def test_token_trace_without_reference_has_no_kl():
    out, _ = _one_update([True, True, True], with_ref=False)
    assert np.isnan(out["kl"]).all()


def test_merge_ranks_makes_rows_global_with_positions_and_ratios():
    response = np.zeros((4, 6), bool)
    response[:, 2:] = True
    response[3, 5] = False  # row 3: a shorter scored response
    ratios = np.array([[0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9]])
    rank1 = {"row": np.array([0, 1]), "col": np.array([2, 4]), "iteration": np.array([1, 0]),
             "logp": np.array([-1.0, -2.0], np.float32)}
    out = merge_ranks([None, rank1], [0, 2], ratios, response)
    assert out["row"].tolist() == [2, 3]
    assert out["position"].tolist() == [0, 2]
    assert out["response_len"].tolist() == [4, 3]
    np.testing.assert_allclose(out["mask_ratio"], [0.8, 0.4])


def _trace_for(records, mu=2, gen=4, lag=None):
    """A trace as LearnerGroup.update returns it, for records laid out like batch_from_rollouts. lag: the rows
    are stale, their sampling version's log-prob this far (per token, random sign) from pi_old's."""
    response = np.zeros((len(records), 2 + gen), bool)
    response[:, 2:] = True
    ratios, masked = masks_for_update(response, UniGRPOConfig(mu=mu, seed=1), 0)
    tr = TokenTrace(np.ones(len(records), bool), 0.2, 0.2)
    rng = np.random.default_rng(0)
    for n in range(mu):
        m = torch.from_numpy(masked[n])
        k = int(m.sum())
        logp = torch.from_numpy(-rng.random(k).astype(np.float32) * 2)
        version = None if lag is None else logp + 0.05 + torch.from_numpy(rng.choice([-lag, lag], k).astype(np.float32))
        tr.add(n, np.arange(len(records)), m, logp, logp + 0.05, None, torch.ones(k), torch.ones(k), version)
    return merge_ranks([tr.result()], [0], ratios, response)


def test_trace_table_adds_the_sampler_log_prob(tmp_path):
    records = [_rec(3, 0), _rec(3, 1, early_from=3)]
    table = trace_table(5, records, _trace_for(records))
    assert table.schema.field("position").type == pa.int16() and table.schema.field("kl").type == pa.float16()
    rows = table.to_pylist()
    assert [(r["group"], r["gi"], r["position"], r["iteration"]) for r in rows] == sorted(
        (r["group"], r["gi"], r["position"], r["iteration"]) for r in rows)
    conf = [0.5, 0.25, 0.9, 1.0]
    for r in rows:
        assert r["step"] == 5 and r["version"] == 3 and r["kl"] is None
        if r["gi"] == 1 and r["position"] == 3:
            assert r["logp_sampler"] is None  # early-stop EOS fill: never sampled
        else:
            assert r["logp_sampler"] == pytest.approx(np.log(conf[r["position"]]), rel=1e-6)


def test_store_writes_traces_and_resume_drops_later_ones(tmp_path):
    store = RolloutStore(tmp_path)
    records = [_rec(0, 0), _rec(0, 1)]
    for step in (1, 2, 3):
        store.append(step, records, trace_table(step, records, _trace_for(records)))
    assert read_traces(tmp_path / TRACES_DIR, 2).num_rows > 0
    store.truncate_after(1)
    assert sorted(p.name for p in (tmp_path / TRACES_DIR).iterdir()) == ["step=1"]
    assert store.read_all().num_rows == 2  # the rollout dataset does not pick up the trace files


def test_bytes_per_traced_rollout_are_bounded(tmp_path):
    """gen_length 256, mu = 2, stratified masks (~256 masked tokens per rollout over both iterations), random
    log-probs and confidences (incompressible mantissas): the partition, footer included, stays under 20
    bytes per (token, iteration), 5 KB per traced rollout."""
    g, gen = 10, 256
    records = [_rec(0, i, n=gen) for i in range(g)]
    response = np.zeros((g, 2 + gen), bool)
    response[:, 2:] = True
    ratios, masked = masks_for_update(response, UniGRPOConfig(mu=2, seed=0), 0)
    tr = TokenTrace(np.ones(g, bool), 0.2, 0.2)
    rng = np.random.default_rng(0)
    for n in range(2):
        m = torch.from_numpy(masked[n])
        k = int(m.sum())
        logp = torch.from_numpy(np.log(rng.random(k)).astype(np.float32))
        tr.add(n, np.arange(g), m, logp, logp + torch.from_numpy(rng.normal(0, 0.05, k).astype(np.float32)),
               logp - 0.01, torch.full((k,), 0.7), torch.from_numpy(rng.random(k).astype(np.float32) * 5))
    trace = merge_ranks([tr.result()], [0], ratios, response)
    path = RolloutStore(tmp_path).traces_root
    from rl.token_traces import write_traces

    out = write_traces(path, 1, trace_table(1, records, trace))
    pairs = len(trace["row"])
    assert 200 * g < pairs < 320 * g
    assert out.stat().st_size / pairs < 20 and out.stat().st_size / g < 5000


def test_dashboard_reads_one_rollout_and_the_mismatch(tmp_path):
    store = RolloutStore(tmp_path)
    records = [_rec(0, 0), _rec(0, 1), _rec(1, 0), _rec(1, 1)]
    trace = _trace_for(records)
    store.append(1, records, trace_table(1, records, trace))
    one = rollout(tmp_path, 1, 1, 1)
    assert one["traced"] and one["response_len"] == 4 and one["iterations"] == 2
    assert one["position"] == sorted(one["position"])
    np.testing.assert_allclose(one["ratio"], np.exp(np.array(one["logp"]) - np.array(one["logp_old"])), rtol=1e-5)
    missing = rollout(tmp_path, 1, 5, 0)
    assert not missing["traced"] and missing["traced_rollouts"] == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert not rollout(tmp_path, 9, 0, 0)["traced"]

    summaries = TraceSummaries()
    body = summaries.mismatch(tmp_path)
    (s,) = body["steps"]
    t = read_traces(tmp_path / TRACES_DIR, 1)
    sampler = np.array([np.nan if v is None else v for v in t["logp_sampler"].to_pylist()])
    gap = np.abs(t["logp_old"].to_numpy() - sampler)
    gap = gap[np.isfinite(gap)]
    assert s["pairs"] == len(gap) and s["mismatch_mean"] == pytest.approx(gap.mean(), rel=1e-5)
    assert s["mismatch_max"] == pytest.approx(gap.max(), rel=1e-5)
    assert s["mismatch_p90"] <= s["mismatch_p99"] <= s["mismatch_max"]
    version = np.array([np.nan if v is None else v for v in t["logp_version"].to_pylist()])
    lag = np.abs(t["logp_old"].to_numpy() - version)
    lag = lag[np.isfinite(lag)]
    assert s["lag_pairs"] == len(lag) and (s["lag_mean"] == pytest.approx(lag.mean(), rel=1e-5) if len(lag)
                                           else s["lag_mean"] is None)
    assert body["entropy_by_position"]["position"] == sorted(set(t["position"].to_pylist()))
    store.append(2, records, trace_table(2, records, trace))
    assert [x["step"] for x in summaries.mismatch(tmp_path)["steps"]] == [1, 2]
    store.truncate_after(1)
    assert [x["step"] for x in summaries.mismatch(tmp_path)["steps"]] == [1]
    assert s["lag_pairs"] == 0 and s["lag_mean"] is None  # fresh rows: no policy lag


def test_policy_lag_of_stale_rows_is_summarised(tmp_path):
    """Stale rows carry the sampling version's log-prob: the lag chart's |log pi_old - log pi_v| per pair."""
    store = RolloutStore(tmp_path)
    records = [_rec(0, 0), _rec(0, 1)]
    store.append(1, records, trace_table(1, records, _trace_for(records, lag=0.3)))
    (s,) = TraceSummaries().mismatch(tmp_path)["steps"]
    assert s["lag_pairs"] == s["pairs"] > 0
    assert s["lag_mean"] == pytest.approx(0.3, abs=1e-3) and s["lag_max"] == pytest.approx(0.3, abs=1e-3)


def test_traces_and_mismatch_served_by_the_app(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from rl.dashboard.runs import RunRegistry
    from rl.dashboard.server import build_app

    run = tmp_path / "run1"
    store = RolloutStore(run)
    records = [_rec(0, 0), _rec(0, 1)]
    store.append(1, records, trace_table(1, records, _trace_for(records)))
    (run / "metrics.jsonl").write_text("")
    registry = RunRegistry([run])
    (run_id,) = registry.runs

    async def fetch():
        async with TestClient(TestServer(build_app(registry, hosts=frozenset({"127.0.0.1"})))) as client:
            out = []
            for url in (f"/api/run/{run_id}/traces?step=1&group=0&gi=1", f"/api/run/{run_id}/mismatch",
                        f"/api/run/{run_id}/traces?step=1", "/static/tokens.js"):
                resp = await client.get(url, headers={"Host": "127.0.0.1"})
                out.append((resp.status, await resp.read()))
            return out

    (traces, mismatch, bad, js) = asyncio.run(fetch())
    assert traces[0] == 200 and b'"traced": true' in traces[1]
    assert mismatch[0] == 200 and b'"mismatch_mean"' in mismatch[1]
    assert bad[0] == 400  # no group: a message, not a 500
    assert js[0] == 200


@pytest.mark.slow
def test_tiny_run_traces_are_the_loss_terms(ray_cluster, tmp_path):
    """Two learner ranks, every group traced, beta > 0: each stored (token, iteration) is consistent with the
    loss: ratio = exp(logp - logp_old), the clip flag follows eps and the advantage's sign, kl is k3, exactly
    k = max(1, round(p |o_i|)) tokens per (rollout, iteration), none outside |o_i|, the sampler's log-prob is
    the stored confidence's, and at the first iteration (no optimizer step yet) pi_theta = pi_old."""
    from rl.config import load_config
    from rl.driver import Driver

    cfg = load_config(None, ["rollout.text.gen_length=8", "rollout.text.steps=4", "rollout.text.block_length=8",
                             "data.prompts_per_step=4", "rollout.group_size=4", "run.plot=false", "run.steps=2",
                             "learner.num_ranks=2", "run.trace_groups=-1", "unigrpo.beta=0.1",
                             f"run.dir={tmp_path}", "run.name=tr"])
    driver = Driver(cfg, console=False)
    try:
        driver.setup()
        driver.train()
    finally:
        driver.shutdown()
    eps_low, eps_high = cfg.unigrpo.eps_low, cfg.unigrpo.eps_high
    for step in (1, 2):
        t = read_traces(tmp_path / "tr" / TRACES_DIR, step).to_pylist()
        stored = {(r["group"], r["group_index"]): r for r in driver.store.read_step(step)}
        kept = {(r["group"], r["gi"]) for r in t}
        assert kept == set(stored)  # every rollout traced (no group dropped by default), rows of both ranks
        for r in t:
            assert r["ratio"] == pytest.approx(np.exp(r["logp"] - r["logp_old"]), rel=1e-5)
            want = 1 if r["ratio"] > 1 + eps_high and r["advantage"] > 0 else (
                -1 if r["ratio"] < 1 - eps_low and r["advantage"] < 0 else 0)
            assert r["clipped"] == want
            assert 0 <= r["position"] < r["response_len"] <= 8
            if r["iteration"] == 0:
                assert r["ratio"] == pytest.approx(1.0, abs=1e-4)
            conf = stored[(r["group"], r["gi"])]["confidence"][r["position"]]
            assert r["logp_sampler"] == pytest.approx(np.log(conf), rel=1e-5)
            assert r["kl"] is not None and r["kl"] >= 0 and r["entropy"] >= 0
            assert r["advantage"] == pytest.approx(stored[(r["group"], r["gi"])]["advantage"], abs=2e-3)
        by_rollout_iteration: dict = {}
        for r in t:
            by_rollout_iteration.setdefault((r["group"], r["gi"], r["iteration"]), []).append(r)
        for key, rows in by_rollout_iteration.items():
            x = float(rows[0]["mask_ratio"]) * rows[0]["response_len"]  # p |o_i|; p stored as float16
            if abs(x - np.floor(x) - 0.5) > 0.01:  # away from a rounding tie that float16 could flip
                assert len(rows) == max(1, int(np.floor(x + 0.5))), key
