"""Everything a run needs from the outside world, checked before anything starts.

    preflight(cfg, run_dir)   raises ConfigError naming the key; creates nothing

The typed config (rl/config.py) checks values; this checks what they point at: the policy directory,
the DeepSpeed JSON, the CLIP model, every data file, every reward plugin (imported in a sandbox worker
with a deadline and a memory cap, never in this process), and that the run directory can be written.
A run that would fail 36 s in, after Ray started, fails here in a second, with no run directory left.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rl.config import ConfigError, RunConfig

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def check_policy_dir(path_text: str, key: str = "model.path") -> None:
    from policy.config import REQUIRED_KEYS

    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a directory")
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} is not a policy directory (no config.json)") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: {path / 'config.json'} is not readable JSON ({err})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise ConfigError(f"{key}: {path / 'config.json'} does not describe a policy (missing {missing})")
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        raise ConfigError(f"{key}: {path} has no weights (expected one of {', '.join(WEIGHT_PATTERNS)})")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{key}: {path} has no tokenizer (expected one of {', '.join(TOKENIZER_FILES)})")


def check_deepspeed_config(cfg: RunConfig) -> None:
    from rl.builders import learner_config
    from trainer.engine import load_deepspeed_config, resolve_path

    key = "learner.deepspeed_config"
    path = resolve_path(cfg.learner.deepspeed_config)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist")
    try:
        load_deepspeed_config(learner_config(cfg), cfg.learner.num_ranks, False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from None


def check_writable(run_dir: Path) -> None:
    """The nearest existing folder on the way to run_dir must take a file (tried, not guessed: root
    ignores permission bits, read-only mounts do not)."""
    probe = Path(run_dir).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"run.dir: cannot create run directory {run_dir}: {probe} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise ConfigError(f"run.dir: cannot write run directory {run_dir}: {probe} is not writable "
                          f"({err.strerror or err})") from None


def check_rewards(cfg: RunConfig) -> dict[str, str]:
    from rewards.api import RewardSpec
    from rewards.registry import RewardImportError, probe_kinds

    specs = [RewardSpec.from_dict(r.model_dump(), where=f"rewards.functions[{i}]")
             for i, r in enumerate(cfg.rewards.functions)]
    try:
        kinds = probe_kinds(specs)
    except RewardImportError as err:
        raise ConfigError(f"rewards.functions: {err}") from None
    clip = cfg.rewards.clip_model_path
    if clip is not None and not Path(clip).expanduser().is_dir():
        raise ConfigError(f"rewards.clip_model_path: {clip} is not a directory")
    return kinds


def preflight(cfg: RunConfig, run_dir: Path) -> None:
    """Raise ConfigError (or DataError for data files) for the first thing that would fail later."""
    from rl.data import build_run_dataset

    if cfg.model.path is not None:
        check_policy_dir(cfg.model.path)
    check_deepspeed_config(cfg)
    build_run_dataset(cfg)  # every row of every data file (images encoded once, cached)
    check_rewards(cfg)
    check_writable(run_dir)
