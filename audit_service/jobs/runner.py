"""Runs one job chunk by chunk through the shared scoring engine, at batch priority.

Each chunk is scored, turned into canonical result lines and committed with the progress marker
in one transaction (see `store`). An input the engine refuses (a bad prompt) becomes an error
line and the job goes on; an engine that keeps failing fails the job with the reason recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from audit_service.engine import NotReady, Priority
from audit_service.jobs.datasets import KINDS, DatasetItem
from audit_service.jobs.results import (
    chunk_bounds,
    dumps,
    error_record,
    result_record,
    text_record,
)
from audit_service.jobs.store import JobRecord, JobState, JobStore
from probe_bank.errors import UserError
from probe_bank.schemas import StageScore, TextScore

log = logging.getLogger(__name__)


class Engine(Protocol):
    """The part of `audit_service.engine.ScoringEngine` that jobs use."""

    async def score_prompts(
        self,
        prompts: list[str],
        aliases: list[str | None] | None = None,
        *,
        priority: Priority = ...,
        deadline: float | None = None,
    ) -> Sequence[StageScore]: ...

    async def score_entities(
        self, aliases: list[str], *, priority: Priority = ..., deadline: float | None = None
    ) -> Sequence[StageScore]: ...

    async def score_texts(
        self, texts: list[str], answers: list[str | None] | None, *, priority: Priority = ...
    ) -> Sequence[TextScore]: ...


class JobFailed(RuntimeError):
    """The engine failed a chunk more often than the retry budget allows, or now serves another
    bank or model than the one the job's committed results were scored with."""


async def _claim(store: JobStore, engine: Engine, job: JobRecord) -> None:
    """Fix the job's bank and model on its first run; on a resume under another bank or model
    fail it, since its results would mix two (an engine without `serving`, a test double, is
    not recorded)."""
    serving = getattr(engine, "serving", None)
    if serving is None:
        return
    bank_id, weights = serving
    record = await asyncio.to_thread(store.claim, job.id, bank_id, weights)
    if record is not None and (record.bank_id, record.model_fingerprint) != (bank_id, weights):
        raise JobFailed(
            f"its first {record.done} results were scored with bank {record.bank_id} on model "
            f"weights {str(record.model_fingerprint)[:12]}; the service now serves bank {bank_id} "
            f"on weights {weights[:12]}, and one job's results never mix two: submit the "
            "dataset again"
        )


async def _score_group(
    engine: Engine, items: Sequence[DatasetItem]
) -> Sequence[StageScore | TextScore]:
    """Score items of one kind in one engine call."""
    if not items:
        return []
    if items[0].kind == "text":
        texts = [i.text or "" for i in items]
        return list(await engine.score_texts(texts, [i.answer for i in items], priority="batch"))
    if items[0].kind == "entity":
        return list(await engine.score_entities([i.entity or "" for i in items], priority="batch"))
    prompts = [i.prompt or "" for i in items]
    aliases = [i.alias for i in items]
    if all(a is None for a in aliases):
        return list(await engine.score_prompts(prompts, priority="batch"))
    return list(await engine.score_prompts(prompts, aliases, priority="batch"))


def _record(index: int, item: DatasetItem, score: StageScore | TextScore) -> dict[str, Any]:
    if isinstance(score, TextScore):
        return text_record(index, item, score)
    return result_record(index, item, score)


async def _score_each(engine: Engine, indexed: Sequence[tuple[int, DatasetItem]]) -> list[dict]:
    """Fallback after a refused group: score inputs one at a time so one bad input fails alone."""
    records: list[dict] = []
    for index, item in indexed:
        try:
            (score,) = await _score_group(engine, [item])
            records.append(_record(index, item, score))
        except UserError as exc:
            records.append(error_record(index, item, str(exc)))
    return records


async def score_chunk(
    engine: Engine, lo: int, items: Sequence[DatasetItem]
) -> tuple[list[str], int]:
    """Canonical result lines (in input order) for inputs lo.., and how many are errors."""
    records: dict[int, dict[str, Any]] = {}
    for kind in KINDS:
        indexed = [(lo + i, item) for i, item in enumerate(items) if item.kind == kind]
        group = [item for _, item in indexed]
        try:
            scores = await _score_group(engine, group)
            recs = [_record(i, item, s) for (i, item), s in zip(indexed, scores, strict=True)]
        except UserError:
            recs = await _score_each(engine, indexed)
        records.update({r["index"]: r for r in recs})
    ordered = [records[lo + i] for i in range(len(items))]
    return [dumps(r) for r in ordered], sum("error" in r for r in ordered)


async def run_job(
    store: JobStore,
    engine: Engine,
    job: JobRecord,
    *,
    pause_s: float = 0.0,
    retries: int = 3,
    on_chunk: Callable[[str, int], None] | None = None,
) -> None:
    """Score a job from its last committed chunk to the end, then mark it succeeded.

    Cancellation (DELETE) shows up as a stale commit and ends the loop quietly; task cancellation
    (shutdown) propagates and leaves the job `running`, to be resumed on the next start.
    """
    await _claim(store, engine, job)
    if job.state == JobState.QUEUED:
        await asyncio.to_thread(store.set_state, job.id, JobState.RUNNING)
    for lo, hi in chunk_bounds(job.total, job.chunk_size, job.done):
        items = await asyncio.to_thread(store.inputs, job.id, lo, hi)
        lines, errors = await _with_retries(engine, lo, items, retries)
        current = await asyncio.to_thread(store.get, job.id)
        if current is None or current.state != JobState.RUNNING:
            return  # cancelled while the chunk was being scored
        await asyncio.to_thread(store.commit_chunk, job.id, lo, lines, errors)
        if on_chunk is not None:
            on_chunk(job.id, len(lines))
        if pause_s:
            await asyncio.sleep(pause_s)
    await asyncio.to_thread(store.set_state, job.id, JobState.SUCCEEDED)


async def _with_retries(
    engine: Engine, lo: int, items: Sequence[DatasetItem], retries: int
) -> tuple[list[str], int]:
    """Score a chunk, retrying engine failures with backoff.

    A full queue (an exception with `retry_after`, the engine's QueueFull) means live traffic has
    the engine: wait as told, without spending the retry budget, so jobs yield to live requests.
    """
    failures = 0
    while True:
        try:
            return await score_chunk(engine, lo, items)
        except (asyncio.CancelledError, UserError):
            raise
        except NotReady:  # the engine, not the chunk: wait for it without spending retries
            await asyncio.sleep(0.5)
            continue
        except Exception as exc:
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float):
                await asyncio.sleep(max(0.05, float(retry_after)))
                continue
            if failures == retries:
                raise JobFailed(f"chunk at input {lo}: {type(exc).__name__}: {exc}") from exc
            delay = 0.5 * 2**failures
            failures += 1
            log.warning("job chunk at %d failed (%s); retry in %.1fs", lo, exc, delay)
            await asyncio.sleep(delay)
