"""The rollout index cached on disk (rl/dashboard/index_cache.py): reused across server starts, kept
outside the run directory, and checked against every partition's size and mtime, so a resume that
rewrites or removes partitions is noticed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dashboard_runs import make_run, write_step

from rl.dashboard import index_cache
from rl.dashboard import rollouts as rollouts_mod
from rl.dashboard.rollouts import RolloutIndex
from rl.store import RolloutStore


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(index_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(index_cache, "MIN_ROLLOUTS", 0)  # the test stores are small
    return tmp_path / "cache"


def files_of(run: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))}


def answers(idx: RolloutIndex) -> tuple:
    """What the pages ask of the index: counts, per-step stats, a filtered sorted page, a group."""
    summary = {k: v for k, v in idx.summary().items() if k != "pending"}
    page = idx.rollouts({"status": "math:ok", "reward_min": 0.0}, sort="reward", desc=True, limit=200)
    return summary, idx.step_stats(1000), page, idx.group(2, 1)


def count_reads(monkeypatch) -> list[int]:
    steps = []
    real = rollouts_mod._index_partition

    def counting(path, step):
        steps.append(step)
        return real(path, step)
    monkeypatch.setattr(rollouts_mod, "_index_partition", counting)
    return steps


def test_a_second_start_reads_the_index_from_the_cache_not_the_store(tmp_path, cache_dir, monkeypatch):
    run = make_run(tmp_path / "runs" / "r1", steps=4)
    before = files_of(run)
    first = RolloutIndex(run)
    first.refresh()
    cached = list(cache_dir.glob("*-r1.arrow"))
    assert len(cached) == 1 and first.cache.path == cached[0]
    assert files_of(run) == before  # nothing written inside the run directory

    reads = count_reads(monkeypatch)
    second = RolloutIndex(run)
    assert second.refresh() is True
    assert reads == []  # every partition came from the cache
    assert answers(second) == answers(first)
    assert len(second.snap.table) == 4 * 8


def test_a_resume_is_noticed_changed_partitions_read_again_removed_ones_dropped(tmp_path, cache_dir, monkeypatch):
    run = make_run(tmp_path / "r2", steps=4)
    RolloutIndex(run).refresh()
    RolloutStore(run).truncate_after(2)  # what a resume does, then step 3 is written again, differently
    write_step(run, 3, seed=5, groups=3)

    reads = count_reads(monkeypatch)
    idx = RolloutIndex(run)
    idx.refresh()
    assert reads == [3]  # only the rewritten partition; step 4 is gone, 1-2 from the cache
    monkeypatch.setenv(index_cache.CACHE_ENV, "off")
    fresh = RolloutIndex(run)
    fresh.refresh()
    assert fresh.cache.path is None
    assert answers(idx) == answers(fresh)
    assert idx.summary()["last_step"] == 3 and len(idx.snap.table) == 8 + 8 + 12


def test_an_unreadable_or_foreign_cache_is_ignored(tmp_path, cache_dir, monkeypatch):
    run = make_run(tmp_path / "r3", steps=3)
    idx = RolloutIndex(run)
    idx.refresh()
    expected = answers(idx)
    idx.cache.path.write_bytes(b"not an arrow file")
    reads = count_reads(monkeypatch)
    again = RolloutIndex(run)
    again.refresh()
    assert sorted(reads) == [1, 2, 3] and answers(again) == expected
    assert again.cache.path.stat().st_size > 100  # rewritten

    monkeypatch.setattr(index_cache, "FORMAT", index_cache.FORMAT + 1)  # a cache from another version
    reads.clear()
    RolloutIndex(run).refresh()
    assert sorted(reads) == [1, 2, 3]


def test_no_cache_inside_a_run_and_none_for_small_stores(tmp_path, monkeypatch):
    run = make_run(tmp_path / "r4", steps=2)
    monkeypatch.setenv(index_cache.CACHE_ENV, str(run / "cache"))
    assert index_cache.cache_file(run) is None
    monkeypatch.setenv(index_cache.CACHE_ENV, str(tmp_path / "c"))
    idx = RolloutIndex(run)
    idx.refresh()  # 16 rollouts, under MIN_ROLLOUTS: indexed at once, not worth a file
    assert idx.cache.path is not None and not idx.cache.path.exists()
    assert not os.path.exists(tmp_path / "c")


def test_cache_files_of_runs_not_opened_for_a_month_are_pruned(tmp_path, cache_dir):
    old = make_run(tmp_path / "old", steps=1)
    RolloutIndex(old).refresh()
    stale = index_cache.cache_file(old)
    month_ago = time.time() - (index_cache.PRUNE_AFTER_DAYS + 1) * 86400
    os.utime(stale, (month_ago, month_ago))
    run = make_run(tmp_path / "new", steps=2)
    RolloutIndex(run).refresh()  # writing another run's cache prunes the stale one
    assert not stale.exists() and index_cache.cache_file(run).exists()
    os.utime(index_cache.cache_file(run), (month_ago, month_ago))
    RolloutIndex(run).refresh()  # reading a cache marks it used
    assert index_cache.cache_file(run).stat().st_mtime > month_ago + 86400
