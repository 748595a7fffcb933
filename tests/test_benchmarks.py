"""The benchmarks cannot silently break: each one's `--smoke` mode (the same code path as the full run,
shrunk to seconds) runs in a subprocess and must end with a `RESULT {json}` line that parses as strict
JSON and holds the keys its readers use (docs/benchmarks.md, the docstrings).

The ones whose smoke run starts a Ray cluster or DeepSpeed ranks (SLOW: e2e, elastic, overlap, colocate, gpu_e2e, lora, scale, staleness, ablate, zero3_load: 20-90 s
each on the shared 2-core machine) are marked slow; the six others take 2-20 s each. Measured on
2026-12-03: the whole file 209-266 s (load average 2-5 from other jobs), 49 s with `-m "not slow"`;
2026-12-04 the smoke runs alone took ~7 minutes of a 25-minute full suite (load average ~1).
The smoke runs are marked `bench`: `make bench-smoke` runs them (with the checks below), `make test` the rest,
and CI both. `python benchmarks/_common.py [NAME ...]` runs the smoke modes outside pytest.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "_common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

# benchmark -> keys its RESULT must hold (besides "smoke")
EXPECTED = {
    "ablate": {"steps", "seeds", "best", "variants", "overrides"},
    "colocate": {"speedup_median", "speedup_min", "speedup_max", "runs", "reward_curve", "heldout_accuracy", "planner"},
    "dashboard": {"sizes", "max_request_ms_at_largest", "goal_under_300ms", "goal_rss_under_1gb",
                  "cost_ratio_largest_over_100k", "first_chart_ms", "goal_first_chart", "index_s_at_largest",
                  "goal_index_under_30s_or_cached"},
    "overlap": {"runs", "speedup_full", "speedup_lora", "time_scale", "colocated_planner_step_s"},
    "elastic": {"segments", "throughput_ratio_2_workers", "throughput_ratio_3_workers", "steps_continuous", "fleet"},
    "e2e": {f"{k}_{c}" for k in ("overhead", "step_ms", "rollouts_per_s") for c in ("tiny", "small", "t2i", "mixed")}
    | {f"{k}_ms_{c}" for k in ("image_sampling", "decode", "clip_scoring", "update", "reward_transfer")
       for c in ("t2i", "mixed")},
    "gpu_e2e": {"complete", "steps", "plan", "peak_gpu_gib", "device", "wall_s", "write_s", "load_s"},
    "gpu_8b": {"device", "params_b", "logits_at_max_abs_diff", "plain_tokens_per_s", "cache_tokens_per_s",
               "cache_speedup", "update_tokens_per_s", "update_mfu", "peak_mem_gb"},
    "lora": {"heldout_accuracy", "step_time_ratio_lora_over_full", "publish_bytes_ratio_lora_over_full", "mmada_8b",
             "lora_lr", "runs"},
    "learner": {"tokens_per_s", "mfu", "model_tflops_per_s", "peak_matmul_tflops", "update_s", "params_m"},
    "math_reward": {"accuracy", "precision", "recall", "math_verify_accuracy", "cases_per_s",
                    "math_verify_cases_per_s", "speedup", "per_source", "per_style"},
    "sampler": {"speedup", "agreement", "point", "rule", "accuracy_plain", "spread", "plain_s", "points",
                "total_s"},
    "scale": {"workers", "efficiency_at_n", "efficiency_real_at_n", "rollouts_per_s", "driver_overhead_s",
              "publish_model", "publish", "modes"},
    "staleness": {"steps", "seeds", "ks", "by_k", "goal_heldout_gap"},
    "t2i_probe": {"settings", "runs", "ratio_min", "ratio_max", "seconds"},
    "token_traces": {"bytes_per_traced_rollout", "bytes_per_pair", "growth_one_group", "growth_all_groups",
                     "store_1m_gib", "traces_1m_gib", "add_ms"},
    "zero3_load": {"model_mb", "full", "sliced", "ratio_load_peak_rss_mb", "ratio_read_fraction"},
}
# what must hold even at smoke sizes
CHECKS = {
    # the first chart is timed by the page itself (a performance mark), on the demo-sized run too
    "dashboard": lambda r: 0 < r["first_chart_ms"]["demo"] and 0 < r["first_chart_ms"]["largest"]
    and r["sizes"]["demo"]["overview_first_chart"]["n"] >= 5
    and r["sizes"]["demo"]["overview_first_chart"]["median_ms"] <= r["sizes"]["demo"]["overview_all_charts"]["median_ms"],
    "learner": lambda r: r["tokens_per_s"] > 0 and r["mfu"] > 0,
    # the size bound docs/dashboard.md states: < 20 bytes per (token, iteration), < 5% growth at one group a step
    "token_traces": lambda r: r["bytes_per_pair"] < 20 and r["growth_one_group"] < 0.05,
    "zero3_load": lambda r: r["full"]["equal"] and r["sliced"]["equal"] and r["ratio_read_fraction"] < 1,
    "sampler": lambda r: r["points"]["early_stop"]["agreement"] == 1.0,  # exact by construction
    "math_reward": lambda r: r["cases"] > 0 and r["labelled"] > 0,
    # nothing is published when colocated; both modes ran every step
    "gpu_e2e": lambda r: r["complete"] and len(r["steps"]) == 3 and all(s["publish"] == 0 for s in r["steps"]),
    # K = 1 trains on records one version behind from the second step on, none dropped
    "staleness": lambda r: r["by_k"]["1"]["runs"]["0"]["lags"].get("lag_1", 0) > 0
    and r["by_k"]["1"]["runs"]["0"]["dropped"] == 0 and not r["by_k"]["0"]["runs"]["0"]["lags"],
    # adapters only on the wire: fewer bytes than the full weights, measured and at MMaDA-8B shapes
    "lora": lambda r: 0 < r["publish_bytes"]["lora"] < r["publish_bytes"]["full"]
    and r["mmada_8b"]["r16_all_projections_bytes"] < r["mmada_8b"]["full_bytes"],
    # a node joined mid-run: the fleet grew, generation got faster (sleeps stand in for compute), no step lost
    # the four shapes ran the real loop; asynchronous ones overlapped (their ideal is below the synchronous one's)
    "overlap": lambda r: set(r["runs"]) == {"sync_full", "async_full", "sync_lora", "async_lora"}
    and all(r[f"speedup_{k}"]["ideal"] > 1 for k in ("full", "lora")),
    "elastic": lambda r: r["fleet"]["joined"] == 1 and r["segments"][1]["workers"] == [2] and r["steps_continuous"]
    and r["throughput_ratio_2_workers"] > 1.2,
    "colocate": lambda r: r["runs"]["colocated"][0]["publish_bytes"] == 0 and r["runs"]["disaggregated"][0]["publish_bytes"] > 0
    and len(r["reward_curve"]["colocated"]) == len(r["reward_curve"]["disaggregated"]) == r["steps"],
}
SLOW = {"ablate", "colocate", "e2e", "elastic", "overlap", "gpu_e2e", "lora", "scale", "staleness", "zero3_load"}  # a Ray cluster or DeepSpeed ranks per smoke run
SMOKE_TIMEOUT_S = 900  # a loaded 2-core machine; the slowest smoke run takes ~90 s on a quiet one


def test_every_benchmark_is_covered():
    """A new benchmark gets a row here (and so a smoke test); `make bench` runs every one."""
    assert set(common.benchmark_names()) == set(EXPECTED)
    makefile = (ROOT / "Makefile").read_text()
    assert [n for n in EXPECTED if f"benchmarks/{n}.py" not in makefile] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_is_product_code(name):
    """The docstring says how to run the smoke mode; no sys.path tricks (the project is installed)."""
    source = (ROOT / "benchmarks" / f"{name}.py").read_text()
    doc = ast.get_docstring(ast.parse(source)) or ""
    assert "--smoke" in doc and "RESULT" in doc
    assert "add_smoke_flag(" in source and "print_result(" in source
    assert "sys.path.insert" not in source


def test_parse_result_is_strict():
    assert common.parse_result('noise\nRESULT {"a": 1}\n') == {"a": 1}
    for bad in ("no result here", 'RESULT {"a": NaN}', "RESULT {not json"):
        with pytest.raises(ValueError):
            common.parse_result(bad)


@pytest.mark.bench  # `make bench-smoke` (CI runs it after `make test`, which leaves these out)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(EXPECTED)])
def test_smoke_run(name):
    result, seconds = common.run_smoke(name, timeout=SMOKE_TIMEOUT_S)
    print(f"benchmarks/{name}.py --smoke: {seconds:.1f} s")
    assert result["smoke"] is True
    assert EXPECTED[name] <= result.keys(), f"missing {sorted(EXPECTED[name] - result.keys())}"
    assert CHECKS.get(name, lambda r: True)(result), result
