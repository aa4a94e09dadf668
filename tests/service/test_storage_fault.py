"""A storage fault (the job store's files cannot grow) pauses jobs, refuses submits with 503 +
Retry-After, and the job resumes from its last committed chunk once the fault is gone (issue
13.2). Real `recency-audit serve` processes on 127.0.0.1; the fault is RLIMIT_FSIZE on the
server (writes past the limit fail with EFBIG, as on a full disk), which needs no privileges."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.jobs.server import ROOT, free_port

N = 400


def _serve(bank: Path, home: Path, log: Path, fsize: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECENCY_AUDIT_HOME": str(home)}
    env.update(RECENCY_AUDIT_API_KEYS="", RECENCY_AUDIT_JOBS_CHUNK_SIZE="20")

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    cmd = [sys.executable, "-m", "recency_audit", "serve", "--bank", str(bank), "--port", str(port)]
    out = open(log, "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out, preexec_fn=limit)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        assert time.monotonic() < end
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def test_full_storage_pauses_the_job_and_it_resumes(tiny_bank: Path, tmp_path: Path) -> None:
    from audit_service.jobs.datasets import DatasetItem
    from audit_service.jobs.manager import STORE_NAME
    from audit_service.jobs.store import JobStore

    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    db = home / "state" / STORE_NAME
    store = JobStore(db)
    job_id = store.create(
        [DatasetItem(entity=f"<e{i:04d}q>") for i in range(N)], chunk_size=20, source="test"
    ).id
    store.close()
    size = max(p.stat().st_size for p in db.parent.iterdir())
    proc, url = _serve(tiny_bank, home, tmp_path / "b.log", fsize=size + 48 * 1024)
    try:
        end = time.monotonic() + 60
        while "paused" not in (tmp_path / "b.log").read_text():
            st = httpx.get(f"{url}/v1/jobs/{job_id}").json()
            assert st["state"] != "succeeded", "the limit never bit: raise N"
            assert time.monotonic() < end, st
            time.sleep(0.2)
        st = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        assert st["state"] in ("queued", "running"), st  # paused, not failed for good
        assert 0 <= st["done"] < N
        r = httpx.post(
            f"{url}/v1/jobs",
            content=b'{"entity": "<new>"}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
    finally:
        _stop(proc)
    proc, url = _serve(tiny_bank, home, tmp_path / "c.log", fsize=None)  # space freed
    try:
        end = time.monotonic() + 120
        while (st := httpx.get(f"{url}/v1/jobs/{job_id}").json())["state"] != "succeeded":
            assert st["state"] in ("queued", "running") and time.monotonic() < end, st
            time.sleep(0.2)
        lines = httpx.get(f"{url}/v1/jobs/{job_id}/results").text.splitlines()
        indices = [json.loads(line)["index"] for line in lines]
        assert sorted(indices) == list(range(N)), "lost or duplicated inputs"
    finally:
        _stop(proc)


@pytest.mark.parametrize("message", ["database or disk is full", "disk I/O error"])
def test_storage_faults_are_typed(tmp_path: Path, message: str) -> None:
    import sqlite3

    from audit_service.jobs.store import JobState, JobStore, StorageUnavailable

    store = JobStore(tmp_path / "s.sqlite3")

    class Failing:
        def execute(self, sql: str, *a: object) -> object:
            if sql == "COMMIT":
                raise sqlite3.OperationalError(message)
            return store_db.execute(sql, *a)

    store_db = store._db
    store._db = Failing()  # type: ignore[assignment]
    with pytest.raises(StorageUnavailable):
        store.set_state("job_x", JobState.RUNNING)
    store._db = store_db
