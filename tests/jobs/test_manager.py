"""JobManager over a fake engine: order, ids, per-item errors, failures, cancel, resume."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry, generate_latest

from audit_service.jobs.datasets import DatasetItem
from audit_service.jobs.manager import JobManager, JobsConfig
from audit_service.jobs.store import JobState
from probe_bank.evidence import bank_evidence
from tests.jobs.fakes import FakeEngine, FakeSettings, fake_score


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()


def _items(n: int) -> list[DatasetItem]:
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(DatasetItem(id=f"e{i}", entity=f"<ent{i}>"))
        else:
            out.append(DatasetItem(id=i, prompt=f"Who is <ent{i}>?"))
    return out


async def _wait(manager: JobManager, job_id: str, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while not (status := manager.get(job_id)).state.finished:
            await asyncio.sleep(0.01)
    return status


async def _run(tmp_path, items, *, engine=None, config=None, metrics=None):
    manager = JobManager(config or JobsConfig(chunk_size=4))
    await manager.start(engine or FakeEngine(), FakeSettings(tmp_path, tmp_path), metrics)
    try:
        job = await manager.submit(items, source="test")
        status = await _wait(manager, job.id)
        return status, list(manager.results(job.id)), manager.summary(job.id, top=3)
    finally:
        await manager.stop()


def test_results_in_input_order_echo_ids_and_use_batch_priority(tmp_path) -> None:
    engine = FakeEngine()
    items = _items(10)
    status, lines, summary = asyncio.run(_run(tmp_path, items, engine=engine))
    assert (status.state, status.done, status.total, status.errors) == ("succeeded", 10, 10, 0)
    records = [json.loads(line) for line in lines]
    assert [r["index"] for r in records] == list(range(10))
    assert [r["id"] for r in records] == [i.id for i in items]
    expected = fake_score("entity:<ent2>")
    assert records[2]["estimated_stage"] == expected.estimated_stage
    assert records[2]["recency_score"] == round(expected.recency_score, 6)
    assert {priority for _, _, priority in engine.calls} == {"batch"}
    assert sum(summary.stage_histogram.values()) == 10
    best = max(records, key=lambda r: r["recency_score"])
    assert summary.most_recent[0]["index"] == best["index"]
    assert len(summary.most_recent) == 3


def test_result_lines_and_summary_say_which_scores_are_in_sample(tmp_path) -> None:
    """Inputs about entities the bank was fitted on carry in_bank_sample: true, and are counted."""
    engine = FakeEngine(fitted=frozenset({"<ent2>", "<ent3>"}))
    items = [
        *_items(6),  # entities <ent2> (fitted) and <ent5>; prompts without alias
        DatasetItem(id="p", prompt="Who is <ent3>?", alias="<ent3>"),
        DatasetItem(id="q", prompt="Who is <ent9>?", alias="<ent9>"),
    ]
    _, lines, summary = asyncio.run(_run(tmp_path, items, engine=engine))
    flags = {r["id"]: r["in_bank_sample"] for r in map(json.loads, lines)}
    assert flags == {
        0: None,
        1: None,
        "e2": True,
        3: None,
        4: None,
        "e5": False,
        "p": True,
        "q": False,
    }
    assert summary.in_bank_sample == 2
    assert all("in_bank_sample" in r for r in summary.most_recent)


def test_refused_input_becomes_an_error_line_not_a_dead_job(tmp_path) -> None:
    items = [
        DatasetItem(prompt="ok one"),
        DatasetItem(id="x", prompt="BAD"),
        DatasetItem(prompt="ok"),
    ]
    status, lines, summary = asyncio.run(_run(tmp_path, items))
    assert (status.state, status.errors) == ("succeeded", 1)
    bad = json.loads(lines[1])
    assert bad["id"] == "x" and bad["error"] == "prompt too long"
    assert "estimated_stage" in json.loads(lines[0])
    assert summary.errors == 1 and summary.scored == 2


def test_engine_failure_fails_the_job_with_its_reason(tmp_path) -> None:
    config = JobsConfig(chunk_size=4, retries=1)
    status, lines, _ = asyncio.run(
        _run(tmp_path, _items(3), engine=FakeEngine(fail_times=5), config=config)
    )
    assert status.state == "failed"
    assert "engine hiccup" in (status.error or "")
    assert lines == []


def test_transient_failure_is_retried(tmp_path) -> None:
    status, lines, _ = asyncio.run(_run(tmp_path, _items(3), engine=FakeEngine(fail_times=1)))
    assert status.state == "succeeded" and len(lines) == 3


def test_cancel_stops_a_running_job(tmp_path) -> None:
    async def scenario():
        manager = JobManager(JobsConfig(chunk_size=2, chunk_pause_s=0.05))
        await manager.start(FakeEngine(), FakeSettings(tmp_path, tmp_path))
        try:
            job = await manager.submit(_items(40), source="t")
            while manager.get(job.id).done < 2:
                await asyncio.sleep(0.01)
            manager.cancel(job.id)
            await asyncio.sleep(0.2)
            status = manager.get(job.id)
            later = await manager.submit(_items(2), source="t2")  # the worker goes on
            assert (await _wait(manager, later.id)).state == "succeeded"
            return status, len(list(manager.results(job.id)))
        finally:
            await manager.stop()

    status, n = asyncio.run(scenario())
    assert status.state == JobState.CANCELLED
    assert 2 <= status.done < 40 and n == status.done


def test_stop_mid_job_then_restart_resumes_to_identical_results(tmp_path) -> None:
    items = _items(23)
    _, reference, _ = asyncio.run(_run(tmp_path / "ref", items))

    async def interrupted():
        state = tmp_path / "resume"
        first = JobManager(JobsConfig(chunk_size=3, chunk_pause_s=0.02))
        await first.start(FakeEngine(), FakeSettings(state, state))
        job = await first.submit(items, source="t")
        while first.get(job.id).done < 6:
            await asyncio.sleep(0.005)
        await first.stop()
        mid = first_done = None
        second = JobManager(JobsConfig(chunk_size=50))  # a new chunk size does not apply
        await second.start(FakeEngine(), FakeSettings(state, state))
        try:
            mid = second.store.get(job.id)
            first_done = mid.done if mid else None
            await _wait(second, job.id)
            return first_done, mid, list(second.results(job.id))
        finally:
            await second.stop()

    first_done, mid, lines = asyncio.run(interrupted())
    assert mid is not None and mid.state == "running" and 6 <= (first_done or 0) < 23
    assert lines == reference


def test_job_metrics_are_registered_and_removed(tmp_path) -> None:
    metrics = _Metrics()

    async def scenario():
        manager = JobManager(JobsConfig(chunk_size=4))
        await manager.start(FakeEngine(), FakeSettings(tmp_path, tmp_path), metrics)
        job = await manager.submit(_items(5), source="t")
        await _wait(manager, job.id)
        text = generate_latest(metrics.registry).decode()
        await manager.stop()
        return text, generate_latest(metrics.registry).decode()

    during, after = asyncio.run(scenario())
    assert 'recency_audit_jobs{state="succeeded"} 1.0' in during
    assert "recency_audit_job_items_scored_total 5.0" in during
    assert "recency_audit_jobs" not in after


class _Serving(FakeEngine):
    """The fake engine as the real one presents itself to jobs: the bank and model it serves,
    and that bank's evidence."""

    def __init__(self, bank_id: str, weights: str = "weights-a", **kw) -> None:
        super().__init__(**kw)
        self.serving = (bank_id, weights)
        self.evidence = bank_evidence(None)  # "unknown": any BankEvidence will do


def test_a_job_is_scored_by_one_bank_and_its_summary_carries_that_banks_evidence(
    tmp_path,
) -> None:
    """The bank and model are fixed when a job first runs and shown in its status; the summary
    carries the bank's evidence while that bank is served. Resumed under another bank, the job
    fails with both named instead of mixing two banks' results."""
    items = _items(12)

    async def scenario():
        state = tmp_path / "state"
        first = JobManager(JobsConfig(chunk_size=3, chunk_pause_s=0.02))
        await first.start(_Serving("bank-a"), FakeSettings(state, state))
        done = await first.submit(items[:3], source="t")
        finished = await _wait(first, done.id)
        summary = first.summary(done.id)
        job = await first.submit(items, source="t")
        while first.get(job.id).done < 3:
            await asyncio.sleep(0.005)
        await first.stop()
        second = JobManager(JobsConfig(chunk_size=3))
        await second.start(_Serving("bank-b"), FakeSettings(state, state))
        try:
            failed = await _wait(second, job.id)
            return finished, summary, failed, second.summary(done.id)
        finally:
            await second.stop()

    finished, summary, failed, later = asyncio.run(scenario())
    assert (finished.state, finished.bank_id, finished.model_fingerprint) == (
        "succeeded",
        "bank-a",
        "weights-a",
    )
    assert summary.bank_id == "bank-a" and summary.evidence is not None
    assert summary.evidence.verdict == "unknown"
    assert failed.state == "failed" and failed.bank_id == "bank-a"
    assert failed.error is not None and "bank bank-a" in failed.error
    assert "bank bank-b" in failed.error and "submit the dataset again" in failed.error
    assert later.bank_id == "bank-a" and later.evidence is None  # bank-b is served now
