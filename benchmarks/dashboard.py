"""Dashboard at scale: a synthetic rollout store of 1,000,000 rollouts over 2,000 steps.

Each rollout has the columns a real one has (rl/store.py), with generation length 256 and realistic
trajectory columns (unmask_step, confidence, early_filled per position), written by the same pyarrow
Parquet writer settings as the run (zstd, one partition per step). With `unigrpo dashboard` running
(the real CLI, a separate process) it measures, at 100k and at 1M stored rollouts:

  overview   time to first render in headless Chromium (navigation -> first chart drawn), and the
             metrics API request behind it
  rollouts   a filtered, sorted page (step window + reward range + status, sorted by reward)
  search     a text search (newest partitions first, time-budgeted)
  group      one prompt's G responses
  replay     one response's trajectory
  RSS        the server's resident memory after indexing the whole store

Baseline, in the same process: the same filtered page answered the obvious way, a pyarrow.dataset
scan over every partition with the filter pushed down (no index). Goals: every request < 300 ms at
1M, RSS < 1 GB, and request cost independent of the number of stored steps (1M / 100k ~ 1).

    .venv/bin/python benchmarks/dashboard.py                  # builds the store once under --dir, reuses it
    .venv/bin/python benchmarks/dashboard.py --steps 200      # a quick run (100k only)
    .venv/bin/python benchmarks/dashboard.py --smoke          # stores of 1,000 and 2,000 rollouts

Ends with `RESULT {json}`. It needs Chromium at /usr/bin/chromium (Debian's package: `apt-get install chromium`). `--smoke` builds
its two small stores in a temporary folder (never under --dir, whose full store it would replace).

How long, on the shared 2-core machine (2026-12-03): `--smoke` 5-8 s (figures meaningless). The full
run was not re-timed: it first writes ~4 GiB of Parquet under --dir (2,000 partitions at ~8 per
second as the smoke store was written: ~4 min), then the server indexes 1M rollouts and every request
is timed; expect well over 10 minutes the first time, less once the store exists (an estimate).
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
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from _common import add_smoke_flag, print_result
from tqdm import tqdm

GEN = 256
SMOKE_STEPS, SMOKE_SMALL, SMOKE_REPEATS = 4, 2, 4  # stores of 1,000 and 2,000 rollouts, in a temporary folder
PER_STEP = 500           # 50 prompts x G = 10
G = 10
WORDS = ("the answer is step so we get then add multiply total each number of apples left "
         "therefore boxed first second compute half twice minus plus equals").split()


def _corpus(rng) -> str:
    return " ".join(rng.choice(WORDS, size=400_000))


def build_step(step: int, rng, corpus: str) -> pa.Table:
    n = PER_STEP
    groups = np.repeat(np.arange(n // G), G)
    offs = rng.integers(0, len(corpus) - 1200, size=n)
    texts = [corpus[o : o + rng.integers(200, 1100)] + f" \\boxed{{{rng.integers(0, 100)}}}" for o in offs]
    # unmask order: a random permutation of 0..GEN-1 forward indices per rollout (steps = gen length)
    unmask = np.argsort(rng.random((n, GEN)), axis=1).astype(np.int64)
    conf = rng.random((n, GEN))
    resp = rng.integers(0, 126_000, size=(n, GEN))
    early = np.zeros((n, GEN), dtype=bool)
    early[:, 200:] = rng.random((n, 1)) < 0.3
    prompt_len = 64
    status = np.where(rng.random(n) < 0.02, "timeout", np.where(rng.random(n) < 0.05, "unparsable", "ok"))
    correct = (rng.random(n) < min(0.9, 0.1 + step / 2500)) & (status == "ok")
    reward = correct * 2.0 + rng.random(n) * 0.5
    comps = [json.dumps({"math": {"value": float(c), "status": s, "detail": "boxed: integer" if s == "ok" else "no answer"},
                         "format": {"value": 1.0, "status": "ok", "detail": "matches"}}) for c, s in zip(correct, status)]

    def lists(a, typ):
        return pa.ListArray.from_arrays(pa.array(np.arange(0, a.size + 1, a.shape[1], dtype=np.int32)),
                                        pa.array(a.ravel(), typ))

    sampler = json.dumps({"kind": "text", "gen_length": GEN, "steps": GEN, "block_length": 32, "temperature": 1.0,
                          "remasking": "low_confidence"})
    return pa.table({
        "prompt_id": pa.array([f"gsm8k-{(step * 50 + g) % 7473}" for g in groups]),
        "group_index": pa.array(np.tile(np.arange(G), n // G).astype(np.int64)),
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
        "num_forwards": pa.array(np.full(n, GEN, dtype=np.int64)),
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


def metrics_line(step: int, rng) -> dict:
    m = {"step": step, "reward/mean": 0.2 + step / 2500 + rng.normal() * 0.05, "reward/std": 0.5,
         "reward/math/mean": 0.1 + step / 2500, "reward/format/mean": 1.0, "adv/zero_variance_groups": 5,
         "adv/groups": 50, "policy_version": step, "rollouts": PER_STEP, "response/len_mean": 650.0}
    for c in ("math", "format"):
        m |= {f"reward/{c}/timeout": 10, f"reward/{c}/error": 0, f"reward/{c}/unparsable": 25}
    for k in ("loss", "policy_loss", "kl", "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_max",
              "entropy", "grad_norm", "lr", "compute_s", "mask_ratio_mean"):
        m[f"learner/{k}"] = abs(rng.normal())
    m |= {"time/generate_s": 30.0, "time/reward_s": 2.0, "time/update_s": 40.0, "time/publish_s": 3.0,
          "time/store_s": 0.5, "time/step_s": 75.5, "time/gen_compute_s": 28.0, "time/reward_compute_s": 1.5,
          "time/update_compute_s": 38.0, "throughput/rollouts_per_s": PER_STEP / 75.5, "time/unix": 1.7e9 + 75.5 * step}
    return m


def build_store(run: Path, steps: int, link_from: Path | None = None) -> None:
    """Partitions 1..steps (hard links to the ones already built under link_from) and metrics.jsonl."""
    done = run / "BUILT"
    if done.exists() and int(done.read_text()) == steps:
        return
    shutil.rmtree(run, ignore_errors=True)
    (run / "rollouts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    corpus = _corpus(rng)
    with (run / "metrics.jsonl").open("w") as fh:
        for s in range(1, steps + 1):
            fh.write(json.dumps(metrics_line(s, rng)) + "\n")
    for s in tqdm(range(1, steps + 1), desc=f"building {run.name}", unit="step"):
        part = run / "rollouts" / f"step={s}"
        part.mkdir()
        src = link_from / "rollouts" / f"step={s}" / "part-0.parquet" if link_from else None
        if src is not None and src.exists():
            os.link(src, part / "part-0.parquet")
        else:
            pq.write_table(build_step(s, np.random.default_rng(s), corpus), part / "part-0.parquet", compression="zstd")
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


def measure(run: Path, steps: int, browser, repeats: int) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "rl.cli", "dashboard", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        base = line.split()[2].rstrip("/")
        api = f"{base}/api/run/{run.name}"
        t0 = time.perf_counter()
        want = steps * PER_STEP
        with tqdm(total=want, desc=f"server indexing {run.name}", unit="rollout") as bar:
            while True:
                info = json.loads(get(f"{api}/info")[1])
                bar.n = info["store"]["rollouts"]
                bar.refresh()
                if info["store"]["rollouts"] >= want and not info["store"]["pending"]:
                    break
                time.sleep(0.5)
        index_s = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        windows = [(int(s), int(s) + 100) for s in rng.integers(1, max(2, steps - 100), size=repeats)]
        get(f"{api}/rollouts?limit=1")  # warm the thread pool
        res = {"rollouts": want, "steps": steps, "index_build_s": round(index_s, 1)}
        # the overview: first chart drawn in Chromium after navigation, then the API behind it
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        renders = []
        for _ in range(max(3, repeats // 4)):
            t = time.perf_counter()
            page.goto(f"{base}/run/{run.name}")
            page.wait_for_selector(".chart-box svg path.line", state="attached")
            renders.append((time.perf_counter() - t) * 1000)
        page.close()
        res["overview_first_render"] = {"median_ms": round(statistics.median(renders), 1), "n": len(renders)}
        res["overview_metrics_api"] = timed([f"{api}/metrics"] * repeats)
        res["rollouts_filtered"] = timed([f"{api}/rollouts?step_min={a}&step_max={b}&reward_min=0.5&status=math:ok"
                                          f"&sort=reward&order=desc&limit=50" for a, b in windows])
        res["rollouts_newest_page"] = timed([f"{api}/rollouts?limit=50&offset={o}" for o in rng.integers(0, 5000, size=repeats)])
        res["text_search"] = timed([f"{api}/rollouts?q=boxed{{{int(k)}}}&limit=50" for k in rng.integers(0, 100, size=repeats)])
        res["group"] = timed([f"{api}/group?step={int(s)}&group={int(g)}" for s, g in
                              zip(rng.integers(1, steps + 1, size=repeats), rng.integers(0, PER_STEP // G, size=repeats))])
        res["replay"] = timed([f"{api}/replay?step={int(s)}&group={int(g)}&gi={int(i)}" for s, g, i in
                               zip(rng.integers(1, steps + 1, size=repeats), rng.integers(0, PER_STEP // G, size=repeats),
                                   rng.integers(0, G, size=repeats))])
        res |= rss_mb(proc.pid)
        base_ms = [baseline_filtered(run, a, b) for a, b in windows[:3]]
        res["baseline_dataset_scan_filtered_ms"] = round(statistics.median(base_ms), 1)
        res["speedup_filtered_vs_scan"] = round(res["baseline_dataset_scan_filtered_ms"] / res["rollouts_filtered"]["median_ms"], 1)
        return res
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/unigrpo-dashboard-bench", help="where the synthetic store is built (reused)")
    ap.add_argument("--steps", type=int, default=2000, help="largest store, in steps of 500 rollouts")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    add_smoke_flag(ap, f"stores of {SMOKE_SMALL * PER_STEP} and {SMOKE_STEPS * PER_STEP} rollouts in a temporary "
                   f"folder, {SMOKE_REPEATS} requests each")
    args = ap.parse_args()
    tmp = None
    if args.smoke:  # never in --dir: a smaller store there would replace the full one
        tmp = tempfile.TemporaryDirectory(prefix="unigrpo-dashboard-smoke-")
        args.dir, args.steps, args.repeats = tmp.name, SMOKE_STEPS, SMOKE_REPEATS
    root = Path(args.dir)
    small = min(SMOKE_SMALL if args.smoke else 200, args.steps)  # the smaller store (100k rollouts)
    sizes = [("100k" if small == 200 else f"{small * PER_STEP}", root / "run100k", small)]
    if args.steps > small:
        sizes.append(("1M" if args.steps == 2000 else f"{args.steps * PER_STEP}", root / "run1m", args.steps))
    build_store(sizes[0][1], sizes[0][2])
    for _, run, steps in sizes[1:]:
        build_store(run, steps, link_from=sizes[0][1])
    du = {name: round(sum(f.stat().st_size for f in (run / "rollouts").rglob("*.parquet")) / 2**30, 2) for name, run, _ in sizes}

    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        for name, run, steps in sizes:
            results[name] = measure(run, steps, browser, args.repeats)
            results[name]["store_gib"] = du[name]
        browser.close()

    keys = ["overview_first_render", "overview_metrics_api", "rollouts_filtered", "rollouts_newest_page",
            "text_search", "group", "replay"]
    print(f"\n{'request (median ms)':<26}" + "".join(f"{n:>12}" for n in results))
    for k in keys:
        print(f"{k:<26}" + "".join(f"{results[n][k]['median_ms']:>12}" for n in results))
    for k in ("rss_mb", "peak_rss_mb", "index_build_s", "store_gib", "baseline_dataset_scan_filtered_ms", "speedup_filtered_vs_scan"):
        print(f"{k:<26}" + "".join(f"{results[n][k]:>12}" for n in results))
    big = results[sizes[-1][0]]
    summary = {
        "sizes": results,
        "max_request_ms_at_largest": max(big[k]["median_ms"] for k in keys),
        "goal_under_300ms": all(big[k]["median_ms"] < 300 for k in keys),
        "goal_rss_under_1gb": big["peak_rss_mb"] < 1024,
    }
    if len(sizes) == 2:
        small_r = results[sizes[0][0]]
        summary["cost_ratio_largest_over_100k"] = {k: round(big[k]["median_ms"] / small_r[k]["median_ms"], 2) for k in keys}
    print_result(summary, args.smoke)


if __name__ == "__main__":
    main()
