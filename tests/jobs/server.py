"""A real service process on 127.0.0.1 (uvicorn subprocess), for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """`uvicorn audit_service.app:create_app --factory` with RECENCY_AUDIT_* settings from `env`;
    with `cli=True`, `recency-audit serve` itself (the production protocol and its deadlines)."""

    def __init__(
        self, env: dict[str, str], log_path: Path, port: int | None = None, *, cli: bool = False
    ) -> None:
        self.cli = cli
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 120.0) -> ServiceProcess:
        cmd = [
            sys.executable, "-m", "uvicorn", "audit_service.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        if self.cli:
            cmd = [sys.executable, "-m", "recency_audit", "serve", "--port", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, cwd=ROOT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"service not ready in {ready_timeout}s: {self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    """Poll a job until it is finished (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in {"succeeded", "failed", "cancelled"}:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


class LiveTraffic:
    """Background live scoring requests of varying prompt lengths (a thread), while a job runs."""

    def __init__(self, url: str, pause_s: float = 0.03) -> None:
        self.url = url
        self.pause_s = pause_s
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                words = " and".join([" more"] * (i % 7))
                prompt = f"Q: Who is <live{i}>{words}?\nA:"
                r = client.post("/v1/score", json={"prompts": [prompt]})
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{r.status_code} {r.text[:200]}")
                i += 1
                time.sleep(self.pause_s)

    def __enter__(self) -> LiveTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
