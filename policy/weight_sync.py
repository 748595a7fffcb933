"""Receiving policy weights from the learner, by either transport, and the wire format both share.

(a) Ray object store: the learner publishes `{"version": int, "state": {name: np.ndarray},
    "dtypes": {name: torch dtype name}}`; numpy has no bfloat16, so bf16 tensors travel as their
    uint16 bit pattern and `dtypes` says how to view them back. `load_state_into(model, payload)`.
(b) torch.distributed broadcast: learner rank 0 (group rank 0) and the rollout workers (ranks
    1..W-1) form their own process group, separate from DeepSpeed's world. It is built directly from
    a TCPStore (hosted by rank 0) and a ProcessGroupGloo / ProcessGroupNCCL, without
    `init_process_group`, so it neither needs nor disturbs a default group (the "stateless group"
    verl and OpenRLHF use for the same purpose). Protocol, all broadcasts from rank 0:
        int64[1] header length -> uint8[header] JSON {version, entries: [[name, dtype, shape], ...]}
        -> for each entry its raw bytes (uint8), copied straight into the receiver's parameter.

Only the rollout side lives here (rollout may import `policy` only); the learner imports the
sender half (`init_weight_group`, `send_weights`) from here too, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.bfloat16, torch.float16, torch.float64,
                                                       torch.int64, torch.int32, torch.uint8, torch.bool)}


# ---- (a) numpy payloads ------------------------------------------------------------------------------
def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy()
    return t.numpy()


def numpy_to_tensor(a: np.ndarray, dtype_name: str | None = None) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    t = torch.from_numpy(a if a.flags.writeable else a.copy())
    if dtype_name == "bfloat16" and t.dtype != torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t


def make_payload(version: int, state: Mapping[str, torch.Tensor], lora: dict | None = None) -> dict:
    """lora: {"scale": s} when `state` holds LoRA adapters (policy/lora.py) instead of full weights."""
    payload = {
        "version": int(version),
        "state": {k: tensor_to_numpy(v) for k, v in state.items()},
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
    }
    if lora is not None:
        payload["lora"] = lora
    return payload


@torch.no_grad()
def load_state_into(
    model: torch.nn.Module,
    state: Mapping[str, np.ndarray | torch.Tensor] | dict,
    strict: bool = True,
    dtypes: Mapping[str, str] | None = None,
) -> int | None:
    """Copy weights into `model` in place (cast to each parameter's dtype and device).

    `state` is a name -> array/tensor dict, or a payload from `make_payload` (then its version is
    returned). strict: every model parameter must be present and no unknown name may appear."""
    version = None
    if "state" in state and isinstance(state.get("state"), Mapping):
        version, dtypes, state = state.get("version"), state.get("dtypes"), state["state"]
    dtypes = dtypes or {}
    targets = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    unknown = sorted(set(state) - set(targets))
    missing = sorted(set(dict(model.named_parameters())) - set(state))
    if strict and (unknown or missing):
        raise KeyError(f"weights do not match the model: missing {missing[:5]}, unexpected {unknown[:5]}")
    for name, value in state.items():
        if name not in targets:
            continue
        src = value if isinstance(value, torch.Tensor) else numpy_to_tensor(value, dtypes.get(name))
        dst = targets[name]
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{name}: shape {tuple(src.shape)} does not match the model's {tuple(dst.shape)}")
        dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
    return version


# ---- (b) broadcast group -------------------------------------------------------------------------------
@dataclass
class WeightGroup:
    """The broadcast group and the TCPStore it was built on (rank 0's store is the server: keep it)."""

    pg: dist.ProcessGroup
    store: dist.Store
    backend: str
    rank: int
    world_size: int


def init_weight_group(
    host: str, port: int, rank: int, world_size: int, backend: str = "gloo", timeout_s: float = 300.0
) -> WeightGroup:
    """A process group of `world_size` members outside any default group. Rank 0 hosts the store.
    Every member must call this at about the same time (it is a rendezvous)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, rank == 0, timeout=timeout, wait_for_workers=False)
    prefixed = dist.PrefixStore("unigrpo_weights", store)
    if backend == "gloo":
        pg = dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
    elif backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        pg = dist.ProcessGroupNCCL(prefixed, rank, world_size, options)
    else:
        raise ValueError(f"backend={backend!r}: expected 'gloo' or 'nccl'")
    return WeightGroup(pg, store, backend, rank, world_size)


def _device_of(group: WeightGroup) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if group.backend == "nccl" else torch.device("cpu")


def _broadcast(group: WeightGroup, tensor: torch.Tensor) -> None:
    group.pg.broadcast(tensor, 0).wait()


def send_weights(
    pg: WeightGroup,
    version: int,
    entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
    tensors: Iterable[torch.Tensor],
    lora: dict | None = None,
) -> None:
    """Rank 0: announce (name, dtype, shape) of every entry, then stream the tensors in that order.
    lora: {"scale": s} when the entries are LoRA adapters (the header carries it)."""
    device = _device_of(pg)
    header = json.dumps(
        {"version": int(version), "entries": [[n, str(d).removeprefix("torch."), list(s)] for n, d, s in entries],
         "lora": lora}
    ).encode()
    _broadcast(pg, torch.tensor([len(header)], dtype=torch.int64, device=device))
    _broadcast(pg, torch.frombuffer(bytearray(header), dtype=torch.uint8).to(device))
    count = 0
    for (name, dtype, shape), t in zip(entries, tensors):
        if t.dtype != dtype or tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: sending {t.dtype}{tuple(t.shape)}, announced {dtype}{tuple(shape)}")
        _broadcast(pg, t.detach().to(device).contiguous().reshape(-1).view(torch.uint8))
        count += 1
    if count != len(entries):
        raise ValueError(f"announced {len(entries)} tensors, sent {count}")


def receive_weights(pg: WeightGroup, sink, header_out: dict | None = None) -> int:
    """Ranks > 0: receive one publication; call sink(name, tensor) per entry; return the version.
    header_out: filled with the header (version, entries, lora) before the first sink call."""
    device = _device_of(pg)
    length = torch.zeros(1, dtype=torch.int64, device=device)
    _broadcast(pg, length)
    raw = torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    _broadcast(pg, raw)
    header = json.loads(bytes(raw.cpu().numpy()).decode())
    if header_out is not None:
        header_out.update(header)
    for name, dtype_name, shape in header["entries"]:
        dtype = _DTYPES[dtype_name]
        numel = int(np.prod(shape)) if shape else 1
        buf = torch.empty(numel * torch.empty((), dtype=dtype).element_size(), dtype=torch.uint8, device=device)
        _broadcast(pg, buf)
        sink(name, buf.view(dtype).reshape(shape))
    return int(header["version"])


class BroadcastReceiver:
    """A rollout worker's end of the broadcast transport.

        receiver = BroadcastReceiver(host, port, rank, world_size)   # rendezvous with learner rank 0
        version = receiver.receive(model)                             # blocks until rank 0 publishes
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 timeout_s: float = 300.0) -> None:
        if not 0 < rank < world_size:
            raise ValueError(f"receiver rank {rank} must lie in [1, {world_size}); rank 0 is the learner")
        self.rank, self.world_size = rank, world_size
        self.group = init_weight_group(host, port, rank, world_size, backend, timeout_s)

    @torch.no_grad()
    def receive(self, model: torch.nn.Module, strict: bool = True, adapters=None) -> int:
        """Full weights are copied into `model`; LoRA adapters (the header says so) are collected and handed
        to `adapters.apply(model, state, scale)` (a policy.lora.AdapterApplier) after the last one."""
        targets = dict(model.named_parameters())
        seen: set[str] = set()
        problems: list[str] = []
        header: dict = {}
        adapter_state: dict[str, torch.Tensor] = {}

        def sink(name: str, tensor: torch.Tensor) -> None:
            # never raise mid-stream: the sender would be left waiting; report after the last tensor
            if header.get("lora") is not None:
                adapter_state[name] = tensor.clone()
                return
            dst = targets.get(name)
            if dst is None:
                problems.append(f"unknown weight {name!r}")
            elif tuple(dst.shape) != tuple(tensor.shape):
                problems.append(f"{name}: received shape {tuple(tensor.shape)}, model has {tuple(dst.shape)}")
            else:
                dst.copy_(tensor.to(device=dst.device, dtype=dst.dtype))
                seen.add(name)

        version = receive_weights(self.group, sink, header)
        if header.get("lora") is not None:
            if adapters is None:
                raise KeyError(f"publication {version} holds LoRA adapters: pass an AdapterApplier")
            adapters.apply(model, adapter_state, float(header["lora"]["scale"]))
            return version
        missing = sorted(set(targets) - seen)
        if strict and (problems or missing):
            raise KeyError(f"publication {version}: {problems[:5]}, missing {missing[:5]}")
        return version

    def receive_state(self) -> tuple[int, dict[str, torch.Tensor]]:
        """The publication as a name -> CPU tensor dict (for tests and tools)."""
        state: dict[str, torch.Tensor] = {}
        version = receive_weights(self.group, lambda name, t: state.__setitem__(name, t.cpu().clone()))
        return version, state
