"""Checkpoints that a crash, a kill or a full disk cannot corrupt, and the run's disk usage.

    store = CheckpointStore(run_dir, margin_gb=1.0)
    with store.writing(step, estimate_bytes) as tmp:   # free space checked first
        learner.save_checkpoint(tmp); (tmp / "driver_state.json").write_text(...)
    store.prune(newest, keep=3, protect={best})        # after `newest` verifies: the newest `keep` stay
    ckpt = store.latest_valid()                        # verified, else the one before
    store.why_none_valid()                             # each candidate and why it was rejected

A checkpoint is written into `checkpoints/.tmp-step_N/`, closed with a manifest (every file and its
size), renamed to `step_N/` (a rename is atomic), and only then does `checkpoints/latest` (replaced
atomically too) name it. So `latest` never points at a half-written checkpoint, and a checkpoint that
later loses a file is detected on resume, which falls back to the newest one that verifies. Once a new
checkpoint verifies, older ones beyond `run.keep_checkpoints` are removed (the one with the best held-out
accuracy is kept too; null keeps all). Before writing, the free space is compared with the size of the
previous checkpoint (or an estimate from the policy's parameter count) plus a margin; too little is
`CheckpointSpaceError: no space left on DEVICE for run dir X (need ~N MB ...)`, raised before a byte is
written; a write that fails anyway (ENOSPC, or DeepSpeed's C++ stream error) is reported the same way
when the disk is what ran out, and its temporary folder is removed. `out_of_space` gives the same error
for a disk that filled up anywhere else in a step (the rollout store, metrics.jsonl). Sizes in messages
are `human_bytes` (B / KB / MB / GB).

`read_safetensors_header` is the one reader of safetensors headers (8-byte little-endian length, then a
JSON header: dtype, shape, data_offsets per tensor): the size estimate here and the preflight's weight
checks (rl/preflight.py) both use it; it refuses a file the header does not exactly cover.
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
                     "BOOL": 1, "U64": 8, "U32": 4, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_SAFETENSORS_HEADER = 100 * 2**20  # the format's own limit on the JSON header
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class CheckpointSpaceError(OSError):
    """Not enough free space for the next checkpoint (or the disk filled up during a step); the previous
    checkpoint is intact."""


class SafetensorsHeaderError(ValueError):
    """A safetensors file whose header cannot be read or does not describe the file (truncated, corrupt)."""


def human_bytes(n: float) -> str:
    """A size in the unit that fits: 812 B, 70.0 KB, 2.7 MB, 1.25 GB (binary units)."""
    if round(abs(n)) < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if round(abs(n), 1) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.2f} GB"


def _chain(err: BaseException | None):
    """`err`, then what it was raised from or during, and so on."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an exception it was raised from or during, is a full disk (ENOSPC / EDQUOT)."""
    return any(isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS for e in _chain(err))


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


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensors of a safetensors file, {name: {"dtype", "shape", "data_offsets"}}, from its header
    alone (no weights read). Raises SafetensorsHeaderError naming the file when the header is unreadable,
    an entry is malformed, or the tensors it describes do not end exactly where the file ends."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise SafetensorsHeaderError(f"{path} has {human_bytes(size)}, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise SafetensorsHeaderError(
                f"{path}: its header claims {human_bytes(n)} but the file has {human_bytes(size)} "
                "(truncated, or not a safetensors file)")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise SafetensorsHeaderError(f"{path}: its header is not valid JSON (corrupt)") from None
    if not isinstance(header, dict):
        raise SafetensorsHeaderError(f"{path}: its header is not a JSON object (corrupt)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for name, entry in tensors.items():
        try:
            dtype, shape, (begin, stop) = entry["dtype"], list(entry["shape"]), entry["data_offsets"]
            if not (all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(begin, int)
                    and isinstance(stop, int) and 0 <= begin <= stop):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise SafetensorsHeaderError(f"{path}: header entry {name!r} is malformed (corrupt)") from None
        count = 1
        for d in shape:
            count *= d
        if dtype in SAFETENSORS_BYTES and stop - begin != count * SAFETENSORS_BYTES[dtype]:
            raise SafetensorsHeaderError(f"{path}: tensor {name!r} ({dtype} {shape}) spans {stop - begin} bytes "
                                         "in the header (corrupt)")
        end = max(end, stop)
    data = size - 8 - n
    if end != data:
        what = "truncated" if end > data else "longer than its header says"
        raise SafetensorsHeaderError(f"{path} is {what}: its header describes {human_bytes(end)} of tensor data, "
                                     f"the file holds {human_bytes(data)}")
    return tensors


def policy_parameter_count(policy_dir: Path) -> int:
    """Parameters in a policy directory's safetensors files, read from their headers (no weights loaded)."""
    total = 0
    for f in Path(policy_dir).glob("*.safetensors"):
        for entry in read_safetensors_header(f).values():
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
            f"~{human_bytes(need_bytes + self.margin_bytes)}: ~{human_bytes(need_bytes)} checkpoint + "
            f"{human_bytes(self.margin_bytes)} margin, {human_bytes(free)} free){detail}; the previous "
            f"checkpoint is kept: free space (or lower run.checkpoint_margin_gb), then resume")

    def out_of_space(self, err: BaseException, step: int) -> CheckpointSpaceError:
        """The disk filled up during the run after step `step` (the rollout store, metrics.jsonl, ...): the
        same one-line error as a checkpoint that does not fit. A restart would meet the same full disk."""
        first = next((e for e in _chain(err) if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS), err)
        where = f" writing {first.filename}" if getattr(first, "filename", None) else ""
        return CheckpointSpaceError(
            errno.ENOSPC,
            f"no space left on {device_of(self.root)} for run dir {self.run_dir}: the disk filled up after step "
            f"{step}{where} ({first.strerror or first}; {human_bytes(free_bytes(self.root))} free now); stopped "
            f"rather than restarted (a restart would meet the same full disk): free space, then resume")

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
        if disk_full(exc):
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

    def why_none_valid(self) -> str:
        """Each candidate and why it was rejected, in one line (for a resume that finds none)."""
        if not self.root.is_dir():
            return f"{self.root} does not exist (the run stopped before its first checkpoint)"
        named = (self.root / LATEST).read_text().strip() if (self.root / LATEST).is_file() else None
        reasons = []
        for ckpt in self.candidates():
            problem = self.verify(ckpt) if ckpt.is_dir() else "does not exist"
            by_latest = " (named by latest)" if ckpt.name == named else ""
            reasons.append(f"{ckpt.name}{by_latest}: {problem or 'verifies'}")
        if not reasons:
            return f"{self.root} holds no step_N checkpoint"
        return f"in {self.root}: " + "; ".join(reasons)

    # ---- pruning ---------------------------------------------------------------------------------
    def prune(self, newest: Path, keep: int | None, protect: set[Path] | frozenset = frozenset()) -> list[Path]:
        """Once `newest` verifies, remove the checkpoints older than it beyond the newest `keep` that verify
        (`newest` counts), except those in `protect`; None keeps all. Each is renamed aside before it is
        deleted, so a crash midway never leaves a half-deleted step_N. Returns what was removed."""
        if keep is None or self.verify(newest) is not None:
            return []
        for left in self.root.glob(f"{TMP_PREFIX}pruned-*"):  # from a run killed while pruning
            shutil.rmtree(left, ignore_errors=True)
        older = sorted((p for p in self.root.glob("step_*") if p.is_dir() and 0 <= step_of(p) < step_of(newest)),
                       key=step_of, reverse=True)
        kept, removed = 1, []
        for ckpt in older:
            if kept < keep and self.verify(ckpt) is None:
                kept += 1
            elif ckpt not in protect:
                aside = self.root / f"{TMP_PREFIX}pruned-{ckpt.name}"
                ckpt.rename(aside)
                shutil.rmtree(aside, ignore_errors=True)
                removed.append(ckpt)
        return removed
