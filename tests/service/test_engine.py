"""The scoring engine with a fake scorer: batching, priorities, back-pressure, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from audit_service.engine import DeadlineExceeded, NotReady, QueueFull, ScoringEngine
from audit_service.settings import ServiceSettings
from audit_service.telemetry import Telemetry
from probe_bank.errors import PromptTooLong, UserError
from probe_bank.scoring import aggregate_entity
from tests.service.fakes import FakeScorer, fake_family, fake_score

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _settings(**kw: Any) -> ServiceSettings:
    base: dict[str, Any] = {"warmup": False, "max_wait_ms": 20, "queue_size": 64}
    return ServiceSettings(**{**base, **kw})


async def _started(scorer: FakeScorer, **kw: Any) -> ScoringEngine:
    engine = ScoringEngine(_settings(**kw), Telemetry(), lambda _: scorer)
    await engine.start()
    assert await engine.wait_ready(10)
    return engine


@pytest.fixture
async def gated() -> AsyncIterator[tuple[ScoringEngine, FakeScorer, threading.Event]]:
    """An engine whose scorer blocks until the test opens the gate."""
    gate = threading.Event()
    scorer = FakeScorer(gate=gate)
    engine = await _started(scorer, queue_size=3, max_batch_size=4)
    yield engine, scorer, gate
    gate.set()
    await engine.stop()


async def _until(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


async def test_concurrent_requests_share_batches() -> None:
    scorer = FakeScorer(delay=0.05)
    engine = await _started(scorer, max_batch_size=8)
    prompts = [f"prompt number {i}" for i in range(16)]
    results = await asyncio.gather(*(engine.score_prompts([p]) for p in prompts))
    await engine.stop()
    assert [r[0] for r in results] == [fake_score(p) for p in prompts]
    assert max(scorer.batches) > 1 and max(scorer.batches) <= 8
    assert sum(scorer.batches) == 16


async def test_token_budget_splits_batches() -> None:
    scorer = FakeScorer(delay=0.02)
    engine = await _started(scorer, max_batch_size=32, max_batch_tokens=12)
    await asyncio.gather(*(engine.score_prompts(["a b c d"]) for _ in range(6)))  # 4 tokens each
    await engine.stop()
    assert max(scorer.batches) <= 3  # 3 x 4 padded tokens fit in 12


async def test_live_items_go_before_batch_items(gated) -> None:
    engine, scorer, gate = gated
    first = asyncio.create_task(engine.score_prompts(["first"]))
    await _until(lambda: scorer.calls == 1)  # the worker holds "first" at the gate
    batch = asyncio.create_task(engine.score_prompts(["b1", "b2", "b3"], priority="batch"))
    await _until(lambda: engine.queue_depth("batch") == 3)
    live = asyncio.create_task(engine.score_prompts(["l1", "l2"]))
    await _until(lambda: engine.queue_depth("live") == 2)
    gate.set()
    await asyncio.gather(first, batch, live)
    assert scorer.seen == ["first", "l1", "l2", "b1", "b2", "b3"]
    assert scorer.batches == [1, 2, 3]  # live and job items never share a batch


async def test_full_queue_refuses_with_retry_after(gated) -> None:
    engine, scorer, gate = gated
    first = asyncio.create_task(engine.score_prompts(["first"]))
    await _until(lambda: scorer.calls == 1)
    queued = asyncio.create_task(engine.score_prompts(["a", "b", "c"]))
    await _until(lambda: engine.queue_depth() == 3)
    with pytest.raises(QueueFull) as info:
        await engine.score_prompts(["one too many"])
    assert info.value.retry_after >= 1
    # a full live queue does not block batch work, which has its own bound
    batch = asyncio.create_task(engine.score_prompts(["job item"], priority="batch"))
    gate.set()
    assert len(await queued) == 3 and len(await first) == 1 and len(await batch) == 1


async def test_deadline_passes_while_queued(gated) -> None:
    engine, scorer, gate = gated
    first = asyncio.create_task(engine.score_prompts(["first"]))
    await _until(lambda: scorer.calls == 1)
    with pytest.raises(DeadlineExceeded):
        await engine.score_prompts(["late"], deadline=time.monotonic() + 0.05)
    assert engine.queue_depth() == 0  # the abandoned item left the queue
    gate.set()
    await first
    await engine.score_prompts(["after"])
    assert "late" not in scorer.seen


async def test_a_bad_item_is_refused_at_admission_and_fails_only_its_request(gated) -> None:
    """Validation runs once, in `prepare`, before anything is queued."""
    engine, scorer, gate = gated
    first = asyncio.create_task(engine.score_prompts(["first"]))
    await _until(lambda: scorer.calls == 1)
    good = asyncio.create_task(engine.score_prompts(["who is zorka"], ["zorka"]))
    with pytest.raises(UserError, match="does not occur"):
        await engine.score_prompts(["who is quibe"], ["absent"])
    await _until(lambda: engine.queue_depth() == 1)  # only the good request waits
    gate.set()
    await first
    assert (await good)[0] == fake_score("who is zorka")


async def test_prompt_over_token_limit_is_refused_before_queueing() -> None:
    engine = await _started(FakeScorer())
    with pytest.raises(PromptTooLong, match="limit of 32 tokens"):
        await engine.score_prompts(["ok", "w " * 40])
    await engine.stop()


async def test_entities_average_their_template_prompts() -> None:
    scorer = FakeScorer()
    engine = await _started(scorer)
    [got] = await engine.score_entities(["<zorka>"])
    await engine.stop()
    parts = [fake_score(p) for p, _ in scorer.entity_prompts("<zorka>")]
    want = aggregate_entity(parts)
    assert got == want
    assert got.n_tokens == sum(p.n_tokens for p in parts)
    assert got.stage_probabilities == pytest.approx(
        [sum(c) / len(parts) for c in zip(*(p.stage_probabilities for p in parts), strict=True)]
    )


async def test_live_is_refused_and_batch_waits_while_loading() -> None:
    release = threading.Event()

    def slow_factory(_: ServiceSettings) -> FakeScorer:
        release.wait(10)
        return FakeScorer()

    engine = ScoringEngine(_settings(), Telemetry(), slow_factory)
    await engine.start()
    with pytest.raises(NotReady, match="loading"):
        await engine.score_prompts(["x"])
    job = asyncio.create_task(engine.score_prompts(["x"], priority="batch"))
    await asyncio.sleep(0.05)
    assert not job.done()
    release.set()
    assert (await job)[0] == fake_score("x")
    await engine.stop()


async def test_failed_load_is_reported() -> None:
    def broken(_: ServiceSettings) -> FakeScorer:
        raise RuntimeError("bank is tampered")

    engine = ScoringEngine(_settings(), Telemetry(), broken)
    await engine.start()
    assert not await engine.wait_ready(5)
    assert "tampered" in (engine.load_error or "")
    with pytest.raises(NotReady, match="failed to load"):
        await engine.score_prompts(["x"], priority="batch")
    await engine.stop()


async def test_concurrent_entity_requests_share_evidence_passes() -> None:
    """Each request's entities join one queue of evidence passes: concurrent requests share a
    pass (up to MAX_BATCH_ENTITIES), and each entity gets its own result either way."""
    scorer = FakeScorer(delay=0.05)
    scorer.has_families = True
    engine = await _started(scorer, max_batch_entities=4)
    aliases = [f"<e{i}>" for i in range(10)]
    results = await asyncio.gather(*(engine.score_entities([a]) for a in aliases))
    await engine.stop()
    for alias, [got] in zip(aliases, results, strict=True):
        assert got.families == [fake_family(alias)]
        assert got.model_copy(update={"families": None}) == aggregate_entity(
            [fake_score(p) for p, _ in scorer.entity_prompts(alias)]
        )
    sizes = [len(b) for b in scorer.evidence_batches]
    assert sum(sizes) == 10 and max(sizes) > 1 and max(sizes) <= 4
    counted: dict[str, float] = {}
    for sample in engine.metrics.fused_class.collect()[0].samples:
        if sample.name.endswith("_total"):
            counted[sample.labels["class"]] = sample.value
    want: dict[str, float] = {}
    for alias in aliases:
        c = str(fake_family(alias).estimated_class)
        want[c] = want.get(c, 0) + 1
    assert counted == want  # every entity counted once, by its fused class


async def test_entities_of_requests_scored_together_share_one_pass_without_a_window() -> None:
    """Eight requests whose prompts share one forward share one evidence pass too, and a lone
    request's pass starts at once: entity passes take no timed window."""
    scorer = FakeScorer()
    scorer.has_families = True
    engine = await _started(scorer, max_wait_ms=200)
    together = asyncio.gather(*(engine.score_entities([f"<e{i}>"]) for i in range(8)))
    await asyncio.wait_for(together, timeout=10)
    assert scorer.batches == [16] and [len(b) for b in scorer.evidence_batches] == [8]
    await engine.stop()

    scorer = FakeScorer()
    scorer.has_families = True
    engine = await _started(scorer, max_wait_ms=30_000)
    for i in range(2):  # the second after a batch of two prompts: the prompt window is open
        await asyncio.wait_for(engine.score_entities([f"<alone {i}>"]), timeout=10)
    await engine.stop()
    assert [len(b) for b in scorer.evidence_batches] == [1, 1]


async def test_a_failing_entity_fails_only_its_own_request() -> None:
    scorer = FakeScorer(delay=0.05)
    scorer.has_families, scorer.failing_alias = True, "<bad>"
    engine = await _started(scorer)
    good, bad = await asyncio.gather(
        engine.score_entities(["<good>", "<also good>"]),
        engine.score_entities(["<bad>"]),
        return_exceptions=True,
    )
    await engine.stop()
    assert isinstance(bad, ValueError)
    assert [r.families for r in good] == [[fake_family("<good>")], [fake_family("<also good>")]]


@pytest.fixture
async def held_evidence() -> AsyncIterator[tuple[ScoringEngine, FakeScorer, threading.Event]]:
    """A families engine, one entity per evidence pass, whose passes wait at a gate."""
    gate = threading.Event()
    scorer = FakeScorer()
    scorer.has_families, scorer.evidence_gate = True, gate
    engine = await _started(scorer, max_batch_entities=1)
    yield engine, scorer, gate
    gate.set()
    await engine.stop()


async def test_an_entitys_deadline_covers_its_evidence_pass(held_evidence) -> None:
    engine, scorer, gate = held_evidence
    request = asyncio.create_task(
        engine.score_entities(["<first>", "<second>"], deadline=time.monotonic() + 0.3)
    )
    await _until(lambda: scorer.evidence_calls == 1)  # <first>'s pass holds the worker
    assert engine.queue_depth() == 1  # <second>'s pass waits in the queue
    with pytest.raises(DeadlineExceeded):
        await request
    gate.set()
    await _until(lambda: scorer.evidence_batches == [["<first>"]])
    assert engine.queue_depth() == 0  # the expired pass left the queue and never ran
    await asyncio.sleep(0.05)
    assert scorer.evidence_calls == 1


async def test_stop_fails_queued_evidence_passes(held_evidence) -> None:
    engine, scorer, _ = held_evidence
    request = asyncio.create_task(engine.score_entities(["<first>", "<queued>"]))
    await _until(lambda: scorer.evidence_calls == 1 and engine.queue_depth() == 1)
    await engine.stop()
    with pytest.raises(NotReady, match="shutting down"):
        await request


async def test_stop_fails_queued_items(gated) -> None:
    engine, scorer, _ = gated
    first = asyncio.create_task(engine.score_prompts(["first"]))
    await _until(lambda: scorer.calls == 1)
    queued = asyncio.create_task(engine.score_prompts(["queued"]))
    await _until(lambda: engine.queue_depth() == 1)
    await engine.stop()
    with pytest.raises(NotReady, match="shutting down"):
        await queued
    first.cancel()


async def test_a_batch_request_larger_than_the_queue_goes_in_waves() -> None:
    """Live requests over QUEUE_SIZE are refused (422); a job chunk is split into waves."""
    from audit_service.engine import RequestTooLarge

    scorer = FakeScorer()
    engine = await _started(scorer, queue_size=4, max_batch_size=4)
    prompts = [f"prompt {i}" for i in range(10)]
    got = await engine.score_prompts(prompts, priority="batch")
    assert got == [fake_score(p) for p in prompts]
    assert max(scorer.batches) <= 4
    with pytest.raises(RequestTooLarge, match="QUEUE_SIZE=4"):
        await engine.score_prompts(prompts, priority="live")
    await engine.stop()


async def test_adaptive_wait_forwards_a_lone_request_at_once_and_batches_under_load() -> None:
    """With a 30 s window, a lone request (after lone batches) must not wait for it, while
    requests arriving together after a multi-item batch still share one; with the adaptive wait
    off, the same lone request waits the window out."""
    scorer = FakeScorer()
    engine = await _started(scorer, max_batch_size=2, max_wait_ms=30_000)
    for i in range(3):
        await asyncio.wait_for(engine.score_prompts([f"alone {i}"]), timeout=10)
    assert scorer.batches == [1, 1, 1]
    # one request of three prompts (an entity's templates) is a lone request too
    await asyncio.wait_for(engine.score_prompts(["x", "y", "z"]), timeout=10)
    assert scorer.batches == [1, 1, 1, 2, 1]
    both = asyncio.gather(engine.score_prompts(["a"]), engine.score_prompts(["b"]))
    await asyncio.wait_for(both, timeout=10)  # two queued: the window opens and fills at once
    await engine.stop()
    assert scorer.batches == [1, 1, 1, 2, 1, 2]

    fixed = await _started(FakeScorer(), max_wait_ms=30_000, adaptive_wait=False)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fixed.score_prompts(["alone"]), timeout=0.5)
    await fixed.stop()


async def test_the_null_model_runs_the_served_path_without_the_forward() -> None:
    """NULL_MODEL (the benchmarks' stack ceiling): one real forward, then that result for every
    item, each with its own token count, through the same queue and batcher."""
    scorer = FakeScorer()
    engine = await _started(scorer, null_model=True)
    first = await engine.score_prompts(["one prompt"])
    rest = await asyncio.gather(*(engine.score_prompts([f"p {i} " * (i + 1)]) for i in range(6)))
    await engine.stop()
    assert scorer.calls == 1 and scorer.seen == ["one prompt"]
    for i, (r,) in enumerate(rest):
        want = first[0].model_copy(update={"n_tokens": len(f"p {i} ".split()) * (i + 1)})
        assert r == want


async def test_gc_freeze_moves_the_loaded_objects_out_of_the_collectors_sight() -> None:
    """With GC_FREEZE (the default) the engine freezes the heap once the scorer is loaded, so
    full collections under load stop walking the model's objects; without it, nothing is."""
    import gc

    gc.unfreeze()
    try:
        engine = await _started(FakeScorer(), gc_freeze=False)
        await engine.stop()
        assert gc.get_freeze_count() == 0
        engine = await _started(FakeScorer(), gc_freeze=True)
        await engine.stop()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_torch_threads_sets_the_forwards_intra_op_threads() -> None:
    """Set on the worker thread, where every forward runs (OpenMP's count is per thread)."""
    import torch

    engine = await _started(FakeScorer(), torch_threads=1)
    on_worker = engine._executor.submit(torch.get_num_threads).result(timeout=10)
    await engine.stop()
    assert on_worker == 1
