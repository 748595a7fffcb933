"""Dashboard at scale: a synthetic rollout store of 1,000,000 rollouts over 2,000 steps.

Each rollout has the columns a real one has (rl/store.py), with generation length 256 and realistic
trajectory columns (unmask_step, confidence, early_filled per position), written by the same pyarrow
Parquet writer settings as the run (zstd, one partition per step). With `unigrpo dashboard` running
(the real CLI, a separate process) it measures, at 100k and at 1M stored rollouts:

  overview   the first chart painted in real Chromium after navigation, timed by the page itself (its
             `unigrpo:first-chart` performance mark, milliseconds from navigation start) in a browser
             already open (one warm-up load), every chart drawn (`unigrpo:all-charts`), the same first
             chart seen from Playwright, and the metrics API request behind it
  rollouts   a filtered, sorted page (step window + reward range + status, sorted by reward)
  search     a text search (newest partitions first, time-budgeted)
  group      one prompt's G responses
  replay     one response's trajectory
  RSS        the server's resident memory after indexing the whole store
  index      seconds from server start until the whole store is indexed, from the Parquet files (an
             empty index cache) and again after a restart (from the cache, rl/dashboard/index_cache.py,
             for stores of 50,000 rollouts or more)

and the same on a demo-sized run (configs/demo.yaml: 150 steps of 16 prompts x G = 8, 4 tokens).
Baseline, in the same process: the same filtered page answered the obvious way, a pyarrow.dataset
scan over every partition with the filter pushed down (no index). Goals: every request < 300 ms at
1M, RSS < 1 GB, request cost independent of the number of stored steps (1M / 100k ~ 1), the first
chart within 300 ms on the demo run and 1 s at 1M, and the 1M index in < 30 s or read from the cache.

    .venv/bin/python benchmarks/dashboard.py                  # builds the store once under --dir, reuses it
    .venv/bin/python benchmarks/dashboard.py --steps 200      # a quick run (100k only)
    .venv/bin/python benchmarks/dashboard.py --smoke          # stores of 1,000 and 2,000 rollouts, an 8-step demo

Ends with `RESULT {json}`. It needs Chromium at /usr/bin/chromium (Debian's package: `apt-get install chromium`). `--smoke` builds
its small stores in a temporary folder (never under --dir, whose full store it would replace).

How long, on the shared 2-core machine (2026-12-04, load average 7-9): `--smoke` 39 s (figures
meaningless). The full run: writing the store under --dir the first time took 1 min (2,000 partitions at
~35 a second, load average 1); then 1 min 20 s to 1 min 30 s a run (each store indexed twice, 20
requests of each kind, 11 page loads, the scan baseline). The index cache goes to --dir/index-cache and
is emptied before each store's first server start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from _common import add_smoke_flag, print_result
from tqdm import tqdm

from rl.dashboard.index_cache import CACHE_ENV

GEN = 256
SMOKE_STEPS, SMOKE_SMALL, SMOKE_REPEATS, SMOKE_DEMO_STEPS = 4, 2, 4, 8  # stores of 1,000 and 2,000 rollouts, in a temporary folder
PER_STEP = 500           # 50 prompts x G = 10
G = 10


@dataclass(frozen=True)
class Size:
    """The shape of a synthetic run: rollouts a step, group size, generation length."""
    per_step: int = PER_STEP
    g: int = G
    gen: int = GEN


DEMO = Size(per_step=128, g=8, gen=4)  # configs/demo.yaml: 16 prompts x G = 8 a step, 4 tokens, 150 steps
DEMO_STEPS = 150
FIRST_CHART_GOAL_MS = {"demo": 300, "largest": 1000}  # issue #21
INDEX_GOAL_S = 30
WORDS = ("the answer is step so we get then add multiply total each number of apples left "
         "therefore boxed first second compute half twice minus plus equals").split()


def _corpus(rng) -> str:
    return " ".join(rng.choice(WORDS, size=400_000))


def build_step(step: int, rng, corpus: str, n: int = PER_STEP, g_size: int = G, gen: int = GEN) -> pa.Table:
    groups = np.repeat(np.arange(n // g_size), g_size)
    offs = rng.integers(0, len(corpus) - 1200, size=n)
    texts = [corpus[o : o + rng.integers(200, 1100)] + f" \\boxed{{{rng.integers(0, 100)}}}" for o in offs]
    # unmask order: a random permutation of 0..GEN-1 forward indices per rollout (steps = gen length)
    unmask = np.argsort(rng.random((n, gen)), axis=1).astype(np.int64)
    conf = rng.random((n, gen))
    resp = rng.integers(0, 126_000, size=(n, gen))
    early = np.zeros((n, gen), dtype=bool)
    early[:, gen * 25 // 32 :] = rng.random((n, 1)) < 0.3
    prompt_len = 64
    status = np.where(rng.random(n) < 0.02, "timeout", np.where(rng.random(n) < 0.05, "unparsable", "ok"))
    correct = (rng.random(n) < min(0.9, 0.1 + step / 2500)) & (status == "ok")
    reward = correct * 2.0 + rng.random(n) * 0.5
    comps = [json.dumps({"math": {"value": float(c), "status": s, "detail": "boxed: integer" if s == "ok" else "no answer"},
                         "format": {"value": 1.0, "status": "ok", "detail": "matches"}}) for c, s in zip(correct, status)]

    def lists(a, typ):
        return pa.ListArray.from_arrays(pa.array(np.arange(0, a.size + 1, a.shape[1], dtype=np.int32)),
                                        pa.array(a.ravel(), typ))

    sampler = json.dumps({"kind": "text", "gen_length": gen, "steps": gen, "block_length": min(32, gen), "temperature": 1.0,
                          "remasking": "low_confidence"})
    return pa.table({
        "prompt_id": pa.array([f"gsm8k-{(step * 50 + g) % 7473}" for g in groups]),
        "group_index": pa.array(np.tile(np.arange(g_size), n // g_size).astype(np.int64)),
        "task": pa.array(["math"] * n),
        "policy_version": pa.array(np.full(n, step - 1, dtype=np.int64)),
        "prompt_ids": lists(rng.integers(0, 126_000, size=(n, prompt_len)), pa.int64()),
        "prompt_mask": lists(np.ones((n, prompt_len), dtype=np.int64), pa.int64()),
        "response_ids": lists(resp, pa.int64()),
        "response_text": pa.array(texts),
        "image_codes": pa.nulls(n, pa.list_(pa.int64())),
        "image_png": pa.nulls(n, pa.binary()),
        "unmask_step": lists(unmask, pa.int64()),
        "confidence": lists(conf, pa.float64()),
        "early_filled": lists(early, pa.bool_()),
        "num_forwards": pa.array(np.full(n, gen, dtype=np.int64)),
        "sampler": pa.array([sampler] * n),
        "timings": pa.array([json.dumps({"gen_s": 12.5, "batch_size": 64})] * n),
        "seed": pa.array(np.full(n, step, dtype=np.int64)),
        "group": pa.array(groups.astype(np.int64)),
        "gold": pa.array([str(int(x)) for x in rng.integers(0, 100, size=n)]),
        "question": pa.array([f"Problem {(step * 50 + g) % 7473}: " + corpus[g * 50 : g * 50 + 300] for g in groups]),
        "reward": pa.array(reward),
        "reward_components": pa.array(comps),
        "advantage": pa.array(rng.normal(size=n)),
        "step": pa.array(np.full(n, step, dtype=np.int64)),
    })


def metrics_line(step: int, rng, per_step: int = PER_STEP) -> dict:
    m = {"step": step, "reward/mean": 0.2 + step / 2500 + rng.normal() * 0.05, "reward/std": 0.5,
         "reward/math/mean": 0.1 + step / 2500, "reward/format/mean": 1.0, "adv/zero_variance_groups": 5,
         "adv/groups": per_step // G, "policy_version": step, "rollouts": per_step, "response/len_mean": 650.0}
    for c in ("math", "format"):
        m |= {f"reward/{c}/timeout": 10, f"reward/{c}/error": 0, f"reward/{c}/unparsable": 25}
    for k in ("loss", "policy_loss", "kl", "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_max",
              "entropy", "grad_norm", "lr", "compute_s", "mask_ratio_mean"):
        m[f"learner/{k}"] = abs(rng.normal())
    m |= {"time/generate_s": 30.0, "time/reward_s": 2.0, "time/update_s": 40.0, "time/publish_s": 3.0,
          "time/store_s": 0.5, "time/step_s": 75.5, "time/gen_compute_s": 28.0, "time/reward_compute_s": 1.5,
          "time/update_compute_s": 38.0, "throughput/rollouts_per_s": per_step / 75.5, "time/unix": 1.7e9 + 75.5 * step}
    return m


def build_store(run: Path, steps: int, link_from: Path | None = None, size: Size | None = None) -> None:
    """Partitions 1..steps (hard links to the ones already built under link_from) and metrics.jsonl;
    `size` other than the default store's: rollouts a step, group size, generation length."""
    size = size or Size()
    done = run / "BUILT"
    if done.exists() and int(done.read_text()) == steps:
        return
    shutil.rmtree(run, ignore_errors=True)
    (run / "rollouts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    corpus = _corpus(rng)
    with (run / "metrics.jsonl").open("w") as fh:
        for s in range(1, steps + 1):
            fh.write(json.dumps(metrics_line(s, rng, size.per_step)) + "\n")
    for s in tqdm(range(1, steps + 1), desc=f"building {run.name}", unit="step"):
        part = run / "rollouts" / f"step={s}"
        part.mkdir()
        src = link_from / "rollouts" / f"step={s}" / "part-0.parquet" if link_from else None
        if src is not None and src.exists():
            os.link(src, part / "part-0.parquet")
        else:
            table = build_step(s, np.random.default_rng(s), corpus, size.per_step, size.g, size.gen)
            pq.write_table(table, part / "part-0.parquet", compression="zstd")
    done.write_text(str(steps))


# ---------------------------------------------------------------------- measuring
def get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - t0) * 1000, body


def timed(urls: list[str]) -> dict:
    ms = [get(u)[0] for u in urls]
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 1),
            "n": len(ms)}


def rss_mb(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    val = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mb": round(val["VmRSS"]), "peak_rss_mb": round(val["VmHWM"])}


def baseline_filtered(run: Path, lo: int, hi: int) -> float:
    """No index: one pyarrow.dataset scan over every partition, filter and projection pushed down."""
    t0 = time.perf_counter()
    part = ds.partitioning(pa.schema([("step", pa.int64())]), flavor="hive")
    d = ds.dataset(run / "rollouts", format="parquet", partitioning=part)
    t = d.to_table(columns=["step", "group", "group_index", "reward", "advantage", "question", "response_text", "gold",
                            "reward_components"],
                   filter=(ds.field("step") >= lo) & (ds.field("step") <= hi) & (ds.field("reward") >= 0.5))
    t.sort_by([("reward", "descending")]).slice(0, 50).to_pylist()
    return (time.perf_counter() - t0) * 1000


def first_chart(browser, url: str, loads: int) -> dict:
    """Navigation -> first chart painted (the page's `unigrpo:first-chart` performance mark: startTime is
    measured from navigation start by the browser itself), and -> every chart drawn (`unigrpo:all-charts`),
    over `loads` page loads in a browser that is already open and has loaded the page once (as a user
    who has it open). `playwright_ms` is the same from Python: goto() until the first chart's line is in
    the page, CDP round trips and Playwright's polling included."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#charts[data-drawn]", state="attached")
    first, every, wall = [], [], []
    for _ in range(loads):
        t = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_selector(".chart-box svg path.line", state="attached")
        wall.append((time.perf_counter() - t) * 1000)
        page.wait_for_selector("#charts[data-drawn]", state="attached")
        marks = page.evaluate("Object.fromEntries(performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]))")
        first.append(marks["unigrpo:first-chart"])
        every.append(marks["unigrpo:all-charts"])
    page.close()

    def spread(xs):
        return {"median_ms": round(statistics.median(xs), 1), "min_ms": round(min(xs), 1), "max_ms": round(max(xs), 1),
                "n": len(xs)}
    return {"first_chart": spread(first), "all_charts": spread(every), "playwright_ms": spread(wall)}


def start_server(run: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, CACHE_ENV: str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "rl.cli", "dashboard", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return proc, proc.stdout.readline().split()[2].rstrip("/")


def wait_indexed(api: str, want: int, label: str) -> float:
    """Seconds from now until the server has indexed `want` rollouts (polled every 0.2 s)."""
    t0 = time.perf_counter()
    with tqdm(total=want, desc=label, unit="rollout") as bar:
        while True:
            info = json.loads(get(f"{api}/info")[1])
            bar.n = info["store"]["rollouts"]
            bar.refresh()
            if info["store"]["rollouts"] >= want and not info["store"]["pending"]:
                return time.perf_counter() - t0
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def measure(run: Path, steps: int, browser, repeats: int, size: Size, cache: Path) -> dict:
    """One store: indexing from Parquet (an empty index cache), every request, the browser's first
    chart; then a second server start that reads the index cache (rl/dashboard/index_cache.py)."""
    shutil.rmtree(cache, ignore_errors=True)
    want = steps * size.per_step
    proc, base = start_server(run, cache)
    try:
        api = f"{base}/api/run/{run.name}"
        res = {"rollouts": want, "steps": steps, "index_build_s": round(wait_indexed(api, want, f"indexing {run.name}"), 1)}
        rng = np.random.default_rng(1)
        windows = [(int(s), int(s) + 100) for s in rng.integers(1, max(2, steps - 100), size=repeats)]
        get(f"{api}/rollouts?limit=1")  # warm the thread pool
        browser_res = first_chart(browser, f"{base}/run/{run.name}", max(5, repeats // 2))
        res["overview_first_chart"] = browser_res["first_chart"]
        res["overview_all_charts"] = browser_res["all_charts"]
        res["overview_first_render"] = browser_res["playwright_ms"]
        res["overview_metrics_api"] = timed([f"{api}/metrics"] * repeats)
        res["rollouts_filtered"] = timed([f"{api}/rollouts?step_min={a}&step_max={b}&reward_min=0.5&status=math:ok"
                                          f"&sort=reward&order=desc&limit=50" for a, b in windows])
        res["rollouts_newest_page"] = timed([f"{api}/rollouts?limit=50&offset={o}" for o in rng.integers(0, 5000, size=repeats)])
        res["text_search"] = timed([f"{api}/rollouts?q=boxed{{{int(k)}}}&limit=50" for k in rng.integers(0, 100, size=repeats)])
        groups = size.per_step // size.g
        res["group"] = timed([f"{api}/group?step={int(s)}&group={int(g)}" for s, g in
                              zip(rng.integers(1, steps + 1, size=repeats), rng.integers(0, groups, size=repeats))])
        res["replay"] = timed([f"{api}/replay?step={int(s)}&group={int(g)}&gi={int(i)}" for s, g, i in
                               zip(rng.integers(1, steps + 1, size=repeats), rng.integers(0, groups, size=repeats),
                                   rng.integers(0, size.g, size=repeats))])
        res |= rss_mb(proc.pid)
    finally:
        stop(proc)
    res["index_cached"] = any(cache.glob("*.arrow"))
    proc, base = start_server(run, cache)  # a restart: the index comes from the cache when it was written
    try:
        res["index_restart_s"] = round(wait_indexed(f"{base}/api/run/{run.name}", want, f"restart {run.name}"), 2)
    finally:
        stop(proc)
    base_ms = [baseline_filtered(run, a, b) for a, b in windows[:3]]
    res["baseline_dataset_scan_filtered_ms"] = round(statistics.median(base_ms), 1)
    res["speedup_filtered_vs_scan"] = round(res["baseline_dataset_scan_filtered_ms"] / res["rollouts_filtered"]["median_ms"], 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/unigrpo-dashboard-bench", help="where the synthetic store is built (reused)")
    ap.add_argument("--steps", type=int, default=2000, help="largest store, in steps of 500 rollouts")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    add_smoke_flag(ap, f"stores of {SMOKE_SMALL * PER_STEP} and {SMOKE_STEPS * PER_STEP} rollouts and a "
                   f"{SMOKE_DEMO_STEPS}-step demo-sized run in a temporary folder, {SMOKE_REPEATS} requests each")
    args = ap.parse_args()
    tmp = None
    demo_steps = DEMO_STEPS
    if args.smoke:  # never in --dir: a smaller store there would replace the full one
        tmp = tempfile.TemporaryDirectory(prefix="unigrpo-dashboard-smoke-")
        args.dir, args.steps, args.repeats, demo_steps = tmp.name, SMOKE_STEPS, SMOKE_REPEATS, SMOKE_DEMO_STEPS
    root = Path(args.dir)
    small = min(SMOKE_SMALL if args.smoke else 200, args.steps)  # the smaller store (100k rollouts)
    sizes = [("demo", root / "demo", demo_steps, DEMO),
             ("100k" if small == 200 else f"{small * PER_STEP}", root / "run100k", small, Size())]
    if args.steps > small:
        sizes.append(("1M" if args.steps == 2000 else f"{args.steps * PER_STEP}", root / "run1m", args.steps, Size()))
    build_store(sizes[0][1], sizes[0][2], size=DEMO)
    build_store(sizes[1][1], sizes[1][2])
    for _, run, steps, _size in sizes[2:]:
        build_store(run, steps, link_from=sizes[1][1])
    du = {name: round(sum(f.stat().st_size for f in (run / "rollouts").rglob("*.parquet")) / 2**30, 2) for name, run, *_ in sizes}

    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        for name, run, steps, size in sizes:
            results[name] = measure(run, steps, browser, args.repeats, size, root / "index-cache")
            results[name]["store_gib"] = du[name]
        browser.close()

    browser_keys = ["overview_first_chart", "overview_all_charts", "overview_first_render"]
    keys = ["overview_metrics_api", "rollouts_filtered", "rollouts_newest_page", "text_search", "group", "replay"]
    print(f"\n{'median ms':<26}" + "".join(f"{n:>12}" for n in results))
    for k in browser_keys + keys:
        print(f"{k:<26}" + "".join(f"{results[n][k]['median_ms']:>12}" for n in results))
    for k in ("rss_mb", "peak_rss_mb", "index_build_s", "index_restart_s", "index_cached", "store_gib",
              "baseline_dataset_scan_filtered_ms", "speedup_filtered_vs_scan"):
        print(f"{k:<26}" + "".join(f"{results[n][k]:>12}" for n in results))
    big = results[sizes[-1][0]]
    demo = results["demo"]
    summary = {
        "sizes": results,
        "max_request_ms_at_largest": max(big[k]["median_ms"] for k in keys),
        "goal_under_300ms": all(big[k]["median_ms"] < 300 for k in keys),
        "goal_rss_under_1gb": big["peak_rss_mb"] < 1024,
        "first_chart_ms": {"demo": demo["overview_first_chart"]["median_ms"],
                           "largest": big["overview_first_chart"]["median_ms"]},
        "goal_first_chart": {f"{k}_under_{v}ms": results["demo" if k == "demo" else sizes[-1][0]]["overview_first_chart"]["median_ms"] < v
                             for k, v in FIRST_CHART_GOAL_MS.items()},
        "index_s_at_largest": {"from_parquet": big["index_build_s"], "restart": big["index_restart_s"],
                               "cached": big["index_cached"]},
        "goal_index_under_30s_or_cached": big["index_build_s"] < INDEX_GOAL_S or (big["index_cached"] and big["index_restart_s"] < INDEX_GOAL_S),
    }
    if len(sizes) == 3:
        small_r = results[sizes[1][0]]
        summary["cost_ratio_largest_over_100k"] = {k: round(big[k]["median_ms"] / small_r[k]["median_ms"], 2) for k in keys}
    print_result(summary, args.smoke)


if __name__ == "__main__":
    main()
