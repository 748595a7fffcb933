"""Checkpoints that a crash, a kill or a full disk cannot corrupt.

    store = CheckpointStore(run_dir, margin_gb=1.0)
    with store.writing(step, estimate_bytes) as tmp:   # free space checked first
        learner.save_checkpoint(tmp); (tmp / "driver_state.json").write_text(...)
    ckpt = store.latest_valid()                        # verified, else the one before

A checkpoint is written into `checkpoints/.tmp-step_N/`, closed with a manifest (every file and its
size), renamed to `step_N/` (a rename is atomic), and only then does `checkpoints/latest` (replaced
atomically too) name it. So `latest` never points at a half-written checkpoint, and a checkpoint that
later loses a file is detected on resume, which falls back to the newest one that verifies. Earlier
checkpoints are kept. Before writing, the free space is compared with the size of the previous
checkpoint (or an estimate from the policy's parameter count) plus a margin; too little is
`CheckpointSpaceError: no space left on DEVICE for run dir X (need ~N GB)`, raised before a byte is
written; a write that fails anyway (ENOSPC, or DeepSpeed's C++ stream error) is reported the same way
when the disk is what ran out, and its temporary folder is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path

MANIFEST = "MANIFEST.json"
LATEST = "latest"
TMP_PREFIX = ".tmp-"
STEP_RE = re.compile(r"^step_(\d+)$")
GB = 1024**3
# per parameter: fp32 weights (4) + Adam moments (8) + the exported policy (4)
CHECKPOINT_BYTES_PER_PARAM = 16
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                     "BOOL": 1}


class CheckpointSpaceError(OSError):
    """Not enough free space for the next checkpoint; the previous checkpoint is intact."""


def free_bytes(path: Path) -> int:
    """Free space where `path` (or its nearest existing parent) lives. The one probe the space check uses."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def device_of(path: Path) -> str:
    """The device (from /proc/mounts) holding `path`; its mount point where that is not available."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    path = path.resolve()
    best, device = Path("/"), "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount = line.split()[:2]
            mount_path = Path(mount.replace("\\040", " "))
            if (path == mount_path or mount_path in path.parents) and len(mount_path.parts) >= len(best.parts):
                best, device = mount_path, dev
    return device


def policy_parameter_count(policy_dir: Path) -> int:
    """Parameters in a policy directory's safetensors files, read from their headers (no weights loaded)."""
    total = 0
    for f in Path(policy_dir).glob("*.safetensors"):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for d in entry["shape"]:
                    count *= d
                total += count
    return total


def estimate_checkpoint_bytes(policy_dir: Path) -> int:
    return policy_parameter_count(policy_dir) * CHECKPOINT_BYTES_PER_PARAM


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def step_of(path: Path) -> int:
    m = STEP_RE.match(path.name)
    return int(m.group(1)) if m else -1


class CheckpointStore:
    def __init__(self, run_dir: Path, margin_gb: float = 1.0):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.margin_bytes = int(margin_gb * GB)

    def path(self, step: int) -> Path:
        """Where checkpoint `step` lives (the one place that spells `step_N`)."""
        return self.root / f"step_{step}"

    # ---- writing ---------------------------------------------------------------------------------
    def check_space(self, need_bytes: int) -> None:
        free = free_bytes(self.root)
        if free < need_bytes + self.margin_bytes:
            raise self._no_space(need_bytes, free)

    def _no_space(self, need_bytes: int, free: int, detail: str = "") -> CheckpointSpaceError:
        return CheckpointSpaceError(
            errno.ENOSPC,
            f"no space left on {device_of(self.root)} for run dir {self.run_dir} (need "
            f"~{(need_bytes + self.margin_bytes) / GB:.2f} GB: ~{need_bytes / GB:.2f} GB checkpoint + "
            f"{self.margin_bytes / GB:.2f} GB margin, {free / GB:.2f} GB free){detail}; the previous "
            f"checkpoint is kept: free space (or lower run.checkpoint_margin_gb), then resume")

    def need_bytes(self, estimate_bytes: int) -> int:
        """The previous checkpoint's size (the best predictor of the next), else the estimate."""
        previous = self.latest_valid(quiet=True)
        return dir_bytes(previous) if previous is not None else estimate_bytes

    @contextlib.contextmanager
    def writing(self, step: int, estimate_bytes: int = 0):
        """Yield an empty temporary folder to write checkpoint `step` into; publish it on success."""
        self.check_space(self.need_bytes(estimate_bytes))
        final = self.path(step)
        tmp = self.root / f"{TMP_PREFIX}{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-write
        tmp.mkdir(parents=True)
        try:
            yield tmp
            self._write_manifest(tmp, step)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, Exception) and self._ran_out_of_space(exc, estimate_bytes):
                need = self.need_bytes(estimate_bytes)
                raise self._no_space(need, free_bytes(self.root), f" while writing step_{step}: "
                                     f"{type(exc).__name__}: {str(exc)[:200]}") from exc
            raise
        if final.exists():  # the same step written again (e.g. stopped right after a resume)
            old = self.root / f"{TMP_PREFIX}old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        self._point_latest(final)

    def _ran_out_of_space(self, exc: Exception, estimate_bytes: int) -> bool:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        # DeepSpeed/torch report a full disk as a RuntimeError from a C++ stream: ask the disk
        return free_bytes(self.root) < self.need_bytes(estimate_bytes) + self.margin_bytes

    def _write_manifest(self, tmp: Path, step: int) -> None:
        files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        data = json.dumps({"step": step, "files": files}, indent=1)
        with (tmp / MANIFEST).open("w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _point_latest(self, ckpt: Path) -> None:
        tmp = self.root / f"{TMP_PREFIX}{LATEST}"
        with tmp.open("w") as fh:
            fh.write(ckpt.name)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / LATEST)

    # ---- reading ---------------------------------------------------------------------------------
    def verify(self, ckpt: Path) -> str | None:
        """None if `ckpt` is complete, else what is wrong with it."""
        try:
            manifest = json.loads((ckpt / MANIFEST).read_text())
        except FileNotFoundError:
            return "no manifest (written partly, or not by this version)"
        except (OSError, ValueError) as err:
            return f"unreadable manifest ({err})"
        for rel, size in manifest.get("files", {}).items():
            f = ckpt / rel
            if not f.is_file():
                return f"{rel} is missing"
            if f.stat().st_size != size:
                return f"{rel} has {f.stat().st_size} bytes, the manifest says {size}"
        return None

    def candidates(self) -> list[Path]:
        """`latest` first, then every step_N newest first."""
        steps = sorted((p for p in self.root.glob("step_*") if p.is_dir() and step_of(p) >= 0),
                       key=step_of, reverse=True)
        named = self.root / LATEST
        first = []
        if named.is_file():
            first = [self.root / named.read_text().strip()]
        return first + [p for p in steps if p not in first]

    def latest_valid(self, quiet: bool = False) -> Path | None:
        for ckpt in self.candidates():
            problem = self.verify(ckpt) if ckpt.is_dir() else "missing"
            if problem is None:
                return ckpt
            if not quiet:
                print(f"warning: checkpoint {ckpt} is not usable ({problem}); trying the one before",
                      file=sys.stderr, flush=True)
        return None
