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


def test_a_store_written_before_provenance_opens_and_a_job_keeps_its_first_bank(tmp_path) -> None:
    """A jobs table without the bank and model columns gains them on open (its jobs read None);
    `claim` fixes a job's bank and model once and never overwrites them."""
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, total INTEGER NOT NULL,"
        " done INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0, chunk_size"
        " INTEGER NOT NULL, source TEXT NOT NULL, error TEXT, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, finished_at REAL);"
        "INSERT INTO jobs VALUES ('job_old', 'running', 3, 1, 0, 1, 'x', NULL, 1.0, 1.0, NULL);"
    )
    old.commit()
    old.close()
    store = JobStore(path)
    before = store.get("job_old")
    assert before is not None and (before.bank_id, before.model_fingerprint) == (None, None)
    first = store.claim("job_old", "bank-a", "weights-a")
    again = store.claim("job_old", "bank-b", "weights-b")
    assert first is not None and (first.bank_id, first.model_fingerprint) == ("bank-a", "weights-a")
    assert again is not None and (again.bank_id, again.model_fingerprint) == ("bank-a", "weights-a")
    fresh = store.create(_items(2), chunk_size=1, source="t")
    assert fresh.bank_id is None  # fixed when it first runs, not at submit
    store.close()
