"""Math reward benchmark: accuracy and checks/s on tests/data/math_answers.jsonl, side by side with
Math-Verify (PyPI ``math-verify``; benchmark only, not a runtime dependency) in one run.

Ours runs through the real SandboxPool (1 worker process, hard 5 s deadline): its numbers INCLUDE the
process-isolation overhead (pickling, pipe round trips). Math-Verify runs in this process with its own
defaults (SIGALRM timeouts, 5 s per parse/verify, main thread): NO isolation overhead is included.
Same cases, same process, same machine. Ends with one line ``RESULT {json}``.

    python benchmarks/math_reward.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards.api import RewardInput, RewardSpec  # noqa: E402
from rewards.sandbox import Call, SandboxPool  # noqa: E402

MARK = "/tmp/unigrpo_pwned_marker"


def load_cases():
    path = ROOT / "tests" / "data" / "math_answers.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def run_ours(cases, repeat):
    pool = SandboxPool(num_procs=1)
    pool.warm_up()
    spec = RewardSpec("math").to_dict()
    lat, verdicts = [], []
    t0 = time.perf_counter()
    for _ in range(repeat):
        verdicts = []
        for c in cases:  # one call at a time, like a per-sample reward: honest latency per case
            t = time.perf_counter()
            r = pool.run([Call(spec, RewardInput("math", "", c["response"], c["gold"]), 5.0)])[0]
            lat.append(time.perf_counter() - t)
            verdicts.append((r.value == 1.0, r.status))
    total = time.perf_counter() - t0
    pool.close()
    return verdicts, total, lat


def run_math_verify(cases, repeat):
    from math_verify import parse, verify

    lat, verdicts = [], []
    t0 = time.perf_counter()
    for _ in range(repeat):
        verdicts = []
        for c in cases:
            t = time.perf_counter()
            g = c["gold"]
            try:
                gold = parse(g if ("\\boxed" in g or "####" in g) else f"\\boxed{{{g}}}")
                pred = parse(c["response"])
                ok = bool(verify(gold, pred))
                status = "ok"
            except BaseException as exc:  # noqa: B036 - its TimeoutException is a BaseException
                ok, status = False, type(exc).__name__
            lat.append(time.perf_counter() - t)
            verdicts.append((ok, status))
    total = time.perf_counter() - t0
    return verdicts, total, lat


def summarize(name, cases, verdicts, total, lat, repeat):
    per_cat = defaultdict(lambda: [0, 0])
    wrong = []
    for c, (v, _s) in zip(cases, verdicts):
        per_cat[c["category"]][1] += 1
        if v == c["expected"]:
            per_cat[c["category"]][0] += 1
        else:
            wrong.append((c["id"], c["category"], "FP" if v else "FN"))
    acc = sum(a for a, _ in per_cat.values()) / len(cases)
    fp = sum(1 for w in wrong if w[2] == "FP")
    lat_sorted = sorted(lat)
    out = {"accuracy": round(acc, 4), "false_positives": fp, "false_negatives": len(wrong) - fp,
           "checks_per_s": round(len(cases) * repeat / total, 1), "seconds": round(total, 2),
           "p50_ms": round(1000 * statistics.median(lat), 2),
           "p99_ms": round(1000 * lat_sorted[int(0.99 * (len(lat) - 1))], 2),
           "max_ms": round(1000 * lat_sorted[-1], 1),
           "per_category": {k: f"{a}/{n}" for k, (a, n) in sorted(per_cat.items())}}
    print(f"\n== {name}: accuracy {acc:.4f} ({fp} FP, {len(wrong) - fp} FN), {out['checks_per_s']} checks/s, "
          f"p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, max {out['max_ms']} ms")
    for k, v in out["per_category"].items():
        print(f"   {k:<14} {v}")
    if wrong:
        print("   disagreements with labels:", wrong[:40])
    out["_lat"] = lat
    return out


def benign_rate(cases, lat) -> float:
    n = len(cases)
    t = sum(x for k, x in enumerate(lat) if cases[k % n]["category"] != "hostile")
    cnt = sum(1 for k in range(len(lat)) if cases[k % n]["category"] != "hostile")
    return cnt / t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    cases = load_cases()
    if os.path.exists(MARK):
        os.remove(MARK)
    ours = summarize("unigrpo math (sandboxed)", cases, *run_ours(cases, args.repeat), args.repeat)
    ours_pwned = os.path.exists(MARK)
    mv = summarize("Math-Verify 0.9 (in-process)", cases, *run_math_verify(cases, args.repeat), args.repeat)
    mv_pwned = os.path.exists(MARK)
    benign = [i for i, c in enumerate(cases) if c["category"] != "hostile"]
    result = {
        "cases": len(cases), "accuracy": ours["accuracy"], "math_verify_accuracy": mv["accuracy"],
        "false_positives": ours["false_positives"], "math_verify_false_positives": mv["false_positives"],
        "checks_per_s": ours["checks_per_s"], "math_verify_checks_per_s": mv["checks_per_s"],
        "speedup": round(ours["checks_per_s"] / mv["checks_per_s"], 2),
        "p99_ms": ours["p99_ms"], "math_verify_p99_ms": mv["p99_ms"],
        "max_ms": ours["max_ms"], "math_verify_max_ms": mv["max_ms"],
        "benign_cases": len(benign),
        "benign_speedup": round(benign_rate(cases, ours["_lat"]) / benign_rate(cases, mv["_lat"]), 2), "code_executed": ours_pwned, "math_verify_code_executed": mv_pwned,
        "ours_includes_isolation": True, "math_verify_includes_isolation": False,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
