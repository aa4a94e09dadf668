"""The job manager: owns the store, runs jobs one at a time in a background task, reports progress.

One job at a time, at the engine's batch priority, so batch work fills the gaps of live traffic
instead of crowding it out. On start, every job left queued or running by a previous process
(including one killed with -9) is resumed from its last committed chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from audit_service.engine import NotReady
from audit_service.jobs.datasets import DatasetError, DatasetItem
from audit_service.jobs.results import ResultSummary, summarize
from audit_service.jobs.runner import Engine, run_job
from audit_service.jobs.store import (
    JobRecord,
    JobState,
    JobStore,
    StaleChunk,
    StorageUnavailable,
)
from audit_service.jobs.telemetry import JobsCollector
from audit_service.settings import JobsConfig
from probe_bank.evidence import BankEvidence

log = logging.getLogger(__name__)

STORE_NAME = "jobs.sqlite3"


class JobFinished(Exception):
    """DELETE on a job that already finished: nothing to cancel (HTTP 409)."""

    def __init__(self, job_id: str, state: JobState) -> None:
        super().__init__(
            f"job {job_id!r} already {state.value}: DELETE cancels queued or running jobs; a "
            "finished job and its results stay readable"
        )


class StorageBusy(Exception):
    """The job store cannot write now (disk full, I/O error): submit again later (HTTP 503)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "the job store cannot write (storage full or failing); running jobs are paused "
            f"and resume when it recovers: retry after {retry_after} s"
        )
        self.retry_after = max(1, retry_after)


class JobStatus(BaseModel):
    """State and progress of a job, as GET /v1/jobs/{id} reports it."""

    id: str
    state: JobState
    total: int
    done: int
    errors: int = Field(description="inputs that could not be scored (see their result lines)")
    progress: float = Field(description="done / total")
    rate_items_per_s: float | None = Field(description="since this process started the job")
    eta_s: float | None
    error: str | None = Field(description="why the job failed, if it did")
    source: str
    created_at: float
    updated_at: float
    finished_at: float | None
    bank_id: str | None = Field(
        None, description="the bank that scores this job, fixed when it first runs"
    )
    model_fingerprint: str | None = Field(
        None, description="the weight fingerprint of the audited model that scores it"
    )


class JobSummary(ResultSummary):
    """A job's state and what its results say (`ResultSummary`)."""

    id: str
    state: JobState
    done: int
    total: int
    bank_id: str | None = Field(None, description="the bank that scored these results")
    evidence: BankEvidence | None = Field(
        None,
        description="that bank's held-out validation (the probes' verdict, their strongest "
        "scalar baseline, class 7's operating point), as every served score carries it; None "
        "when the service now serves another bank",
    )


class UnknownJob(KeyError):
    """No job with that id."""


@dataclass
class _Pace:
    """Where this process picked a job up, for its rate and ETA."""

    started: float
    done_at_start: int


def _settings_dir(settings: Any, name: str) -> Path:
    """`resolved_<name>` of the service settings (falls back to a plain attribute)."""
    value = getattr(settings, f"resolved_{name}", None) or getattr(settings, name, None)
    if value is None:
        raise ValueError(f"service settings lack {name}")
    return Path(value)


class JobManager:
    """Submit, inspect, cancel and stream jobs; `start`/`stop` run in the app's lifespan."""

    def __init__(self, config: JobsConfig | None = None) -> None:
        self.config = config or JobsConfig()
        self.engine: Engine | None = None
        self.settings: Any = None
        self.metrics: Any = None
        self.data_dir: Path | None = None
        self._store: JobStore | None = None
        self._collector: JobsCollector | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._current: tuple[str, asyncio.Task[None]] | None = None
        self._pace: dict[str, _Pace] = {}
        self._storage_faults = 0  # consecutive storage faults; 0 again after a commit
        self._storage_fault_until = 0.0  # submits get 503 + Retry-After until then

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self, engine: Engine, settings: Any, metrics: Any = None) -> None:
        """Open the store under STATE_DIR, register metrics, resume unfinished jobs."""
        self.engine, self.settings, self.metrics = engine, settings, metrics
        self.data_dir = _settings_dir(settings, "data_dir")
        state_dir = _settings_dir(settings, "state_dir")
        self._store = JobStore(state_dir / STORE_NAME, synchronous=self.config.synchronous)
        registry = getattr(metrics, "registry", None)
        if registry is not None:
            open_to_all = bool(getattr(settings, "open_metrics", True)) and bool(
                getattr(settings, "auth_enabled", False)
            )
            self._collector = JobsCollector(self._store, per_job=not open_to_all)
            registry.register(self._collector)
        pending = self._store.unfinished()
        if pending:
            log.info("resuming %d unfinished job(s): %s", len(pending), [j.id for j in pending])
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="recency-audit-jobs")

    async def stop(self) -> None:
        """Stop the worker (an interrupted job stays `running` and resumes next start)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._collector is not None and self.metrics is not None:
            with contextlib.suppress(KeyError):
                self.metrics.registry.unregister(self._collector)
            self._collector = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("JobManager is not started")
        return self._store

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    # --- the worker -------------------------------------------------------------------------------

    async def _work(self) -> None:
        """Run unfinished jobs oldest first; sleep until a submit wakes it."""
        while True:
            pending = self.store.unfinished()
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._wait_for_engine()
                await self._run_one(pending[0])
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the store itself failed: log, back off, keep serving
                log.exception("the job worker hit an error; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _wait_for_engine(self) -> None:
        """Jobs wait for a healthy engine: a model or bank that is loading, or failed to load
        (a bad MODEL_DIR, a tampered bank), is not the job's fault. The job stays unfinished and
        runs once a start with good settings has a ready engine."""
        engine = self.engine
        warned = False
        while not getattr(engine, "ready", True):
            load_error = getattr(engine, "load_error", None)
            if load_error is not None:
                if not warned:
                    log.error("jobs wait: the model and bank failed to load (%s)", load_error)
                    warned = True
                await asyncio.sleep(1.0)  # never recovers in this process; stay cancellable
                continue
            wait_ready = getattr(engine, "wait_ready", None)
            if wait_ready is not None:
                await wait_ready(timeout=1.0)
            else:
                await asyncio.sleep(0.05)

    async def _run_one(self, job: JobRecord) -> None:
        assert self.engine is not None
        self._pace[job.id] = _Pace(time.monotonic(), job.done)
        task = asyncio.create_task(
            run_job(
                self.store,
                self.engine,
                job,
                pause_s=self.config.chunk_pause_s,
                retries=self.config.retries,
                on_chunk=self._on_chunk,
            )
        )
        self._current = (job.id, task)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            shutting_down = current is not None and current.cancelling() > 0
            if not shutting_down and task.cancelled() and self._is_cancelled(job.id):
                return  # DELETE cancelled this job; the worker goes on
            task.cancel()  # shutdown: stop the job, leave it `running` for the next start
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise
        except StaleChunk:
            log.info("job %s was cancelled while a chunk was in flight", job.id)
        except StorageUnavailable as exc:  # not the job's fault: pause it, retry with backoff
            self._storage_faults += 1
            delay = min(30.0, 0.5 * 2 ** min(self._storage_faults, 6))
            self._storage_fault_until = time.monotonic() + delay
            log.warning("job %s paused: %s; retrying in %.1f s", job.id, exc, delay)
            await asyncio.sleep(delay)
        except Exception as exc:  # never die silently: the reason is in the job's state
            log.exception("job %s failed", job.id)
            self.store.set_state(job.id, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._current = None

    def _is_cancelled(self, job_id: str) -> bool:
        record = self.store.get(job_id)
        return record is not None and record.state == JobState.CANCELLED

    def _on_chunk(self, job_id: str, n: int) -> None:
        self._storage_faults = 0  # a chunk committed: the storage has recovered
        if self._collector is not None:
            self._collector.items_scored += n

    # --- API -----------------------------------------------------------------------------------

    async def submit(self, items: Sequence[DatasetItem], *, source: str) -> JobStatus:
        """Store a job with its inputs (off the event loop) and wake the worker; refused (503)
        while the model and bank have failed to load: the job could only fail."""
        load_error = getattr(self.engine, "load_error", None)
        if load_error is not None:
            raise NotReady(f"the model and bank failed to load: {load_error}")
        if len(items) > self.config.max_items:
            raise DatasetError(f"{len(items)} items; the limit is {self.config.max_items}")
        wait = self._storage_fault_until - time.monotonic()
        if self._storage_faults and wait > 0:
            raise StorageBusy(math.ceil(wait))
        try:
            record = await asyncio.to_thread(
                self.store.create, items, chunk_size=self.config.chunk_size, source=source
            )
        except StorageUnavailable:
            self._storage_faults += 1
            self._storage_fault_until = time.monotonic() + 5.0
            raise StorageBusy(5) from None
        self._wake.set()  # on the loop: asyncio.Event is not thread-safe
        return self._status(record)

    def get(self, job_id: str) -> JobStatus:
        return self._status(self._record(job_id))

    def recent(self, limit: int = 20) -> list[JobStatus]:
        return [self._status(r) for r in self.store.recent(limit)]

    def count_by_state(self) -> dict[str, int]:
        """Jobs per state (what the open dashboard may show)."""
        return dict(self.store.count_by_state())

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued or running job; a finished job is left as it is (`JobFinished`)."""
        record = self._record(job_id)
        if record.state.finished:
            raise JobFinished(job_id, record.state)
        if self.store.set_state(job_id, JobState.CANCELLED) and self._current is not None:
            current_id, task = self._current
            if current_id == job_id:
                task.cancel()
        return self.get(job_id)

    def results(self, job_id: str) -> Iterator[str]:
        """Committed result lines of a job, in input order."""
        self._record(job_id)
        return self.store.iter_results(job_id)

    def summary(self, job_id: str, top: int = 10) -> JobSummary:
        record = self._record(job_id)
        s = summarize(self.store.iter_results(job_id), top=top)
        serving = getattr(self.engine, "serving", None)
        same = serving is not None and record.bank_id == serving[0]
        return JobSummary(
            id=job_id,
            state=record.state,
            done=record.done,
            total=record.total,
            bank_id=record.bank_id,
            evidence=getattr(self.engine, "evidence", None) if same else None,
            **dict(s),
        )

    def _record(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise UnknownJob(job_id)
        return record

    def _status(self, r: JobRecord) -> JobStatus:
        rate = eta = None
        pace = self._pace.get(r.id)
        if pace is not None:
            end = time.monotonic()
            if r.finished_at is not None:
                end -= max(0.0, time.time() - r.finished_at)
            elapsed = end - pace.started
            if elapsed > 0 and r.done > pace.done_at_start:
                rate = (r.done - pace.done_at_start) / elapsed
                eta = 0.0 if r.state.finished else (r.total - r.done) / rate
        return JobStatus(
            id=r.id,
            state=r.state,
            total=r.total,
            done=r.done,
            errors=r.errors,
            progress=r.done / r.total if r.total else 1.0,
            rate_items_per_s=rate,
            eta_s=eta,
            error=r.error,
            source=r.source,
            created_at=r.created_at,
            updated_at=r.updated_at,
            finished_at=r.finished_at,
            bank_id=r.bank_id,
            model_fingerprint=r.model_fingerprint,
        )
