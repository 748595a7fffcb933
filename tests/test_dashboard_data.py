"""The dashboard's readers on run directories written by the run's own writers: incremental reads,
resume truncation, schema growth, corrupt files, read-only."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq
from dashboard_runs import make_run, write_step

from rl.dashboard import rollouts as rollouts_mod
from rl.dashboard.runs import RunRegistry
from rl.dashboard.series import MetricsReader
from rl.metrics import MetricsLog
from rl.store import RolloutStore


def test_metrics_reader_is_incremental_and_follows_a_resume(tmp_path):
    log = MetricsLog(tmp_path)
    reader = MetricsReader(log.path)
    reader.refresh()
    assert reader.steps == []
    for s in (1, 2, 3):
        log.log(s, {"reward/mean": s / 10})
    reader.refresh()
    assert reader.steps == [1, 2, 3]
    offset = reader._offset
    with log.path.open("a") as fh:  # a line still being written is left for the next refresh
        fh.write('{"step": 4, "reward/mean": 0.4')
    reader.refresh()
    assert reader.steps == [1, 2, 3] and reader._offset == offset
    with log.path.open("a") as fh:
        fh.write(', "eval/acc": 0.5}\n')
    reader.refresh()
    assert reader.steps == [1, 2, 3, 4]
    assert all(math.isnan(v) for v in reader.columns["eval/acc"][:3])  # a metric that appears later
    assert reader.columns["eval/acc"][3] == 0.5
    epoch = reader.epoch
    log.truncate_after(2)  # what a resume does; then it appends again
    log.log(3, {"reward/mean": 0.9})
    log.log(4, {"reward/mean": 0.95})
    log.log(5, {"reward/mean": 0.99})
    reader.refresh()
    assert reader.epoch == epoch + 1
    assert reader.steps == [1, 2, 3, 4, 5] and reader.columns["reward/mean"][2] == 0.9
    snap = reader.snapshot(since=5, epoch=reader.epoch)
    assert snap["append"] and snap["step"] == []


def test_metrics_window_is_the_raw_rows_of_the_last_steps(tmp_path):
    """The timeline's rows: never bucketed, the last `count` steps up to `step`, only the prefixes asked for."""
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "span/update_start_s": s / 10, "time/step_s": 1.0 + s,
                                        "reward/mean": 0.5}) + "\n" for s in range(1, 2001)))
    reader = MetricsReader(path)
    reader.refresh()
    last = reader.window(("span/", "time/step_s"), count=3)
    assert last == {"step": [1998, 1999, 2000], "series": {"span/update_start_s": [199.8, 199.9, 200.0],
                                                           "time/step_s": [1999.0, 2000.0, 2001.0]}}
    assert reader.window(("span/",), step=10, count=2)["step"] == [9, 10]
    assert reader.window(("nothing/",), count=2)["series"] == {}


def test_metrics_are_downsampled_to_a_bounded_size(tmp_path):
    log = MetricsLog(tmp_path)
    with log.path.open("w") as fh:
        for s in range(1, 5001):
            fh.write(json.dumps({"step": s, "reward/mean": s}) + "\n")
    reader = MetricsReader(log.path)
    reader.refresh()
    snap = reader.snapshot(max_points=1000)
    assert snap["downsampled"] and len(snap["step"]) == 1000 and snap["count"] == 5000
    assert snap["step"][-1] == 5000 and abs(snap["series"]["reward/mean"][0] - 3.0) < 1e-9  # mean of 1..5


def test_index_reads_only_new_partitions_and_follows_truncation(tmp_path, monkeypatch):
    run = make_run(tmp_path / "r", steps=3)
    calls = []
    real = rollouts_mod._index_partition
    monkeypatch.setattr(rollouts_mod, "_index_partition", lambda p, s: calls.append(s) or real(p, s))
    reg = RunRegistry([run])
    r = reg.get("r")
    r.refresh()
    assert sorted(calls) == [1, 2, 3] and len(r.rollouts.snap.table) == 24
    write_step(run, 4)
    r.refresh()
    assert sorted(calls) == [1, 2, 3, 4]  # only the new partition was read
    r.refresh()
    assert len(calls) == 4
    RolloutStore(run).truncate_after(2)
    r.refresh()
    assert r.rollouts.summary()["last_step"] == 2 and len(r.rollouts.snap.table) == 16


def test_queries_filter_sort_page_and_search(tmp_path):
    run = make_run(tmp_path / "q", steps=4, xss=True)
    r = RunRegistry([run]).get("q")
    r.refresh()
    idx = r.rollouts
    page = idx.rollouts({}, "step", True, 0, 5)
    assert page["total"] == 32 and [x["step"] for x in page["rows"]] == [4] * 5
    hi = idx.rollouts({"reward_min": 1.0}, "reward", True, 0, 50)
    assert hi["total"] and all(x["reward"] >= 1.0 for x in hi["rows"])
    t = idx.rollouts({"status": "math:timeout"}, "step", True, 0, 50)
    assert t["total"] == 2 and all(x["components"]["math"]["status"] == "timeout" for x in t["rows"])
    s = idx.rollouts({"q": "JAVASCRIPT:", "step_max": 3}, "step", True, 0, 50)
    assert s["rows"] and all("javascript:" in x["response"] and x["step"] <= 3 for x in s["rows"])
    v = idx.rollouts({"version": 2}, "step", True, 0, 50)  # make_run samples step s at version s - 1
    assert v["total"] == 8 and {x["step"] for x in v["rows"]} == {3}
    g = idx.group(2, 1)
    assert len(g["responses"]) == 4 and g["gold"] == "7"
    assert all(resp["extracted"] for resp in g["responses"])
    tr = idx.trajectory(2, 1, 3)
    assert sorted(tr["unmask_step"]) == list(range(8)) and len(tr["confidence"]) == 8
    f = idx.failures({}, 0, 50)
    assert f["total"] == 4 and all(x["failed"]["math"]["detail"] for x in f["rows"])
    assert [g["step"] for g in idx.prompt_groups("toy-0")] == [4, 2]


def test_corrupt_and_half_written_partitions_are_reported_not_fatal(tmp_path):
    run = make_run(tmp_path / "c", steps=3)
    part = run / "rollouts" / "step=2" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated
    (run / "rollouts" / "step=3" / "part-0.tmp").write_bytes(b"half")  # a write in progress is ignored
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write("{bad json\n")
    r = RunRegistry([run]).get("c")
    r.refresh()
    info = r.info()
    assert any("step=2/part-0.parquet: unreadable" in p for p in info["problems"])
    assert any("metrics.jsonl line 4" in p for p in info["problems"])
    assert r.rollouts.summary()["rollouts"] == 16  # steps 1 and 3 still served
    try:
        r.rollouts.group(2, 0)
        raise AssertionError("a group in the corrupt partition must be a clear error")
    except rollouts_mod.QueryError as err:
        assert "step 2" in str(err)


def test_reading_writes_nothing_into_the_run(tmp_path):
    run = make_run(tmp_path / "ro", steps=2)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}
    r = RunRegistry([tmp_path]).get("ro")
    r.refresh()
    r.info()
    r.rollouts.rollouts({"q": "answer"}, "step", True, 0, 10)
    r.rollouts.group(1, 0)
    r.rollouts.trajectory(1, 0, 0)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}
    assert before == after
    assert os.access(run, os.W_OK)
    assert pq.read_table(run / "rollouts" / "step=1" / "part-0.parquet").num_rows == 8


def test_folder_of_runs_and_ids_are_not_paths(tmp_path):
    make_run(tmp_path / "a", steps=1)
    make_run(tmp_path / "b", steps=1)
    reg = RunRegistry([tmp_path])
    assert sorted(reg.runs) == ["a", "b"] and reg.explicit == []
    make_run(tmp_path / "c", steps=1)
    reg.scan()
    assert sorted(reg.runs) == ["a", "b", "c"]
    assert reg.get("..") is None and reg.get(str(tmp_path / "a")) is None
    assert Path(reg.get("a").path) == (tmp_path / "a").resolve()
