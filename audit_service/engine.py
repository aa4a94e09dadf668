"""The scoring engine: a bounded, prioritised queue and a dynamic batcher in front of `BankScorer`.

Requests from many clients are cut into items (one prompt each) and queued; one batcher task
gathers items into a batch (up to MAX_BATCH_SIZE items and MAX_BATCH_TOKENS padded tokens, waiting
at most MAX_WAIT_MS for the batch to fill, with ADAPTIVE_WAIT only under load) and runs it on a
dedicated worker thread, so the model never runs on the event loop. Live items always go before
batch-job items and never share a batch with them. Capture right-pads and masks, so an item's
result does not depend on which batch it lands in.

With a families bank an entity is two items in turn: its probe prompts, then (once those are
scored) its evidence pass, queued as one entity item and batched with other requests' entities
(up to MAX_BATCH_ENTITIES), so concurrent requests share the question prompts' forward passes
and the deadline, priority and shutdown rules hold for that pass too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from audit_service.settings import ServiceSettings
from audit_service.telemetry import Telemetry
from probe_bank.capture import Encoded
from probe_bank.errors import UserError
from probe_bank.evidence import BankEvidence, bank_evidence
from probe_bank.schemas import TextScore
from probe_bank.scoring import StageScore, aggregate_entity
from probe_bank.texts import TextItem

log = logging.getLogger(__name__)

Priority = Literal["live", "batch"]
PRIORITIES: tuple[Priority, ...] = ("live", "batch")
#: Below this many characters a request is tokenized on the event loop (well under a millisecond).
_INLINE_TOKENIZE_CHARS = 4096
#: Event-loop turns an evidence pass yields before it starts, so the requests whose prompts one
#: batch scored have all queued their entities (with the test fakes they already have at 0:
#: their wake-ups run before the batcher's; a margin, at microseconds a turn).
_SETTLE_TURNS = 4


class Scorer(Protocol):
    """The part of `probe_bank.scoring.BankScorer` the engine uses: the pipeline's two ends."""

    model_id: str
    bank_id: str
    bank: Any  # probe_bank.bank.ProbeBank: `.manifest` and `.metrics` feed GET /v1/bank

    def prepare(
        self, prompts: Sequence[str], aliases: Sequence[str | None] | None = None
    ) -> list[Encoded]: ...

    def forward(self, batch: Sequence[Encoded]) -> list[StageScore]: ...

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]: ...

    @property
    def has_families(self) -> bool: ...

    def entity_evidence(
        self, aliases: Sequence[str], scores: Sequence[StageScore]
    ) -> list[StageScore]: ...

    def after_thresholds(self) -> dict[str, float | None]: ...

    def prepare_texts(
        self, texts: Sequence[str], answers: Sequence[str | None] | None = None
    ) -> list[TextItem]: ...

    def score_texts(self, items: Sequence[TextItem]) -> list[TextScore]: ...


ScorerFactory = Callable[[ServiceSettings], Scorer]


class EngineError(Exception):
    """Base of the engine's refusals; the app maps each to an HTTP status."""


class QueueFull(EngineError):
    """The queue of this priority has no room; retry after `retry_after` seconds (HTTP 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the scoring queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceeded(EngineError):
    """The request's deadline passed before its items were scored (HTTP 504)."""


class RequestTooLarge(UserError):
    """A request with more prompts than the queue can ever hold (HTTP 422)."""


class NotReady(EngineError):
    """The model and bank are still loading, failed to load, or the engine is stopping (503)."""


@dataclass(eq=False)
class _Queued:
    priority: Priority
    enqueued: float
    deadline: float | None
    future: asyncio.Future[Any] = field(repr=False)


@dataclass(eq=False)
class _Item(_Queued):
    """One prompt for the probe batcher."""

    encoded: Encoded
    request: int  # which `_enqueue` call queued it: the adaptive wait counts requests


@dataclass(eq=False)
class _EntityItem(_Queued):
    """One entity's evidence pass, queued once its probe prompts are scored."""

    alias: str
    score: StageScore


class ScoringEngine:
    """Owns the scorer (loaded on the worker thread), the queues and the batcher task.

    Lifecycle: `await start()` returns at once and loads + warms the scorer in the background;
    `ready` flips when done (or `load_error` is set). `await stop()` fails whatever is queued.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        metrics: Telemetry,
        scorer_factory: ScorerFactory,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._factory = scorer_factory
        self.scorer: Scorer | None = None
        self.evidence: BankEvidence | None = None  # served with every score
        self.load_error: str | None = None
        self._queues: dict[Priority, deque[_Item]] = {p: deque() for p in PRIORITIES}
        self._entities: dict[Priority, deque[_EntityItem]] = {p: deque() for p in PRIORITIES}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-worker")
        self._max_batch = 1 if settings.naive_baseline else settings.max_batch_size
        self._max_entities = 1 if settings.naive_baseline else settings.max_batch_entities
        self._max_wait = 0.0 if settings.naive_baseline else settings.max_wait_ms / 1000
        self._last_requests = 0  # requests in the last forward: the adaptive wait's load signal
        self._requests = 0  # `_enqueue` calls so far
        self._null: list[StageScore] = []  # NULL_MODEL's one result, once computed
        self._seconds_per_item = 0.01  # running estimates, for Retry-After
        self._seconds_per_entity = 0.05
        self._wakeup: asyncio.Event | None = None
        self._ready_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def serving(self) -> tuple[str, str] | None:
        """(bank id, the audited model's weight fingerprint) of the loaded scorer: what a job's
        results were scored with (a directory name can repeat across runs; weights cannot)."""
        if self.scorer is None:
            return None
        return self.scorer.bank_id, self.scorer.bank.audited_fingerprint

    @property
    def ready(self) -> bool:
        return self._ready_event is not None and self._ready_event.is_set()

    async def start(self) -> None:
        """Begin loading the scorer in the background; returns before it is ready."""
        self._wakeup = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._task = asyncio.create_task(self._load_then_batch(), name="scoring-engine")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until ready (or failed); True when ready."""
        assert self._ready_event is not None and self._task is not None, "engine not started"
        ready = asyncio.ensure_future(self._ready_event.wait())
        await asyncio.wait(
            {ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        return self.ready

    async def stop(self) -> None:
        """Stop the batcher, fail every queued item, release the worker thread."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for queue in self._all_queues():
            while queue:
                item = queue.popleft()
                if not item.future.done():
                    item.future.set_exception(NotReady("the service is shutting down"))
        self._update_depth()
        self.metrics.ready.set(0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _load_then_batch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.scorer = await loop.run_in_executor(self._executor, self._load)
        except Exception as exc:  # a bad bank must show on /readyz, not kill the server
            log.exception("loading the scorer failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        if self.settings.gc_freeze:
            # the model, tokenizer and app are long-lived: out of the collector's sight, a
            # full collection no longer walks them (pauses of 45-325 ms under load before)
            gc.collect()
            gc.freeze()
        assert self._ready_event is not None
        self._ready_event.set()
        self.metrics.ready.set(1)
        relation = getattr(self.scorer.bank, "relation", "reference")
        self.metrics.model_info.labels(self.scorer.model_id, self.scorer.bank_id, relation).set(1)
        log.info(
            "scorer ready: model %s (%s of bank %s)",
            self.scorer.model_id,
            relation,
            self.scorer.bank_id,
        )
        await self._batch_forever()

    def _load(self) -> Scorer:
        """Runs on the worker thread: build the scorer, then one warm-up forward."""
        import torch

        if self.settings.torch_threads is not None:
            torch.set_num_threads(self.settings.torch_threads)
        scorer = self._factory(self.settings)
        self.evidence = bank_evidence(scorer.bank.metrics)
        if self.settings.warmup:  # a templated prompt with its alias suits every bank position
            prompt, alias = scorer.entity_prompts("<warm-up>")[0]
            with torch.inference_mode():
                scores = scorer.forward(scorer.prepare([prompt], [alias]))
                if scorer.has_families:  # the anchors' scales, before the first request
                    if self.settings.families:
                        scorer.entity_evidence([alias], [aggregate_entity(scores)])
                    # and the anchor texts' (a descendant's text scoring)
                    scorer.score_texts(scorer.prepare_texts([f"{prompt} {alias}"]))
        return scorer

    # -- public API --------------------------------------------------------------------------

    async def score_prompts(
        self,
        prompts: list[str],
        aliases: list[str | None] | None = None,
        *,
        priority: Priority = "live",
        deadline: float | None = None,
    ) -> list[StageScore]:
        """Score prompts (results in input order).

        `deadline` is absolute, on the `time.monotonic()` clock; None means now + REQUEST_TIMEOUT_S
        for live items and no deadline for batch items. Batch callers wait while the model loads;
        live callers get `NotReady`. Raises QueueFull, DeadlineExceeded, NotReady, PromptTooLong.
        """
        if aliases is not None and len(aliases) != len(prompts):
            raise UserError(
                f"{len(aliases)} aliases for {len(prompts)} prompts; give one per prompt"
            )
        if not prompts:
            return []
        if deadline is None and priority == "live":
            deadline = time.monotonic() + self.settings.request_timeout_s
        scorer = await self._scorer_for(priority, deadline)
        items = await self._prepare(scorer, prompts, aliases)
        if priority == "batch":  # a job chunk larger than the queue goes in queue-sized waves
            size, out = self.settings.queue_size, []
            for lo in range(0, len(items), size):
                wave = self._enqueue(items[lo : lo + size], priority, deadline)
                out.extend(await self._gather(wave, deadline))
            return out
        futures = self._enqueue(items, priority, deadline)
        return await self._gather(futures, deadline)

    async def score_entities(
        self,
        aliases: list[str],
        *,
        priority: Priority = "live",
        deadline: float | None = None,
    ) -> list[StageScore]:
        """Score each entity through the bank's probe templates and average per entity."""
        if deadline is None and priority == "live":
            deadline = time.monotonic() + self.settings.request_timeout_s
        scorer = await self._scorer_for(priority, deadline)
        pairs = [scorer.entity_prompts(alias) for alias in aliases]
        flat = [pair for per_entity in pairs for pair in per_entity]
        scores = await self.score_prompts(
            [p for p, _ in flat], [a for _, a in flat], priority=priority, deadline=deadline
        )
        out, lo = [], 0
        for per_entity in pairs:
            out.append(aggregate_entity(scores[lo : lo + len(per_entity)]))
            lo += len(per_entity)
        if not (scorer.has_families and self.settings.families) or not out:
            return out
        # the evidence families: one entity item each, batched across requests like prompts
        loop, now = asyncio.get_running_loop(), time.monotonic()
        entities = [
            _EntityItem(priority, now, deadline, loop.create_future(), alias=alias, score=score)
            for alias, score in zip(aliases, out, strict=True)
        ]
        return await self._gather(self._push(self._entities[priority], entities), deadline)

    async def score_texts(
        self, texts: list[str], answers: list[str | None] | None, *, priority: Priority = "live"
    ) -> list[TextScore]:
        """Membership statistics of each text (and, on a descendant, against the reference):
        validated and tokenized here, one teacher-forced forward per model on the worker
        thread (texts are not probe items, so they do not join the probe batcher)."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        scorer = await self._scorer_for(priority, deadline)
        items = scorer.prepare_texts(texts, answers)
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, _texts, scorer, items)
        self.metrics.observe_texts(
            scorer.model_id, scorer.bank_id, priority, [r.touched for r in results]
        )
        return results

    def queue_depth(self, priority: Priority | None = None) -> int:
        """Items waiting (prompts and entities' evidence passes), of one priority or all."""
        chosen = PRIORITIES if priority is None else (priority,)
        return sum(len(self._queues[p]) + len(self._entities[p]) for p in chosen)

    def _all_queues(self) -> list[deque[Any]]:
        return [*self._queues.values(), *self._entities.values()]

    # -- admission ---------------------------------------------------------------------------

    async def _scorer_for(self, priority: Priority, deadline: float | None) -> Scorer:
        if self._stopping:
            raise NotReady("the service is shutting down")
        if self.scorer is not None and self.ready:
            return self.scorer
        if self.load_error is not None:
            raise NotReady(f"the model and bank failed to load: {self.load_error}")
        if priority == "live" or self._ready_event is None:
            raise NotReady("the model and bank are still loading; retry shortly")
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not await self.wait_ready(timeout):
            raise DeadlineExceeded("the model did not finish loading before the deadline")
        assert self.scorer is not None
        return self.scorer

    async def _prepare(
        self, scorer: Scorer, prompts: list[str], aliases: list[str | None] | None
    ) -> list[Encoded]:
        """Validate and tokenize once: inline for short inputs (cheaper than a thread hop), off
        the event loop for long ones. Raises UserError / PromptTooLong for the request."""
        if sum(len(p) for p in prompts) <= _INLINE_TOKENIZE_CHARS:
            return scorer.prepare(prompts, aliases)
        return await asyncio.to_thread(scorer.prepare, prompts, aliases)

    def _enqueue(
        self, items: Sequence[Encoded], priority: Priority, deadline: float | None
    ) -> list[asyncio.Future[Any]]:
        queue = self._queues[priority]
        if len(items) > self.settings.queue_size:  # could never fit: a clear 4xx, not a retry
            self.metrics.rejected.labels("too_large").inc(len(items))
            raise RequestTooLarge(
                f"the request holds {len(items)} prompts (templates included); the queue takes "
                f"at most QUEUE_SIZE={self.settings.queue_size}: split it or use a batch job"
            )
        if len(queue) + len(items) > self.settings.queue_size:
            self.metrics.rejected.labels("queue_full").inc(len(items))
            raise QueueFull(self.retry_after())
        loop, now = asyncio.get_running_loop(), time.monotonic()
        self._requests += 1
        return self._push(
            queue,
            [
                _Item(
                    priority, now, deadline, loop.create_future(), encoded=e, request=self._requests
                )
                for e in items
            ],
        )

    def _push(self, queue: deque[Any], items: Sequence[_Queued]) -> list[asyncio.Future[Any]]:
        """Queue items (prompts or entities) and wake the batcher; their futures, in order."""
        queue.extend(items)
        self._update_depth()
        assert self._wakeup is not None
        self._wakeup.set()
        return [it.future for it in items]

    async def _gather(
        self, futures: list[asyncio.Future[Any]], deadline: float | None
    ) -> list[StageScore]:
        """Results in order; the first item error, or DeadlineExceeded, fails the request."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            _, pending = await asyncio.wait(
                futures, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
            )
            for fut in futures:
                if fut.done() and fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
            if pending:
                self.metrics.rejected.labels("deadline").inc(len(pending))
                raise DeadlineExceeded("the request's deadline passed before it was scored")
            return [fut.result() for fut in futures]
        finally:
            abandoned = [fut.cancel() for fut in futures]
            if any(abandoned):  # a failed or abandoned request frees its queue slots now
                self._prune()

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1)."""
        prompts = sum(len(q) for q in self._queues.values())
        entities = sum(len(q) for q in self._entities.values())
        wait = prompts * self._seconds_per_item + entities * self._seconds_per_entity
        return max(1, math.ceil(wait))

    def _update_depth(self) -> None:
        for p in PRIORITIES:
            self.metrics.queue_depth.labels(p).set(self.queue_depth(p))

    # -- batcher -----------------------------------------------------------------------------

    async def _batch_forever(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wait_for_batch()
            if self._entities_next():
                entities = self._take_entities()
                if entities:
                    await self._run_entities(entities)
                continue
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)

    def _entities_next(self) -> bool:
        """Whether the next pass is entities' evidence: live before batch; within one priority
        the kind whose oldest item has waited longer (an entity item ends a request under way)."""
        for p in PRIORITIES:
            prompts, entities = self._queues[p], self._entities[p]
            if prompts or entities:
                return bool(entities) and (
                    not prompts or entities[0].enqueued <= prompts[0].enqueued
                )
        return False

    async def _wait_for_batch(self) -> None:
        """Wait for an item, then up to MAX_WAIT_MS after the oldest one for the batch to fill.

        With ADAPTIVE_WAIT the window opens only under load: a lone request after a batch of one
        request is forwarded at once (nothing is coming to share its pass, and the window would
        be pure latency), while a queue of several requests, or a last batch of several, waits.
        Entities' evidence passes take no timed window (see `_settle_entities`)."""
        assert self._wakeup is not None
        while not self._prune():
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._entities_next():
            await self._settle_entities()
            return
        if self.settings.adaptive_wait and self._last_requests <= 1 and self._one_request():
            return
        oldest = min(q[0].enqueued for q in self._queues.values() if q)
        while sum(len(q) for q in self._queues.values()) < self._max_batch:
            remaining = oldest + self._max_wait - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _one_request(self) -> bool:
        """Whether every queued prompt came from one request."""
        queued = [it.request for q in self._queues.values() for it in q]
        return all(r == queued[0] for r in queued)

    async def _settle_entities(self) -> None:
        """A few turns of the event loop, no timer: the requests whose probe prompts the last
        batch scored queue their entities now, and share this pass instead of the next. Any
        other request's entities come later, after a forward of its own prompts, which the
        pass running meanwhile covers, so a window would only add latency."""
        for _ in range(_SETTLE_TURNS):
            if sum(len(q) for q in self._entities.values()) >= self._max_entities:
                return
            await asyncio.sleep(0)

    def _prune(self) -> bool:
        """Drop abandoned and expired items; True when something is left to score."""
        now = time.monotonic()
        for queue in self._all_queues():
            kept = deque(it for it in queue if not it.future.done())
            for it in kept:
                if it.deadline is not None and it.deadline <= now:
                    it.future.set_exception(DeadlineExceeded("deadline passed while queued"))
            queue.clear()
            queue.extend(it for it in kept if not it.future.done())
        self._update_depth()
        return self.queue_depth() > 0

    def _take_batch(self) -> list[_Item]:
        """The oldest items of the highest non-empty priority, within the size and padded-token
        budgets. Live and batch items never share a batch, so a live request never waits for
        job items in its own forward pass."""
        self._prune()
        batch: list[_Item] = []
        queue = next((self._queues[p] for p in PRIORITIES if self._queues[p]), None)
        longest = 0
        while queue and len(batch) < self._max_batch:
            n_tokens = queue[0].encoded.n_tokens
            padded = (len(batch) + 1) * max(longest, n_tokens)
            if batch and padded > self.settings.max_batch_tokens:
                break
            batch.append(queue.popleft())
            longest = max(longest, n_tokens)
        self._update_depth()
        return batch

    def _take_entities(self) -> list[_EntityItem]:
        """The oldest entity items of the highest non-empty priority, up to MAX_BATCH_ENTITIES."""
        self._prune()
        queue = next((self._entities[p] for p in PRIORITIES if self._entities[p]), None)
        batch: list[_EntityItem] = []
        while queue and len(batch) < self._max_entities:
            batch.append(queue.popleft())
        self._update_depth()
        return batch

    async def _run_entities(self, batch: list[_EntityItem]) -> None:
        assert self.scorer is not None
        scorer = self.scorer
        outcomes, seconds = await self._execute(_evidence_batch, batch)
        self._seconds_per_entity = 0.8 * self._seconds_per_entity + 0.2 * seconds / len(batch)
        self.metrics.observe_evidence(scorer.model_id, scorer.bank_id, len(batch), seconds)
        for item, result in _resolve(batch, outcomes):
            fused = [f.estimated_class for f in result.families or [] if f.family == "fused"]
            self.metrics.observe_fused(scorer.model_id, scorer.bank_id, item.priority, fused)

    async def _run_batch(self, batch: list[_Item]) -> None:
        assert self.scorer is not None
        scorer = self.scorer
        work = partial(_null_batch, self._null) if self.settings.null_model else _score_batch
        outcomes, seconds = await self._execute(work, batch)
        self._last_requests = len({it.request for it in batch})
        self._seconds_per_item = 0.8 * self._seconds_per_item + 0.2 * seconds / len(batch)
        tokens = len(batch) * max(it.encoded.n_tokens for it in batch)
        self.metrics.observe_batch(scorer.model_id, scorer.bank_id, len(batch), tokens, seconds)
        scored: dict[Priority, list[StageScore]] = {p: [] for p in PRIORITIES}
        for item, result in _resolve(batch, outcomes):
            scored[item.priority].append(result)
        for priority, results in scored.items():
            self.metrics.observe_scores(
                scorer.model_id,
                scorer.bank_id,
                priority,
                [r.estimated_stage for r in results],
                [r.recency_score for r in results],
            )

    async def _execute(
        self, work: Callable[[Scorer, Any], list[Any]], batch: Sequence[_Queued]
    ) -> tuple[list[StageScore | BaseException], float]:
        """Each item's queue wait observed, then `work(scorer, batch)` on the worker thread:
        its outcomes and the seconds the pass took."""
        assert self.scorer is not None
        scorer = self.scorer
        start = time.monotonic()
        for item in batch:
            self.metrics.queue_seconds.labels(item.priority).observe(start - item.enqueued)
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._executor, work, scorer, batch)
        return outcomes, time.monotonic() - start


def _resolve(
    batch: Sequence[_Queued], outcomes: Sequence[StageScore | BaseException]
) -> list[tuple[_Queued, StageScore]]:
    """Each waiting item's future gets its outcome; the (item, result) pairs delivered."""
    delivered = []
    for item, outcome in zip(batch, outcomes, strict=True):
        if item.future.done():  # abandoned: its request failed or gave up
            continue
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
            continue
        item.future.set_result(outcome)
        delivered.append((item, outcome))
    return delivered


def _evidence_batch(
    scorer: Scorer, batch: Sequence[_EntityItem]
) -> list[StageScore | BaseException]:
    """Worker thread: every entity's evidence pass in one call (or each alone, `_each_alone`)."""

    def evidence(items: Sequence[_EntityItem]) -> list[StageScore]:
        return scorer.entity_evidence([it.alias for it in items], [it.score for it in items])

    return _each_alone(evidence, list(batch))


def _texts(scorer: Scorer, items: list[TextItem]) -> list[TextScore]:
    import torch

    with torch.inference_mode():
        return scorer.score_texts(items)


def _null_batch(
    cache: list[StageScore], scorer: Scorer, batch: Sequence[_Item]
) -> list[StageScore | BaseException]:
    """Worker thread, NULL_MODEL (benchmarks): one real forward the first time, then that
    result (with each item's token count) for every item, so only the model's cost is gone."""
    if not cache:
        first = _score_batch(scorer, batch[:1])[0]
        if isinstance(first, BaseException):
            return [first] * len(batch)
        cache.append(first)
    template = cache[0]
    return [template.model_copy(update={"n_tokens": it.encoded.n_tokens}) for it in batch]


def _score_batch(scorer: Scorer, batch: Sequence[_Item]) -> list[StageScore | BaseException]:
    """Worker thread: forward the batch in one call (or each item alone, `_each_alone`)."""
    return _each_alone(scorer.forward, [it.encoded for it in batch])


def _each_alone(
    run: Callable[[Sequence[Any]], Sequence[StageScore]], items: list[Any]
) -> list[StageScore | BaseException]:
    """`run(items)` in one call; if that fails, each item alone, so one bad item fails only its
    own request."""
    import torch

    with torch.inference_mode():
        try:
            return list(run(items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        outcomes: list[StageScore | BaseException] = []
        for item in items:
            try:
                outcomes.extend(run([item]))
            except Exception as exc:  # reported to that item's caller
                outcomes.append(exc)
        return outcomes
