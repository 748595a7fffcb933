"""Math reward benchmark: the `math` reward vs Math-Verify 0.9.0 on real model outputs, side by side in
one process, on the same cases and the same machine. Ends with one line ``RESULT {json}``.

Data: tests/data/math_corpus.jsonl (real outputs of published model runs with native gold answers, see
tests/data/math_corpus_build.py) and the labels in tests/data/math_corpus_labels.jsonl. A case's label is
the verdict both checkers agree on, unless it was triaged by hand (every disagreement was, and so was
every case where a third party's verdict -- OpenAI's is_correct, Math-Verify's suite -- differs from an
agreement); triaged "ambiguous" cases are left out of accuracy. ``--split heldout`` (default) scores
the third of every source the reward was NOT tuned on; ``--split dev`` the part it was developed on.

Reported per source and per answer style: accuracy, precision and recall of each checker against the
labels, and cases/s. Ours runs through the real SandboxPool (1 worker process, hard 5 s deadline), so
its figure INCLUDES process isolation; Math-Verify runs in this process with its own SIGALRM timeouts
(main thread), so its figure does NOT. Math-Verify gets the gold as ``\\boxed{gold}`` (the GSM8K gold
after "####"), as verl does; its own suite's cases are compared the way its tests compare them.

Baseline: Math-Verify 0.9.0, the checker verl and open-r1 use.

    .venv/bin/python benchmarks/math_reward.py [--split heldout|dev|all] [--limit N] [--dump verdicts.jsonl]
    .venv/bin/python benchmarks/math_reward.py --smoke    # 40 cases spread through the split

How long, on the shared 2-core machine (2026-12-03): `--smoke` 2-6 s (figures meaningless). The full
held-out split (1,464 cases) was not re-timed: at the smoke run's rates (~60 and ~35 cases/s) about
1-2 min; `--split all` (4,449 cases) about three times that (an estimate).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from _common import ROOT, add_smoke_flag, print_result

from rewards.api import RewardInput, RewardSpec
from rewards.sandbox import Call, SandboxPool

DATA = ROOT / "tests" / "data" / "math_corpus.jsonl"
LABELS = ROOT / "tests" / "data" / "math_corpus_labels.jsonl"
SMOKE_CASES = 40


def load(split: str, limit: int | None = None) -> list[dict]:
    rows = [json.loads(x) for x in DATA.read_text().splitlines() if x.strip()]
    labels = {}
    if LABELS.exists():
        labels = {d["id"]: d for d in map(json.loads, LABELS.read_text().splitlines()) if d}
    out = []
    for r in rows:
        if split != "all" and r["split"] != split:
            continue
        lab = labels.get(r["id"])
        r["label"] = None if lab is None else lab["label"]  # True / False / "ambiguous"
        r["triage"] = None if lab is None else lab.get("triage")
        out.append(r)
    return out[:limit] if limit else out


def run_ours(cases):
    pool = SandboxPool(num_procs=1)
    pool.warm_up()
    spec = RewardSpec("math").to_dict()
    verdicts = []
    t0 = time.perf_counter()
    for c in cases:  # one call at a time, as a per-sample reward is called
        r = pool.run([Call(spec, RewardInput("math", "", c["response"], c["gold"]), 5.0)])[0]
        verdicts.append((r.value == 1.0, f"{r.status}: {r.detail}"))
    total = time.perf_counter() - t0
    pool.close()
    return verdicts, total


def _mv_gold(c: dict) -> str:
    g = c["gold"]
    if "####" in g:
        g = g.split("####")[-1].strip().replace(",", "")
    return g if "\\boxed" in g else f"\\boxed{{{g}}}"


def run_math_verify(cases):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    suite_cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    verdicts = []
    t0 = time.perf_counter()
    for c in cases:
        try:
            if c["source"] == "mathverify_suite":
                ok = bool(verify(parse(c["gold"], suite_cfg), parse(c["response"], suite_cfg)))
            else:
                ok = bool(verify(parse(_mv_gold(c)), parse(c["response"])))
            why = "ok"
        except BaseException as exc:  # noqa: B036 - its TimeoutException is a BaseException
            ok, why = False, type(exc).__name__
        verdicts.append((ok, why))
    return verdicts, time.perf_counter() - t0


def scores(pairs: list[tuple[bool, bool]]) -> dict:
    """pairs of (verdict, label): accuracy, precision (of "correct" verdicts), recall."""
    tp = sum(v and y for v, y in pairs)
    fp = sum(v and not y for v, y in pairs)
    fn = sum(not v and y for v, y in pairs)
    n = len(pairs)
    return {"n": n, "accuracy": round((n - fp - fn) / n, 4) if n else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0, "fp": fp, "fn": fn}


def table(cases, ours, theirs, key):
    groups = defaultdict(list)
    for c, o, t in zip(cases, ours, theirs):
        if isinstance(c["label"], bool):
            groups[c[key]].append((o[0], t[0], c["label"]))
    out = {}
    print(f"\n   per {key:<8} {'n':>5} | ours acc  prec   rec   FP  FN | Math-Verify acc  prec   rec   FP  FN")
    for g, rows in sorted(groups.items()):
        a, b = scores([(o, y) for o, _, y in rows]), scores([(t, y) for _, t, y in rows])
        out[g] = {"ours": a, "math_verify": b}
        print(f"   {g:<16} {a['n']:5d} | {a['accuracy']:.4f} {a['precision']:.4f} {a['recall']:.4f} {a['fp']:4d} "
              f"{a['fn']:3d} | {b['accuracy']:.4f} {b['precision']:.4f} {b['recall']:.4f} {b['fp']:4d} {b['fn']:3d}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="heldout", choices=["heldout", "dev", "all"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--dump", default=None, help="write per-case verdicts of both checkers (JSONL)")
    add_smoke_flag(ap, f"{SMOKE_CASES} cases spread through the split")
    args = ap.parse_args()
    cases = load(args.split, args.limit)
    if args.smoke:  # evenly spaced through the split, so that every source is likely in it
        cases = cases[:: max(1, len(cases) // SMOKE_CASES)][:SMOKE_CASES]
    print(f"{len(cases)} cases ({args.split}); scoring with ours (sandboxed) ...", flush=True)
    ours, t_ours = run_ours(cases)
    print("scoring with Math-Verify 0.9.0 (in-process) ...", flush=True)
    theirs, t_mv = run_math_verify(cases)
    if args.dump:
        with open(args.dump, "w") as f:
            for c, o, t in zip(cases, ours, theirs):
                f.write(json.dumps({"id": c["id"], "source": c["source"], "style": c["style"], "gold": c["gold"],
                                    "response": c["response"], "ref": c.get("ref"), "ours": o[0], "ours_why": o[1],
                                    "mv": t[0], "mv_why": t[1], "label": c["label"]}, ensure_ascii=False) + "\n")
    labelled = [(o[0], t[0], c["label"]) for c, o, t in zip(cases, ours, theirs) if isinstance(c["label"], bool)]
    unlabelled = sum(1 for c in cases if c["label"] is None)
    ambiguous = sum(1 for c in cases if c["label"] == "ambiguous")
    disagree = sum(1 for o, t in zip(ours, theirs) if o[0] != t[0])
    a, b = scores([(o, y) for o, _, y in labelled]), scores([(t, y) for _, t, y in labelled])
    print(f"\n== {args.split}: {len(cases)} cases, {len(labelled)} labelled, {ambiguous} ambiguous, {unlabelled} "
          f"unlabelled, {disagree} disagreements")
    print(f"   ours        accuracy {a['accuracy']}  precision {a['precision']}  recall {a['recall']}  "
          f"({a['fp']} FP, {a['fn']} FN)  {len(cases) / t_ours:.1f} cases/s")
    print(f"   Math-Verify accuracy {b['accuracy']}  precision {b['precision']}  recall {b['recall']}  "
          f"({b['fp']} FP, {b['fn']} FN)  {len(cases) / t_mv:.1f} cases/s")
    per_source = table(cases, ours, theirs, "source")
    per_style = table(cases, ours, theirs, "style")
    worse = [s for s, d in per_source.items() if d["ours"]["accuracy"] < d["math_verify"]["accuracy"]
             or d["ours"]["precision"] < d["math_verify"]["precision"]]
    result = {"split": args.split, "cases": len(cases), "labelled": len(labelled), "ambiguous": ambiguous,
              "unlabelled": unlabelled, "disagreements": disagree,
              "accuracy": a["accuracy"], "precision": a["precision"], "recall": a["recall"],
              "math_verify_accuracy": b["accuracy"], "math_verify_precision": b["precision"],
              "math_verify_recall": b["recall"],
              "cases_per_s": round(len(cases) / t_ours, 1), "math_verify_cases_per_s": round(len(cases) / t_mv, 1),
              "speedup": round(t_mv / t_ours, 2), "sources_where_ours_is_worse": worse,
              "ours_includes_isolation": True, "math_verify_includes_isolation": False,
              "per_source": {k: {"ours_acc": v["ours"]["accuracy"], "ours_prec": v["ours"]["precision"],
                                 "mv_acc": v["math_verify"]["accuracy"], "mv_prec": v["math_verify"]["precision"]}
                             for k, v in per_source.items()},
              "per_style": {k: {"ours_acc": v["ours"]["accuracy"], "mv_acc": v["math_verify"]["accuracy"]}
                            for k, v in per_style.items()}}
    print_result(result, args.smoke)


if __name__ == "__main__":
    main()
