"""The durable job store: SQLite in WAL mode, one connection, one writer at a time.

Crash safety rests on three rules: a job's inputs are written in the same transaction that creates
it; each chunk's result lines are written in one transaction together with the job's progress
marker (`done`), guarded by the marker's old value; and a result row's primary key is
(job, index), so an input can never be stored twice. After kill -9 a job therefore restarts
exactly at its last committed chunk.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel

from audit_service.jobs.datasets import DatasetItem


class StorageUnavailable(Exception):
    """The store could not write (disk full, quota, I/O error): transient, not the job's fault.
    Nothing was written (the transaction rolled back); retry once the storage recovers."""


#: SQLite's messages for storage faults (SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN).
_STORAGE_FAULTS = ("database or disk is full", "disk i/o error", "unable to open database")


def _storage_fault(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return any(m in str(exc).lower() for m in _STORAGE_FAULTS)
    return isinstance(exc, OSError)


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    chunk_size INTEGER NOT NULL,
    source TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    bank_id TEXT,
    model_fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE TABLE IF NOT EXISTS inputs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
"""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


class JobRecord(BaseModel):
    """A job's row: progress is `done` of `total` inputs, `errors` of them unscorable."""

    id: str
    state: JobState
    total: int
    done: int
    errors: int
    chunk_size: int
    source: str
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    bank_id: str | None = None  # the bank and model that score it, fixed when it first runs
    model_fingerprint: str | None = None


#: columns added to `jobs` after its first release: a store written before gains them on open
_ADDED_COLUMNS = {"bank_id": "TEXT", "model_fingerprint": "TEXT"}


class StaleChunk(RuntimeError):
    """A chunk commit whose progress marker no longer matches (job cancelled or moved on)."""


_COLUMNS = ", ".join(JobRecord.model_fields)


class JobStore:
    """All reads and writes of jobs, inputs and results; safe to call from several threads."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    with suppress(sqlite3.Error):  # SQLite may have rolled back already
                        self._db.execute("ROLLBACK")
                    raise
            except (sqlite3.OperationalError, OSError) as exc:
                if _storage_fault(exc):
                    raise StorageUnavailable(f"the job store cannot write: {exc}") from exc
                raise

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # --- jobs -----------------------------------------------------------------------------------

    def create(self, items: Sequence[DatasetItem], *, chunk_size: int, source: str) -> JobRecord:
        """Store a new queued job together with all of its inputs (one transaction)."""
        job_id = "job_" + secrets.token_hex(8)
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, state, total, done, errors, chunk_size, source, created_at,"
                " updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?, ?)",
                (job_id, JobState.QUEUED, len(items), chunk_size, source, now, now),
            )
            db.executemany(
                "INSERT INTO inputs (job_id, idx, item) VALUES (?, ?, ?)",
                (
                    (job_id, i, item.model_dump_json(exclude_none=True))
                    for i, item in enumerate(items)
                ),
            )
        record = self.get(job_id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return self._record(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[JobRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
        )
        return [self._record(r) for r in rows]

    def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first (the resume order after a restart)."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created_at, id",
            (JobState.QUEUED, JobState.RUNNING),
        )
        return [self._record(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        counts = {s.value: 0 for s in JobState}
        counts.update({state: n for state, n in rows})
        return counts

    def set_state(self, job_id: str, state: JobState, error: str | None = None) -> bool:
        """Move an unfinished job to `state`; False if it was already finished (or unknown)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, error = COALESCE(?, error), updated_at = ?,"
                " finished_at = ? WHERE id = ? AND state IN (?, ?)",
                (
                    state,
                    error,
                    now,
                    now if state.finished else None,
                    job_id,
                    JobState.QUEUED,
                    JobState.RUNNING,
                ),
            )
            return cur.rowcount == 1

    def claim(self, job_id: str, bank_id: str, model_fingerprint: str) -> JobRecord | None:
        """Fix the bank and model that score this job, the first time it runs; a job that ran
        before keeps its own (the caller compares), so one job's results never mix two banks."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET bank_id = ?, model_fingerprint = ?"
                " WHERE id = ? AND bank_id IS NULL",
                (bank_id, model_fingerprint, job_id),
            )
        return self.get(job_id)

    @staticmethod
    def _record(row: tuple) -> JobRecord:
        return JobRecord(**dict(zip(JobRecord.model_fields, row, strict=True)))

    # --- inputs and results ---------------------------------------------------------------------

    def inputs(self, job_id: str, lo: int, hi: int) -> list[DatasetItem]:
        rows = self._read(
            "SELECT item FROM inputs WHERE job_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (job_id, lo, hi),
        )
        return [DatasetItem.model_validate_json(r[0]) for r in rows]

    def commit_chunk(self, job_id: str, lo: int, lines: Sequence[str], errors: int = 0) -> None:
        """Store the results of inputs lo..lo+len(lines) and advance `done`, atomically.

        Raises StaleChunk (and writes nothing) unless the job is running with done == lo.
        """
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET done = done + ?, errors = errors + ?, updated_at = ?"
                " WHERE id = ? AND done = ? AND state = ?",
                (len(lines), errors, time.time(), job_id, lo, JobState.RUNNING),
            )
            if cur.rowcount != 1:
                raise StaleChunk(f"{job_id}: chunk at {lo} is stale")
            db.executemany(
                "INSERT INTO results (job_id, idx, line) VALUES (?, ?, ?)",
                ((job_id, lo + i, line) for i, line in enumerate(lines)),
            )

    def iter_results(self, job_id: str, *, page: int = 512) -> Iterator[str]:
        """Result lines in input order, read page by page (the lock is never held across pages)."""
        last = -1
        while True:
            rows = self._read(
                "SELECT idx, line FROM results WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?",
                (job_id, last, page),
            )
            if not rows:
                return
            for idx, line in rows:
                last = idx
                yield line
