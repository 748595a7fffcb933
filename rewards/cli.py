"""``unigrpo rewards check``: score a JSONL dump of rollouts with the built-in (or configured) rewards.

    python -m rewards.cli --input rollouts.jsonl [--rewards math,format] [--config FILE]
                          [--output scored.jsonl] [--clip-model DIR] [--explain]

For the ``math`` reward each record also says which extraction rule found the answer (``"rule"``:
boxed, answer_tag, gsm8k, answer_is, whole, last_math, conclusion, last_number, or none), and the summary
counts them. ``--explain`` adds, per line, the normalised gold and answer and why they were judged so (also
printed on stderr); the math reward computes it inside its sandbox worker, from strings only.

Each input line is an object with ``task``, ``prompt``, ``response``, ``gold`` and optionally ``image``
(a file path, relative to the input file unless absolute). Text-to-image dumps may give just a
``caption`` and an ``image`` (a PNG the policy generated): such a line is a ``t2i`` task whose prompt is
the caption, so a CLIP or custom image reward can be debugged on saved images. One JSON line is written
per input line, in input order; a line that is not valid UTF-8, not valid JSON, not an object, or holds
a lone surrogate (``"\ud800"``) gets an error record instead of stopping the run, and the lines after
it are scored as usual. A summary goes to stderr.
Runs in-process with the sandbox pool (no Ray), so it starts quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict

from rewards.api import STATUSES, RewardInput, RewardSpec, specs_from_config

CHUNK = 64


def _load_config(path: str) -> list[RewardSpec]:
    with open(path) as f:
        text = f.read()
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        cfg = yaml.safe_load(text)
    # A unigrpo run config keeps the list under rewards.functions; accept it as it is.
    if isinstance(cfg, dict) and isinstance(cfg.get("rewards"), dict) and "functions" in cfg["rewards"]:
        cfg = {"rewards": cfg["rewards"]["functions"]}
    return specs_from_config(cfg)


def _load_image(path: object):
    if not isinstance(path, str) or not path:
        return None, "no image path"
    try:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8), ""
    except Exception as exc:
        return None, f"cannot read image: {type(exc).__name__}"


def _as_text(v: object) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


def _record_input(obj: dict) -> RewardInput:
    gold = obj.get("gold")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if "caption" in obj and "prompt" not in obj:  # a text-to-image dump: caption + PNG path
        obj = {**obj, "prompt": obj["caption"], "task": obj.get("task", "t2i")}
    return RewardInput(task=_as_text(obj.get("task")), prompt=_as_text(obj.get("prompt")),
                       response=_as_text(obj.get("response")), gold=None if gold is None else _as_text(gold),
                       image=None, metadata=meta)


def _parse_line(raw: bytes) -> dict:
    """One input line -> a JSON object whose strings can be written back as UTF-8, or ValueError."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start})") from None
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    try:  # json accepts "\ud800", a lone surrogate that no UTF-8 writer (or tokenizer) accepts
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate (e.g. \\ud800), not valid Unicode") from None
    return obj


def _math_rule(detail: str) -> str:
    """The math reward's detail starts with "rule=NAME:" (rewards/math_reward.py)."""
    if detail.startswith("rule="):
        return detail[5:].split(":", 1)[0].strip() or "none"
    return "none"


def check_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="unigrpo rewards check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="JSONL file of rollouts ('-' for stdin)")
    ap.add_argument("--rewards", default=None, help="comma-separated reward names (default: math,format)")
    ap.add_argument("--config", default=None, help="YAML/JSON file with a 'rewards:' list of reward specs")
    ap.add_argument("--output", default="-", help="where to write scored JSONL (default stdout)")
    ap.add_argument("--clip-model", default=None, help="local CLIP directory (enables the clip reward)")
    ap.add_argument("--workers", type=int, default=1, help="sandbox worker processes")
    ap.add_argument("--explain", action="store_true",
                    help="math: show the normalised gold and answer and why they were judged equal or not")
    args = ap.parse_args(argv)

    try:
        if args.config:
            specs = _load_config(args.config)
            if args.rewards:
                wanted = [n.strip() for n in args.rewards.split(",") if n.strip()]
                specs = [s for s in specs if s.name in wanted]
        else:
            names = [n.strip() for n in (args.rewards or "math,format").split(",") if n.strip()]
            if args.clip_model and "clip" not in names and args.rewards is None:
                names.append("clip")
            specs = [RewardSpec.from_dict({"name": n}, where=f"--rewards[{k}]") for k, n in enumerate(names)]
        if not specs:
            raise ValueError("no rewards selected")
        if args.explain:
            for spec in specs:
                if spec.name == "math" and spec.path is None:
                    spec.kwargs["explain"] = True
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from rewards.engine import LocalScorer
    from rewards.registry import RewardImportError

    try:
        src = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    except OSError as exc:
        print(f"error: --input: {exc}", file=sys.stderr)
        return 2
    try:
        scorer = LocalScorer(specs, num_procs=args.workers, model_init={"model_path": args.clip_model})
    except RewardImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if src is not sys.stdin.buffer:
            src.close()
        return 2
    dst = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    t0 = time.monotonic()
    n_lines = n_bad = 0
    totals: list[float] = []
    counts: dict[str, Counter] = defaultdict(Counter)
    values: dict[str, list[float]] = defaultdict(list)
    rules: Counter = Counter()
    pending: list[tuple[int, dict, RewardInput, str]] = []

    def flush() -> None:
        if not pending:
            return
        scored = scorer.score([x for _, _, x, _ in pending])
        for (line_no, obj, x, note), s in zip(pending, scored):
            rec = {"line": line_no, "task": obj.get("task", x.task or None), "total": s.total,
                   "components": {k: r.to_dict() for k, r in s.components.items()}}
            if note:
                rec["note"] = note
            math_res = s.components.get("math")
            if math_res is not None:
                rule = _math_rule(math_res.detail)
                rec["components"]["math"]["rule"] = rule
                rules[rule] += 1
                if args.explain:
                    print(f"line {line_no} math={math_res.value:g} {math_res.status}: {math_res.detail}", file=sys.stderr)
            for k, r in s.components.items():
                counts[k][r.status] += 1
                values[k].append(r.value)
            totals.append(s.total)
            dst.write(json.dumps(rec, ensure_ascii=False) + "\n")
        pending.clear()

    try:
        for line_no, line in enumerate(src, start=1):
            n_lines += 1
            if not line.strip():
                continue
            try:
                obj = _parse_line(line)
            except (ValueError, RecursionError) as exc:
                flush()  # keep output in input order
                n_bad += 1
                dst.write(json.dumps({"line": line_no, "error": f"invalid input line: {str(exc)[:200]}"}) + "\n")
                continue
            inp = _record_input(obj)
            note = ""
            if "image" in obj and obj["image"] is not None:
                image = obj["image"]
                if isinstance(image, str) and image and args.input != "-" and not os.path.isabs(image):
                    image = os.path.join(os.path.dirname(os.path.abspath(args.input)), image)
                inp.image, note = _load_image(image)
            pending.append((line_no, obj, inp, note))
            if len(pending) >= CHUNK:
                flush()
        flush()
    finally:
        scorer.close()
        if src is not sys.stdin.buffer:
            src.close()
        if dst is not sys.stdout:
            dst.close()
        else:
            dst.flush()

    dt = time.monotonic() - t0
    print(f"scored {len(totals)} samples ({n_bad} invalid lines) in {dt:.2f}s", file=sys.stderr)
    for name in [s.name for s in specs]:
        c, v = counts.get(name, Counter()), values.get(name, [])
        mean = sum(v) / len(v) if v else 0.0
        parts = " ".join(f"{k}={c[k]}" for k in STATUSES)
        print(f"  {name:<10} n={len(v):<6} mean={mean:.4f}  {parts}", file=sys.stderr)
    if rules:
        print("  math rules " + " ".join(f"{k}={n}" for k, n in rules.most_common()), file=sys.stderr)
    if totals:
        print(f"  total      mean={sum(totals) / len(totals):.4f}", file=sys.stderr)
    return 0


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["check"]:  # accept both "rewards.cli check ..." and "rewards.cli ..."
        argv = argv[1:]
    raise SystemExit(check_main(argv))


if __name__ == "__main__":
    main()
