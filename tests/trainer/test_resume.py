"""Killed mid-stage with SIGKILL, the same command resumes: done stages untouched, run completes."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures_trainer import CLI, cli_env

# Long enough stages (40 steps) that the kill lands inside stage 2, tiny enough to stay fast.
ARGS = [
    "train",
    "--preset",
    "tiny",
    "--seed",
    "1",
    "--set",
    "stage0_epochs=1",
    "--set",
    "epochs_per_stage=8",
    "--set",
    "checkpoint_every=3",
    "--set",
    "retention_max_questions=8",
]


def _digest(stage_dir: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(stage_dir.iterdir())
    }


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"trainer exited ({proc.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path) -> None:
    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[2]
    cmd = [*CLI, *ARGS, "--out", str(out)]
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _wait_for(out / ".ckpt" / "stage_2" / "latest", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert (out / "stage_1").is_dir() and not (out / "stage_2").exists()
    before = {s: _digest(out / s) for s in ("stage_0", "stage_1")}
    killed_at = json.loads((out / ".ckpt" / "stage_2" / "latest").read_text())

    done = subprocess.run(cmd, cwd=root, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "stage_0: already done" in log and "stage_1: already done" in log
    assert "stage_2: resuming at step" in log, log[-2000:]
    step = int(log.split("stage_2: resuming at step ")[1].split("/")[0])
    assert step >= int(killed_at.removeprefix("step_")) > 0
    assert {s: _digest(out / s) for s in ("stage_0", "stage_1")} == before

    run = json.loads((out / "run.json").read_text())
    assert run["final"] == "stage_6" and (out / "stage_6" / "model.safetensors").is_file()
    assert run["timings"]["stage_2"]["resumed_from_step"] == step
    table = json.loads((out / "retention.json").read_text())
    assert [e["after"] for e in table] == ["stage_0", *(f"stage_{k}" for k in range(1, 7))]
    assert not (out / ".ckpt").exists() and not list(out.glob("*.tmp"))

    # a third run has nothing left to do
    again = subprocess.run(
        cmd, cwd=root, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and "stage_6: already done" in again.stdout + again.stderr
