"""The SQLite store: inputs stored at submit, atomic chunk commits, no duplicate results."""

from __future__ import annotations

import sqlite3

import pytest

from audit_service.jobs.datasets import DatasetItem
from audit_service.jobs.store import JobState, JobStore, StaleChunk


def _items(n: int) -> list[DatasetItem]:
    return [DatasetItem(id=i, entity=f"<e{i}>") for i in range(n)]


def test_wal_mode_and_inputs_round_trip(tmp_path) -> None:
    store = JobStore(tmp_path / "s" / "jobs.sqlite3")
    job = store.create(_items(5), chunk_size=2, source="test")
    assert (job.state, job.total, job.done) == (JobState.QUEUED, 5, 0)
    assert store.inputs(job.id, 1, 4) == _items(5)[1:4]
    mode = (
        sqlite3.connect(tmp_path / "s" / "jobs.sqlite3").execute("PRAGMA journal_mode").fetchone()
    )
    assert mode == ("wal",)
    store.close()


def test_chunk_commit_is_atomic_and_guarded(tmp_path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create(_items(4), chunk_size=2, source="test")
    with pytest.raises(StaleChunk):  # not running yet
        store.commit_chunk(job.id, 0, ["a", "b"])
    store.set_state(job.id, JobState.RUNNING)
    store.commit_chunk(job.id, 0, ["a", "b"])
    with pytest.raises(StaleChunk):  # the same chunk again: refused, nothing written
        store.commit_chunk(job.id, 0, ["a", "b"])
    with pytest.raises(StaleChunk):  # a gap: refused
        store.commit_chunk(job.id, 3, ["d"])
    assert store.get(job.id).done == 2
    assert list(store.iter_results(job.id)) == ["a", "b"]
    store.commit_chunk(job.id, 2, ["c", "d"], errors=1)
    record = store.get(job.id)
    assert (record.done, record.errors) == (4, 1)
    assert list(store.iter_results(job.id, page=3)) == ["a", "b", "c", "d"]
    store.close()


def test_state_survives_reopen_and_finished_jobs_stay_finished(tmp_path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    a = store.create(_items(2), chunk_size=1, source="a")
    b = store.create(_items(2), chunk_size=1, source="b")
    store.set_state(a.id, JobState.RUNNING)
    store.commit_chunk(a.id, 0, ["x"])
    assert store.set_state(b.id, JobState.CANCELLED)
    assert not store.set_state(b.id, JobState.RUNNING)  # finished is final
    store.close()
    reopened = JobStore(path)
    assert [(j.id, j.done) for j in reopened.unfinished()] == [(a.id, 1)]
    assert reopened.count_by_state()["cancelled"] == 1
    reopened.close()
