"""`unigrpo export RUN_OR_CHECKPOINT OUT`: a merged, `from_pretrained`-loadable policy directory.

    unigrpo export runs/demo out/policy                    # the run's latest checkpoint that verifies
    unigrpo export runs/demo/checkpoints/step_150 out/policy
    unigrpo export CKPT OUT --base /models/MMaDA-8B-MixCoT # the base the adapters were trained on, moved

A LoRA run's checkpoint holds its adapters (`adapter/`, peft's layout, and the base policy directory they
belong to): the export loads that base through policy/loading.py, applies the adapters, and writes every
weight merged (W = W0 + s * B A, policy/lora.py `merge`) under the reference MMaDA names, so the directory
is an ordinary policy: no `base_model.model.` prefixes, no `lora_` tensors. A full fine-tuning checkpoint's
`policy/` already is that directory; it is copied. The written directory is loaded back once to check it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def find_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or a run directory's latest checkpoint that verifies (rl/checkpoints.py)."""
    from rl.checkpoints import CheckpointStore

    if (path / "policy" / "config.json").is_file():
        return path
    if (path / "checkpoints").is_dir():
        store = CheckpointStore(path)
        ckpt = store.latest_valid(quiet=True)
        if ckpt is None:
            raise FileNotFoundError(f"{path}: no checkpoint there that verifies ({store.why_none_valid()})")
        return ckpt
    raise FileNotFoundError(f"{path}: neither a checkpoint (no policy/config.json) nor a run directory "
                            "(no checkpoints/)")


def export_policy(checkpoint: Path, out: Path, base: Path | None = None) -> dict:
    """Write the checkpoint's policy, merged, to `out`; what was done, as a dict."""
    from policy import lora
    from policy.loading import load_policy, save_policy

    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    adapter_dir = checkpoint / lora.ADAPTER_DIR
    if not adapter_dir.is_dir():  # full fine-tuning: the checkpoint's exported policy is the whole answer
        shutil.copytree(checkpoint / "policy", out, dirs_exist_ok=True)
        load_policy(out)
        return {"checkpoint": str(checkpoint), "out": str(out), "lora": False}
    base = base or lora.base_of(adapter_dir)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"the adapters' base policy {base} is not there: pass --base DIR")
    model = lora.load_adapted(load_policy(base).model, adapter_dir)
    state = dict(lora.merged_tensors(model))
    save_policy(out, model.config, state, base)
    load_policy(out)
    return {"checkpoint": str(checkpoint), "out": str(out), "lora": True, "base": str(base),
            "tensors": len(state)}


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="unigrpo export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run directory (its latest checkpoint) or a checkpoint directory")
    parser.add_argument("out", help="the policy directory to write (must not exist, or be empty)")
    parser.add_argument("--base", help="the base policy directory of a LoRA run (default: the one it was trained on)")
    args = parser.parse_args(argv)
    try:
        checkpoint = find_checkpoint(Path(args.checkpoint))
        done = export_policy(checkpoint, Path(args.out), Path(args.base) if args.base else None)
    except (FileNotFoundError, FileExistsError) as err:
        print(f"unigrpo: {err}", file=sys.stderr)
        return EXIT_USAGE
    kind = f"adapters merged into {done['base']}" if done["lora"] else "full fine-tuning, copied"
    print(f"unigrpo: exported {checkpoint} ({kind}) to {done['out']}")
    return EXIT_OK
