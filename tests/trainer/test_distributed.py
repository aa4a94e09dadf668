"""The same train command runs data-parallel under `accelerate launch` with 2 CPU processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures_trainer import cli_env
from tests.launch import accelerate_launch


@pytest.mark.slow
def test_two_process_accelerate_launch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[2]
    cmd = [
        *accelerate_launch(2),
        str(root / "recency_audit.py"),
        "train",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--set",
        "max_steps_per_stage=2",
        "--set",
        "retention_max_questions=4",
    ]
    env = cli_env(CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["final"] == "stage_6"
    assert {t["num_processes"] for t in run["timings"].values()} == {2}
    assert {t["steps"] for t in run["timings"].values()} == {2}
    assert len(json.loads((out / "retention.json").read_text())) == 7
    # the log is printed once (main process), not once per process
    assert (done.stdout + done.stderr).count("done: ") == 1
