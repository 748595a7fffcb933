"""Which runs the dashboard shows: the directories given on the command line.

`unigrpo dashboard runs/tiny` is one run; `runs/a runs/b` are several; `runs/` (a folder without a
run of its own) stands for every run under it, rescanned so new runs appear. A run is known to the
server by a short id (its directory name, made unique); URLs carry only these ids, never paths, so a
URL cannot name a file outside the given directories.

Everything here only reads: no file is created, locked or rewritten inside a run directory.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from rl.dashboard.rollouts import RolloutIndex
from rl.dashboard.series import MetricsReader

RUN_MARKERS = ("metrics.jsonl", "rollouts", "config.yaml", "summary.json", "checkpoints")
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


class Run:
    def __init__(self, run_id: str, path: Path) -> None:
        self.id = run_id
        self.path = path
        self.metrics = MetricsReader(path / "metrics.jsonl")
        self.rollouts = RolloutIndex(path)
        self.token_text = TokenText(path)
        self._lock = threading.Lock()

    def refresh(self, budget_s: float | None = None) -> None:
        with self._lock:
            self.metrics.refresh()
            self.rollouts.refresh(budget_s=budget_s)

    def _json(self, name: str):
        p = self.path / name
        try:
            return json.loads(p.read_text()), None
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            return None, f"{name}: unreadable ({exc})"

    def info(self) -> dict:
        """Status for the header of every page: steps, checkpoints, summary, problems."""
        problems = []
        if not self.path.is_dir():
            problems.append(f"{self.path}: the run directory does not exist (yet)")
        summary, err = self._json("summary.json")
        if err:
            problems.append(err)
        ckpt_dir = self.path / "checkpoints"
        try:
            checkpoints = sorted((d.name for d in ckpt_dir.iterdir() if d.is_dir()),
                                 key=lambda n: int(n.split("_")[-1]) if n.split("_")[-1].isdigit() else -1)
        except OSError:
            checkpoints = []
        try:
            config_text = (self.path / "config.yaml").read_text()[:20_000]
        except OSError:
            config_text = None
        last = self.metrics.last()
        store = self.rollouts.summary()
        problems += self.metrics.problems + store["problems"]
        if not last and not store["rollouts"] and self.path.is_dir():
            problems.append("no metrics and no rollouts yet: the run has not finished a step (the page "
                            "updates by itself when it does)")
        return {
            "id": self.id, "name": self.path.name, "path": str(self.path),
            "last_step": last.get("step"), "last": {k: last[k] for k in ("reward/mean", "time/step_s") if k in last},
            "finished": summary is not None, "summary": summary if isinstance(summary, dict) else None,
            "checkpoints": checkpoints, "config": config_text, "store": store, "problems": problems,
        }


class RunRegistry:
    """Run ids -> runs, from the command-line paths; folders are rescanned for new runs."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [Path(p).resolve() for p in paths]
        self.runs: dict[str, Run] = {}
        self._by_path: dict[Path, Run] = {}
        self._lock = threading.Lock()
        self.scan()

    @property
    def explicit(self) -> list[Run]:
        """The runs named one by one on the command line (not found in a folder)."""
        return [self._by_path[p] for p in self.paths if p in self._by_path]

    def scan(self) -> None:
        with self._lock:
            for p in self.paths:
                if is_run_dir(p) or not p.is_dir():
                    self._add(p)  # a run, or a run directory that does not exist yet
                else:
                    for child in sorted(p.iterdir()):
                        if is_run_dir(child):
                            self._add(child.resolve())

    def _add(self, path: Path) -> None:
        if path in self._by_path:
            return
        base = _ID_SAFE.sub("_", path.name) or "run"
        run_id, n = base, 1
        while run_id in self.runs:
            n += 1
            run_id = f"{base}-{n}"
        run = Run(run_id, path)
        self.runs[run_id] = run
        self._by_path[path] = run

    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)


class TokenText:
    """Token id -> display text for the replay, from the run's own tokenizer (tokenizer.json of the
    policy the run built or loaded). Without one, ids show as #id."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._tok = None
        self._tried = False
        self._cache: dict[int, str] = {}

    def _load(self):
        self._tried = True
        candidates = [self.run_dir / "policy_init" / "tokenizer.json"]
        try:
            import yaml

            cfg = yaml.safe_load((self.run_dir / "config.yaml").read_text()) or {}
            model_path = (cfg.get("model") or {}).get("path")
            if model_path:
                candidates.insert(0, Path(model_path) / "tokenizer.json")
        except (OSError, ValueError, AttributeError):
            pass
        for c in candidates:
            if c.is_file():
                from tokenizers import Tokenizer

                try:
                    self._tok = Tokenizer.from_file(str(c))
                    return
                except Exception:  # noqa: BLE001 - a display aid: fall back to ids
                    continue

    def __call__(self, ids: list[int]) -> list[str]:
        if not self._tried:
            self._load()
        out = []
        for i in ids:
            s = self._cache.get(i)
            if s is None:
                s = f"#{i}"
                if self._tok is not None and i is not None:
                    try:
                        s = self._tok.decode([int(i)], skip_special_tokens=False)
                    except Exception:  # noqa: BLE001
                        pass
                self._cache[i] = s
            out.append(s)
        return out
