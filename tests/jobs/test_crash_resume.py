"""kill -9 in the middle of a job, restart: the job resumes from its last committed chunk and
its results are byte-identical to an uninterrupted run (real uvicorn server on 127.0.0.1)."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from tests.jobs.data import write_dataset
from tests.jobs.server import LiveTraffic, ServiceProcess, wait_job

N = 30


def _done_in_store(state_dir, job_id: str) -> int:
    db = sqlite3.connect(state_dir / "jobs.sqlite3")
    try:
        return db.execute("SELECT done FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    finally:
        db.close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.slow
def test_kill9_mid_job_then_restart_gives_identical_results(tiny_bank, tmp_path) -> None:
    state = tmp_path / "state"
    dataset = write_dataset(tiny_bank, tmp_path / "ds.jsonl", N).read_bytes()
    env = {
        "RECENCY_AUDIT_BANK_DIR": str(tiny_bank),
        "RECENCY_AUDIT_STATE_DIR": str(state),
        "RECENCY_AUDIT_DATA_DIR": str(tmp_path / "data"),
        "RECENCY_AUDIT_JOBS_CHUNK_SIZE": "2",
        "RECENCY_AUDIT_JOBS_CHUNK_PAUSE_S": "0.25",
    }
    headers = {"Content-Type": "application/x-ndjson"}
    first = ServiceProcess(env, tmp_path / "server1.log").start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            reference = client.post("/v1/jobs", content=dataset, headers=headers).json()["id"]
            victim = client.post("/v1/jobs", content=dataset, headers=headers).json()["id"]
            assert wait_job(client, reference)["state"] == "succeeded"
            # Live traffic (prompts of other lengths) shares the engine with the victim job; it
            # must neither starve nor change the job's bytes.
            with LiveTraffic(first.url) as live:
                deadline = time.monotonic() + 60
                while client.get(f"/v1/jobs/{victim}").json()["done"] < 4:
                    assert time.monotonic() < deadline, "victim job made no progress"
                    time.sleep(0.05)
            assert live.ok > 0 and not live.failed, live.failed[:3]
            assert client.get(f"/v1/jobs/{victim}").json()["state"] == "running"
        first.kill9()
    finally:
        first.stop()
    done_at_kill = _done_in_store(state, victim)
    assert 4 <= done_at_kill < N and done_at_kill % 2 == 0  # whole chunks only

    second = ServiceProcess(env, tmp_path / "server2.log")
    with second, httpx.Client(base_url=second.url, timeout=30) as client:
        with LiveTraffic(second.url) as live:
            status = wait_job(client, victim)
        assert live.ok > 0 and not live.failed, live.failed[:3]
        assert status["state"] == "succeeded" and status["done"] == N, status
        ref_bytes = client.get(f"/v1/jobs/{reference}/results").content
        got_bytes = client.get(f"/v1/jobs/{victim}/results").content
        metrics = client.get("/metrics").text
    assert got_bytes == ref_bytes
    records = [json.loads(line) for line in got_bytes.decode().splitlines()]
    assert [r["index"] for r in records] == list(range(N))  # none missing, none twice
    assert records[1]["id"] == "e1" and "estimated_stage" in records[1]
    # The restarted process scored only what had not been committed before the kill.
    assert _metric(metrics, "recency_audit_job_items_scored_total") == N - done_at_kill
