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


# ---- issue #23 §4: sizes that fit, pruning, a disk that fills up during a step, a resume that finds none --
def test_sizes_use_units_that_fit():
    assert [ck.human_bytes(n) for n in (0, 812, 1023, 70 * 1024, int(2.7 * 1024**2), 1024**3, 1.25 * 1024**3)] == \
        ["0 B", "812 B", "1023 B", "70.0 KB", "2.7 MB", "1.00 GB", "1.25 GB"]
    assert ck.human_bytes(1024**2 - 1) == "1.0 MB"  # never "1024.0 KB"


def test_a_small_checkpoint_on_a_nearly_full_disk_is_reported_in_units_that_fit(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path / "run", margin_gb=0)
    _write(store, 1, payload=b"x" * int(2.7 * 1024**2))
    monkeypatch.setattr(ck, "free_bytes", lambda path: 70 * 1024)
    with pytest.raises(CheckpointSpaceError) as err:
        _write(store, 2)
    assert "(need ~2.7 MB: ~2.7 MB checkpoint + 0 B margin, 70.0 KB free)" in str(err.value)


def test_safetensors_header_reader_refuses_a_file_its_header_does_not_cover(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    f = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((10, 20), np.float32), "b": np.zeros(5, np.float16)}, f)
    whole = f.read_bytes()
    assert {k: v["shape"] for k, v in ck.read_safetensors_header(f).items()} == {"a": [10, 20], "b": [5]}
    f.write_bytes(whole[:-10])
    with pytest.raises(ck.SafetensorsHeaderError, match=r"is truncated: its header describes 810 B of tensor data, "
                                                         r"the file holds 800 B"):
        ck.read_safetensors_header(f)
    f.write_bytes(whole + b"tail")
    with pytest.raises(ck.SafetensorsHeaderError, match="is longer than its header says"):
        ck.read_safetensors_header(f)
    f.write_bytes(whole[:5])
    with pytest.raises(ck.SafetensorsHeaderError, match="5 B, too short for a safetensors header"):
        ck.policy_parameter_count(tmp_path)  # the size estimate reads the same headers


def _metrics(run_dir, evals):
    from rl.metrics import MetricsLog

    log = MetricsLog(run_dir)
    for step in range(1, 8):
        log.log(step, {"reward/mean": 0.5})
        if step in evals:
            log.log(step, {"eval/accuracy": evals[step]})
    return log


def test_old_checkpoints_are_pruned_once_the_new_one_verifies(tmp_path):
    from rl.recovery import RunCheckpoints

    ckpts = RunCheckpoints(tmp_path, 0.0, 0)
    log = _metrics(tmp_path, {2: 0.9, 4: 0.5, 6: 0.9, 7: 0.2})  # the best held-out: step 6 (ties: the later)
    steps = lambda: sorted(ck.step_of(p) for p in ckpts.store.root.glob("step_*"))  # noqa: E731
    for step in range(1, 6):
        newest = _write(ckpts.store, step)
        ckpts.prune(newest, 2, log)
    assert steps() == [2, 4, 5]  # newest two + step 2, the best evaluated checkpoint so far
    (ckpts.path(4) / "engine" / "weights.pt").write_bytes(b"lost its tail")
    ckpts.prune(_write(ckpts.store, 6), 2, log)
    assert steps() == [5, 6]  # a damaged one does not count as kept (and goes); step 6 is now the best
    half = _write(ckpts.store, 7)
    (half / "driver_state.json").unlink()
    assert ckpts.prune(half, 2, log) == [] and steps() == [5, 6, 7]  # pruned only after the new one verifies
    assert ckpts.prune(_write(ckpts.store, 8), None, log) == [] and steps() == [5, 6, 7, 8]  # null keeps all
    ckpts.prune(_write(ckpts.store, 9), 1, log)
    assert steps() == [6, 9] and ckpts.latest() == ckpts.path(9)
    assert not list(ckpts.store.root.glob(".tmp-*"))


@pytest.mark.parametrize("steps, where", [(10, "the rollout store, inside the loop"), (5, "the final checkpoint")])
def test_disk_full_during_a_step_stops_with_one_line_and_the_resumable_checkpoint(tmp_path, monkeypatch, capsys,
                                                                                 steps, where):
    """ENOSPC from the rollout store's background write (as pyarrow raises it) is met at the next join: in the
    next step, or when the last checkpoint flushes the store. Either way: no restart (a restart's own writes
    met the same disk and failed with two chained tracebacks), one line, and the checkpoint to resume from."""
    import signal
    from types import SimpleNamespace

    import rl.driver as drv
    import rl.reaper
    import rl.store
    from rl.cli import main as cli_main
    from rl.metrics import MetricsLog
    from rl.recovery import RunCheckpoints

    def setup(self):
        self.run_dir.mkdir(parents=True)
        self.metrics, self.store = MetricsLog(self.run_dir), rl.store.RolloutStore(self.run_dir)
        self.writer = rl.store.BackgroundWriter(self.store)
        self.checkpoints = RunCheckpoints(self.run_dir, 0.0, 0)
        with self.checkpoints.store.writing(4) as tmp:
            (tmp / "driver_state.json").write_text("{}")
        self.step, self.publisher = 4, SimpleNamespace(publish=lambda: {})

    def run_step(self):
        step = self.step + 1
        self.writer.submit(step, [])
        self.step = step
        self.metrics.log(step, {"reward/mean": 0.0})
        return {}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(rl.reaper, "start_reaper", lambda: None)
    monkeypatch.setattr(drv.Driver, "setup", setup)
    monkeypatch.setattr(drv.Driver, "run_step", run_step)
    monkeypatch.setattr(drv, "console_line", lambda *args: "a step")
    monkeypatch.setattr(rl.store.pq, "write_table", full_disk)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # the command sets its own
    try:
        code = cli_main(["train", f"run.dir={tmp_path}", "run.name=x", f"run.steps={steps}"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "restart 1/" not in err, err
    run_dir = tmp_path / "x"
    assert err.splitlines() == [
        err.splitlines()[0],
        f"unigrpo: the run is resumable from step_4: unigrpo train --resume {run_dir}"], err
    assert re.fullmatch(rf"unigrpo: \[Errno 28\] no space left on \S+ for run dir {re.escape(str(run_dir))}: the disk "
                        r"filled up after step 5 \(Error writing bytes to file\. Detail: \[errno 28\] No space left on "
                        r"device; [0-9.]+ [KMG]?B free now\); stopped rather than restarted \(a restart would meet the "
                        r"same full disk\): free space, then resume", err.splitlines()[0])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step_4"]
