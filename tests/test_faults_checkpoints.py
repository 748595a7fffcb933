"""Fault injection, checkpoints (no Ray): a crash while writing, a checkpoint that loses a file, a
`latest` that names nothing, a full disk (the free-space probe patched, and ENOSPC raised mid-write).
The driver-level versions (a real DeepSpeed checkpoint, resume) are in tests/test_faults_run.py."""

import errno
import re

import pytest

import rl.checkpoints as ck
from rl.checkpoints import CheckpointSpaceError, CheckpointStore


def _write(store, step, payload=b"x" * 100, estimate=0):
    with store.writing(step, estimate) as tmp:
        (tmp / "engine").mkdir()
        (tmp / "engine" / "weights.pt").write_bytes(payload)
        (tmp / "driver_state.json").write_text(f'{{"step": {step}}}')
    return store.root / f"step_{step}"


def test_commit_is_atomic_and_a_crash_mid_write_leaves_the_previous(tmp_path):
    store = CheckpointStore(tmp_path, margin_gb=0)
    first = _write(store, 1)
    assert (store.root / "latest").read_text() == "step_1" and store.verify(first) is None
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with store.writing(2) as tmp:
            (tmp / "engine").mkdir()
            (tmp / "engine" / "weights.pt").write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in store.root.iterdir()) == ["latest", "step_1"]  # no step_2, no temp folder
    assert store.latest_valid() == first


def test_resume_falls_back_past_a_damaged_or_missing_checkpoint(tmp_path, capsys):
    store = CheckpointStore(tmp_path, margin_gb=0)
    first, second = _write(store, 1), _write(store, 2)
    assert store.latest_valid() == second
    (second / "engine" / "weights.pt").write_bytes(b"short")  # a file lost its tail
    assert store.latest_valid() == first
    assert "weights.pt has 5 bytes" in capsys.readouterr().err
    (store.root / "latest").write_text("step_9")  # latest names a folder that is not there
    assert store.latest_valid() == first
    # a run killed mid-write left a temporary folder and a step without a manifest: neither is chosen
    (store.root / ".tmp-step_3").mkdir()
    (store.root / "step_4").mkdir()
    assert store.latest_valid() == first
    third = _write(store, 3)  # the leftover temp folder of the same step is replaced
    assert store.latest_valid() == third and not (store.root / ".tmp-step_3").exists()


def test_full_disk_is_refused_before_writing_with_a_clear_message(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path / "run", margin_gb=1.0)
    first = _write(store, 1, payload=b"x" * 4096)
    monkeypatch.setattr(ck, "free_bytes", lambda path: 512 * 1024**2)  # 0.5 GB free < 1 GB margin
    with pytest.raises(CheckpointSpaceError) as err:
        _write(store, 2)
    msg = str(err.value)
    assert re.search(rf"no space left on \S+ for run dir {re.escape(str(tmp_path / 'run'))} \(need ~1\.00 GB", msg)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in store.root.iterdir()) == ["latest", "step_1"]
    assert store.latest_valid() == first


def test_disk_filling_up_during_the_write_is_reported_and_cleaned(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, margin_gb=0)
    first = _write(store, 1)
    with pytest.raises(CheckpointSpaceError, match="no space left on .* while writing step_2: OSError"):
        with store.writing(2) as tmp:
            (tmp / "part").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    # DeepSpeed's C++ stream error is a RuntimeError: the disk is asked whether it is full
    with pytest.raises(CheckpointSpaceError, match="while writing step_3: RuntimeError: .*inline_container"):
        with store.writing(3) as tmp:
            (tmp / "part").write_bytes(b"x")
            monkeypatch.setattr(ck, "free_bytes", lambda path: 0)  # the disk filled up meanwhile
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="a bug, not the disk"):  # any other failure stays itself
        with store.writing(3):
            raise RuntimeError("a bug, not the disk")
    assert sorted(p.name for p in store.root.iterdir()) == ["latest", "step_1"] and store.latest_valid() == first


def test_checkpoint_size_estimate_reads_safetensors_headers(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((10, 20), np.float32), "b": np.zeros(5, np.float16)}, tmp_path / "model.safetensors")
    assert ck.policy_parameter_count(tmp_path) == 205
    assert ck.estimate_checkpoint_bytes(tmp_path) == 205 * ck.CHECKPOINT_BYTES_PER_PARAM


def test_metrics_log_with_a_half_written_line_still_resumes(tmp_path):
    """A process killed mid-write leaves a half line in metrics.jsonl; a resume must not die on it."""
    from rl.metrics import MetricsLog

    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.log(step, {"reward/mean": float(step)})
    with log.path.open("a") as fh:
        fh.write('{"step": 4, "reward/me')  # killed here
    assert [r["step"] for r in log.read()] == [1, 2, 3] and log.bad_lines == 1
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2] and log.bad_lines == 0
    assert not list(tmp_path.glob("*.tmp"))
    log.log(3, {"reward/mean": 3.5})
    assert [r["reward/mean"] for r in log.read()] == [1.0, 2.0, 3.5]
