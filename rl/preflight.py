"""Everything a run needs from the outside world, checked before anything starts.

    preflight(cfg, run_dir)   raises ConfigError naming the key; creates nothing

The typed config (rl/config.py) checks values; this checks what they point at: the policy directory
(config.json, tokenizer, and every weight file's safetensors header: it covers the file and holds each
tensor the model needs with the shape config.json implies; no weights are read), the DeepSpeed JSON, the
CLIP model, every data file and whether it holds data.prompts_per_step prompts (each task's share of a
mixture), every reward plugin (imported in a sandbox worker with a deadline and a memory cap, never in
this process), and that the run directory can be written. A run that would fail 36 s in, after Ray
started, fails here in a few seconds, with no run directory left.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rl.config import ConfigError, RunConfig

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"  # what policy/loading.py reads
# policy/model.py's input embedding and LM head: their rows are config.json's embedding_size
EMBEDDING_TENSORS = ("model.transformer.wte.weight", "model.transformer.ff_out.weight")
# the built-in text tasks' size keys, for the message when a step asks for more prompts than a task has
TASK_SIZE_KEYS = {"toy_copy": "data.toy_size"}


def check_policy_dir(path_text: str, key: str = "model.path") -> None:
    """config.json, tokenizer and weights of a policy directory; the weights checked by their headers."""
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
    check_policy_weights(path, cfg, key)


def _weight_map(path: Path, key: str) -> dict[Path, dict[str, dict]]:
    """Every weight file policy/loading.py would read -> its tensors, from the headers alone."""
    from rl.checkpoints import SafetensorsHeaderError, read_safetensors_header

    index = path / INDEX_FILE
    if index.is_file():
        try:
            where = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = {name: path / shard for name, shard in where.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{key}: {index} is not a readable shard index ({type(err).__name__}: {err}): "
                              "re-download it") from None
        missing = sorted({f.name for f in files.values() if not f.is_file()})
        if missing:
            raise ConfigError(f"{key}: {index} names shard(s) that are not there: {', '.join(missing)}: "
                              "download every shard")
    elif (path / SINGLE_FILE).is_file():
        files = None
    else:
        raise ConfigError(f"{key}: {path} has no {SINGLE_FILE} (nor {INDEX_FILE}); the rollout workers read "
                          "safetensors only: convert the weights (safetensors.torch.save_file)")
    shards = sorted(set(files.values())) if files is not None else [path / SINGLE_FILE]
    headers = {}
    for shard in shards:
        try:
            headers[shard] = read_safetensors_header(shard)
        except SafetensorsHeaderError as err:
            raise ConfigError(f"{key}: {err}: re-download or re-export the policy") from None
    for name, shard in (files or {}).items():
        if name not in headers[shard]:
            raise ConfigError(f"{key}: {index} puts {name} in {shard.name}, which does not hold it: re-download "
                              "the index and its shards together")
    return headers


def check_policy_weights(path: Path, cfg: dict, key: str = "model.path") -> None:
    """The weight files' headers against config.json: none truncated, every tensor the model needs there
    with the shape config.json implies (vocab_size, embedding_size, vocab_layout), nothing it lacks."""
    headers = _weight_map(path, key)
    shapes = {name: (tuple(t["shape"]), shard) for shard, tensors in headers.items() for name, t in tensors.items()}
    config_file = path / "config.json"
    emb = next((name for name in EMBEDDING_TENSORS if name in shapes), None)
    if emb is not None and shapes[emb][0]:
        rows, shard = shapes[emb][0][0], shapes[emb][1].name
        holds = f"the weights' {emb} has {rows} rows ({shard})"
        fix = (f": config.json contradicts the weights; set vocab_size and embedding_size (and "
               f"vocab_layout.vocab_size) to match them, or point {key} at the weights this config.json describes")
        vocab = cfg.get("vocab_size")
        embedding = cfg.get("embedding_size") if cfg.get("embedding_size") is not None else vocab
        layout = cfg.get("vocab_layout") if isinstance(cfg.get("vocab_layout"), dict) else {}
        if isinstance(embedding, int) and embedding != rows:
            said = "embedding_size" if cfg.get("embedding_size") is not None else "vocab_size (no embedding_size)"
            raise ConfigError(f"{key}: {config_file} says {said}={embedding} but {holds}{fix}")
        if isinstance(vocab, int) and vocab > rows:
            raise ConfigError(f"{key}: {config_file} says vocab_size={vocab} but {holds}{fix}")
        if "vocab_size" in layout and layout["vocab_size"] != vocab:
            raise ConfigError(f"{key}: {config_file} says vocab_layout.vocab_size={layout['vocab_size']} but "
                              f"vocab_size={vocab}; {holds}{fix}")
    expected = _expected_tensors(path, key)
    lacking = sorted(set(expected) - set(shapes))
    if lacking:
        raise ConfigError(f"{key}: {path}: the weights lack {len(lacking)} tensor(s) the model described by "
                          f"config.json needs ({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): "
                          "config.json and the weights are from different models, or a shard is missing")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise ConfigError(f"{key}: {path}: the weights hold {len(extra)} tensor(s) the model described by "
                          f"config.json does not have ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}): "
                          "config.json and the weights are from different models (n_layers?)")
    for name, shape in expected.items():
        if shapes[name][0] != shape:
            raise ConfigError(f"{key}: {config_file} implies {name} is {list(shape)} but {shapes[name][1].name} "
                              f"holds {list(shapes[name][0])}: config.json contradicts the weights (d_model, n_heads, "
                              f"mlp_hidden_size?); fix it, or point {key} at the weights it describes")


def _expected_tensors(path: Path, key: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the model config.json describes loads, from the model built on the meta
    device (no memory, no initialisation)."""
    import torch

    from policy.config import MMadaConfig
    from policy.model import MMadaModelLM

    try:
        config = MMadaConfig.from_pretrained(path)
    except (ValueError, TypeError, OSError) as err:  # policy.config.ConfigError, VocabLayoutError: ValueErrors
        raise ConfigError(f"{key}: {path / 'config.json'}: {err}") from None
    with torch.device("meta"):
        model = MMadaModelLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_deepspeed_config(cfg: RunConfig) -> None:
    from rl.builders import learner_config
    from trainer.engine import load_deepspeed_config, resolve_path

    key = "learner.deepspeed_config"
    path = resolve_path(cfg.learner.deepspeed_config)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist")
    try:
        ds = load_deepspeed_config(learner_config(cfg), cfg.learner.num_ranks, False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from None
    if cfg.rollout.max_staleness > 0 and ds.get("zero_optimization", {}).get("stage", 0) == 3:
        raise ConfigError(f"rollout.max_staleness={cfg.rollout.max_staleness} with ZeRO-3 ({key}={path}): the "
                          "behaviour policies are kept as copies of each rank's full parameters (trainer/behaviour.py), "
                          "which ZeRO-3 ranks do not hold; use ZeRO-1/2 or rollout.max_staleness=0")
    if cfg.learner.lora is not None and ds.get("zero_optimization", {}).get("stage", 0) == 3:
        raise ConfigError(f"learner.lora with ZeRO-3 ({key}={path}): not supported (wrapping a model partitioned "
                          "under zero.Init and merging partitioned base weights for publishing and export are not "
                          "built; docs/lora.md); the frozen base has no optimizer state to shard, so ZeRO-2 "
                          "(configs/deepspeed/zero2.json) keeps most of ZeRO-3's saving")


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


def _prompt_source(cfg: RunConfig, kind: str) -> str:
    """Where a task kind's prompts come from, as the config says it."""
    from rl.tasks import get_task

    name, source = cfg.data.task_source(kind)
    section = "data" if kind == "text" else f"data.{kind}"
    if getattr(source, "source", "files") == "shapes":
        return f"the built-in shapes, {section}.shapes_size"
    if get_task(name).builtin:
        size_key = TASK_SIZE_KEYS.get(name)
        return f"the built-in task {name}" + (f", {size_key}" if size_key else "")
    return f"{section}.files: {', '.join(source.files)}"


def check_batch_fits(cfg: RunConfig, dataset) -> None:
    """A step's share of each task must not exceed that task's prompts (each would be sampled as several
    groups of the same prompt in one step) unless data.allow_repeats says so."""
    from rl.data import MixtureDataset

    if cfg.data.allow_repeats:
        return
    n = cfg.data.prompts_per_step
    if isinstance(dataset, MixtureDataset):
        shares = {kind: (count, len(dataset.datasets[kind].prompts)) for kind, count in dataset.quotas(n).items()}
    else:
        shares = {"text": (n, len(dataset.prompts))}
    for kind, (want, have) in shares.items():
        if want <= have:
            continue
        where = _prompt_source(cfg, kind)
        if len(shares) > 1:
            raise ConfigError(
                f"data.prompts_per_step={n} with data.mixture gives {kind} {want} prompts per step, but {kind} has "
                f"only {have} ({where}): every step would hold the same prompt more than once, as separate groups; "
                f"lower data.prompts_per_step or data.mixture.{kind}, add prompts, or set data.allow_repeats=true")
        raise ConfigError(
            f"data.prompts_per_step={n} but the data set has only {have} prompts ({where}): every step would hold "
            f"the same prompt more than once, as separate groups; set data.prompts_per_step to {have} or less, add "
            "prompts, or set data.allow_repeats=true")


def check_gpu_memory(cfg: RunConfig) -> None:
    """A GPU run whose fullest GPU phase exceeds placement.gpu_memory_gb is refused with the numbers and
    the settings that would make it fit (rl/memory.py; docs/memory.md)."""
    from rl.memory import GIB, describe, estimate, model_shape

    if cfg.learner.num_gpus_per_rank <= 0:
        return  # CPU ranks: host memory, not modelled
    shape = model_shape(cfg)
    disaggregated = cfg.placement.mode == "disaggregated"
    rollout_gpus = cfg.rollout.num_workers if disaggregated and cfg.rollout.num_gpus_per_worker > 0 else 0
    mem = estimate(cfg, shape, cfg.learner.num_ranks, rollout_gpus)
    limit = cfg.placement.gpu_memory_gb * GIB
    if mem.fits(limit):
        return
    tries = {"learner.deepspeed_config=configs/deepspeed/zero3.json": {"stage": 3},
             "learner.gradient_checkpointing=true": {"checkpointing": True},
             "placement.offload_optimizer=true": {"offload_optimizer": True}}
    fixes = [k for k, kw in tries.items() if estimate(cfg, shape, cfg.learner.num_ranks, rollout_gpus, **kw).fits(limit)]
    more = next((n for n in (2**k for k in range(1, 9)) if n > cfg.learner.num_ranks
                 and estimate(cfg, shape, n, rollout_gpus).fits(limit)), None)
    if more:
        fixes.append(f"learner.num_ranks={more}")
    fits_with = ", ".join(fixes) or "none of the single changes (zero3, checkpointing, offload, more ranks)"
    raise ConfigError(f"placement.gpu_memory_gb: the run needs {describe(mem, cfg.placement.gpu_memory_gb)} "
                      f"with {cfg.learner.num_ranks} learner rank(s), {shape.params / 1e9:.2f}B parameters, "
                      f"placement.mode={cfg.placement.mode}; fits with: {fits_with} "
                      f"(estimate: rl/memory.py, docs/memory.md; `unigrpo plan` compares the options)")


def preflight(cfg: RunConfig, run_dir: Path) -> None:
    """Raise ConfigError (or DataError for data files) for the first thing that would fail later."""
    from rl.data import build_run_dataset

    if cfg.model.path is not None:
        check_policy_dir(cfg.model.path)
    check_deepspeed_config(cfg)
    check_gpu_memory(cfg)
    dataset = build_run_dataset(cfg)  # every row of every data file (images encoded once, cached)
    check_batch_fits(cfg, dataset)
    check_rewards(cfg)
    check_writable(run_dir)
