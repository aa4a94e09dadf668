"""`schemathesis run --checks all` against a real `recency-audit serve` on 127.0.0.1 (issue 13.14).

Every built-in check over every operation (coverage, fuzzing and stateful phases): no server
error, status codes, content types and headers as declared, response schemas, schema-valid data
accepted and schema-violating data rejected, auth enforced where declared. The few API rules a
JSON Schema cannot state are listed, with their reasons, in `schemathesis.toml` next to this
file. Bounded: a fixed seed, 10 examples per operation, a time budget.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.server import ServiceProcess
from tests.service.conftest import KEYS


@pytest.fixture
def server(tiny_bank: Path, tmp_path: Path):
    env = {
        "RECENCY_AUDIT_BANK_DIR": str(tiny_bank),
        "RECENCY_AUDIT_HOME": str(tmp_path / "home"),
        "RECENCY_AUDIT_API_KEYS": KEYS,
        "RECENCY_AUDIT_MAX_ITEMS": "16",
    }
    with ServiceProcess(env, tmp_path / "serve.log", cli=True) as service:
        yield service.url


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
    assert "Tested: 14" in summary
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
