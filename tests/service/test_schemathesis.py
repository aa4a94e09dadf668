"""`schemathesis run --checks all` against a real `recency-audit serve` on 127.0.0.1 (issue 13.14).

Every built-in check over every operation (coverage, fuzzing and stateful phases): no server
error, status codes, content types and headers as declared, response schemas, schema-valid data
accepted and schema-violating data rejected, auth enforced where declared. The few API rules a
JSON Schema cannot state are listed, with their reasons, in `schemathesis.toml` next to this
file. Bounded: a fixed seed, 10 examples per operation, a time budget.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.jobs.server import ROOT, free_port
from tests.service.conftest import KEYS


@pytest.fixture
def server(tiny_bank: Path, tmp_path: Path):
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "RECENCY_AUDIT_HOME": str(tmp_path / "home"),
        "RECENCY_AUDIT_API_KEYS": KEYS,
        "RECENCY_AUDIT_MAX_ITEMS": "16",
    }
    cmd = [sys.executable, "-m", "recency_audit", "serve", "--bank", str(tiny_bank)]
    cmd += ["--port", str(port)]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        assert time.monotonic() < end
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_every_schemathesis_check_passes(server: str, tmp_path: Path) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe is not None
    config = Path(__file__).with_name("schemathesis.toml")
    cmd = [exe, "--config-file", str(config), "run", server + "/schema/openapi.json"]
    cmd += ["--checks", "all", "-H", "Authorization: Bearer full-key", "--seed", "1"]
    cmd += ["--max-examples", "10", "--workers", "1", "--max-time", "90", "--no-color"]
    cmd += ["--request-timeout", "30"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = done.stdout[done.stdout.rindex("SUMMARY") :]
    assert "Tested: 13" in summary
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
