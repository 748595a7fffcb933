"""Load a policy for ZeRO-3 training without a full copy per rank.

    model, read = build_partitioned(policy_path, ds_config)   # every rank calls this, together

The model is built under `deepspeed.zero.Init`, so each parameter is partitioned as soon as its module
is constructed (at most one module's random init is ever whole); then every rank reads from the
safetensors files only the elements of its own partition. ZeRO-3 keeps parameter p as the flat vector
p.view(-1), padded to world * part and cut into equal pieces; rank r holds

    flat[r * part : (r + 1) * part]          part = p.ds_tensor.numel()

A flat range of a [d0, d1, ...] tensor covers rows floor(a / row) .. ceil(b / row) of its first
dimension (row = d1 * d2 * ...), so the rank reads those rows with safetensors' slicing and cuts the
range out. Per rank, the checkpoint elements read and the parameter memory held are about 1/world of
the model (benchmarks/zero3_load.py measures both, and peak RSS, against a full load per rank).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from policy.loading import weight_files


def read_flat_range(handle, name: str, start: int, stop: int) -> torch.Tensor:
    """Elements [start, stop) of tensor `name` flattened, reading only the rows that hold them."""
    sl = handle.get_slice(name)
    shape = sl.get_shape()
    if len(shape) <= 1:
        return sl[start:stop].reshape(-1)
    row = math.prod(shape[1:])
    r0, r1 = start // row, math.ceil(stop / row)
    return sl[r0:r1].reshape(-1)[start - r0 * row : stop - r0 * row]


@torch.no_grad()
def load_partitions(model: torch.nn.Module, policy_path: str | Path, rank: int) -> int:
    """Fill this rank's partition of every ZeRO-3 parameter from the checkpoint; returns elements read.
    Every parameter must be in the checkpoint, with the model's shape."""
    from safetensors import safe_open

    files = weight_files(policy_path)
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(files))
    if missing:
        raise KeyError(f"{policy_path}: the checkpoint lacks {missing[:5]} ({len(missing)} parameters)")
    read = 0
    with _Handles(safe_open) as handles:
        for name, p in params.items():
            shape = handles[files[name]].get_slice(name).get_shape()
            if tuple(shape) != tuple(p.ds_shape):
                raise ValueError(f"{policy_path}: {name} has shape {tuple(shape)}, the model {tuple(p.ds_shape)}")
            local = p.ds_tensor
            part = local.numel()
            start, stop = rank * part, min((rank + 1) * part, p.ds_numel)
            local.zero_()  # the padding past ds_numel stays zero
            if start < stop:
                chunk = read_flat_range(handles[files[name]], name, start, stop)
                local.view(-1)[: stop - start].copy_(chunk.to(local.dtype))
                read += stop - start
    return read


class _Handles(dict):
    """Open safetensors files on first use, close them all at the end."""

    def __init__(self, opener) -> None:
        super().__init__()
        self._opener = opener

    def __missing__(self, path: Path):
        handle = self[path] = self._opener(str(path), "pt").__enter__()
        return handle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for h in self.values():
            h.__exit__(None, None, None)


def build_partitioned(policy_path: str | Path, ds_config: dict) -> tuple[torch.nn.Module, int]:
    """The policy under ZeRO-3, each rank holding and having read only its own partition; returns
    (model, checkpoint elements this rank read). The dtype is the DeepSpeed config's (bf16 when
    bf16.enabled, else fp32), as the engine would cast a fully loaded model to."""
    import torch.distributed as dist

    from policy.config import MMadaConfig
    from policy.model import MMadaModelLM
    from trainer.engine import import_deepspeed

    deepspeed = import_deepspeed()
    config = MMadaConfig.from_pretrained(policy_path)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, remote_device=None, pin_memory=False):
        model = MMadaModelLM(config)
    return model, load_partitions(model, policy_path, dist.get_rank())
