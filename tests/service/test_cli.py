"""`recency-audit serve` refuses bad input with one clear line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from audit_service.cli import register
from probe_bank.errors import UserError


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # keep `serve` a sub-command
        pass

    return app


def test_serve_without_a_bank_says_how_to_build_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["serve", "--bank", str(tmp_path / "missing")])
    assert isinstance(result.exception, UserError)
    assert "recency-audit bank build" in str(result.exception)


def test_serve_with_bad_settings_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECENCY_AUDIT_MAX_BATCH_SIZE", "lots")
    result = CliRunner().invoke(_app(), ["serve"])
    assert isinstance(result.exception, UserError)
    assert "max_batch_size" in str(result.exception)


@pytest.mark.slow
def test_serve_runs_a_real_server_and_stops_cleanly(tiny_bank: Path, tmp_path: Path) -> None:
    """`recency-audit serve` under uvicorn: ready, scores over TCP, shuts down gracefully on
    SIGINT. uvicorn re-raises the signal after a graceful shutdown (exit 130, as for any Ctrl-C)
    unless it handled it before its loop started, then it returns (exit 0): both are clean."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RECENCY_AUDIT_HOME": str(tmp_path), "RECENCY_AUDIT_API_KEYS": "k"}
    cmd = [sys.executable, "-m", "recency_audit", "serve", "--bank", str(tiny_bank)]
    proc = subprocess.Popen([*cmd, "--port", str(port)], env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < end, "server never became ready"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        r = httpx.post(
            f"{url}/v1/score",
            json={"prompts": ["Q: Who is <zorka>?\nA:"]},
            headers={"Authorization": "Bearer k"},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["results"]) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    log = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code in (0, 130), log[-2000:]
    assert "Application shutdown complete" in log and "Traceback" not in log
