"""What the benchmarks share: the `--smoke` flag, the `RESULT {json}` line, the real driver loop with its
per-step metric rows, and the runner of every benchmark's smoke mode.

Every benchmark ends with one line `RESULT {json}` (`print_result`); `parse_result` reads it back.
`--smoke` runs the same code path with sizes shrunk to seconds: it checks that a benchmark still works,
its figures mean nothing (the RESULT says `"smoke": true`).

    .venv/bin/python benchmarks/_common.py              # every benchmark's --smoke, one after another
    .venv/bin/python benchmarks/_common.py e2e scale    # the named ones

runs each in a subprocess from the repository root, prints its wall time and RESULT, and exits 1 if any
failed or printed no valid RESULT (`make bench-smoke`; tests/test_benchmarks.py uses `run_smoke`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
CONFIGS = ROOT / "configs"
RESULT_PREFIX = "RESULT "


def add_smoke_flag(parser: argparse.ArgumentParser, sizes: str) -> None:
    """`--smoke`: the same code path at the sizes `sizes` describes (seconds, figures meaningless)."""
    parser.add_argument("--smoke", action="store_true",
                        help=f"smoke mode: the same code path, shrunk ({sizes}); its figures mean nothing")


def print_result(result: dict, smoke: bool) -> None:
    """The benchmark's last line: `RESULT ` then strict JSON (a NaN or inf is a bug, not a figure), with
    `"smoke": true` when the figures come from --smoke and mean nothing."""
    print(RESULT_PREFIX + json.dumps({**result, "smoke": smoke}, allow_nan=False), flush=True)


def parse_result(output: str) -> dict:
    """The JSON of the last `RESULT ` line in a benchmark's output (ValueError if there is none)."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("no `RESULT {json}` line in the output")
    return json.loads(lines[-1][len(RESULT_PREFIX):], parse_constant=_reject_constant)


def _reject_constant(name: str):
    raise ValueError(f"RESULT holds {name}, which is not JSON")


def train_rows(rows: list[dict]) -> list[dict]:
    """The training steps' rows of metrics.jsonl: held-out eval rows (eval/* only, logged at the same step
    numbers) share the file and have no `reward/mean`."""
    return [r for r in rows if "reward/mean" in r]


def run_driver(cfg) -> tuple[float, list[dict]]:
    """The real driver loop on a loaded config: setup, train, shutdown. Returns the setup seconds and the
    training steps' metric rows, in order."""
    setup_s, rows = run_driver_all_rows(cfg)
    return setup_s, train_rows(rows)


def run_driver_all_rows(cfg) -> tuple[float, list[dict]]:
    """`run_driver`, with every row of metrics.jsonl (training steps and held-out evaluations)."""
    from rl.driver import Driver

    driver = Driver(cfg, console=False)
    t0 = time.perf_counter()
    try:
        driver.setup()
        setup_s = time.perf_counter() - t0
        driver.train()
    finally:
        driver.shutdown()
    return setup_s, driver.metrics.read()


def benchmark_names() -> list[str]:
    """Every benchmark script in benchmarks/ (files starting with `_` are helpers)."""
    return sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def run_smoke(name: str, timeout: float | None = None) -> tuple[dict, float]:
    """`benchmarks/<name>.py --smoke` in a subprocess from the repository root: its RESULT and its wall
    seconds. RuntimeError, with the end of its output, if it fails or prints no valid RESULT line."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--smoke"], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.perf_counter() - t0
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit code {proc.returncode}")
        return parse_result(proc.stdout), seconds
    except ValueError as exc:
        raise RuntimeError(f"benchmarks/{name}.py --smoke failed after {seconds:.0f} s ({exc}); its output "
                           f"ends:\n{proc.stdout[-4000:]}") from None


def main(names: list[str]) -> int:
    from policy.placement import ensure_local_ray_env

    ensure_local_ray_env()  # inherited by every benchmark (the Makefile exports the same)
    unknown = sorted(set(names) - set(benchmark_names()))
    if unknown:
        print(f"unknown benchmarks {unknown}; there are {benchmark_names()}", file=sys.stderr)
        return 2
    failed = []
    for name in names or benchmark_names():
        print(f"== benchmarks/{name}.py --smoke", flush=True)
        try:
            result, seconds = run_smoke(name)
        except RuntimeError as exc:
            print(exc, flush=True)
            failed.append(name)
            continue
        print(f"   ok in {seconds:.1f} s: {RESULT_PREFIX}{json.dumps(result)[:400]}", flush=True)
    if failed:
        print(f"smoke runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
