"""The GPU script of the `pretrained` preset, rehearsed on CPU at toy size (a tiny random base)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_trainer import cli_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_script_records_one_row_per_seed(random_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    cmd = [
        sys.executable,
        str(ROOT / "research/pretrained_gpu.py"),
        "--out",
        str(out),
        "--seeds",
        "0",
        "--entities",
        "6",
        "--batch-size",
        "8",
        "--base-model",
        str(random_model_dir),
        "--mixed-epochs",
        "1",
    ]
    env = cli_env(RECENCY_AUDIT_HOME=str(tmp_path / "home"))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["pretrained-gpu-e6-s0", "pretrained-gpu-e6-s0-mixed"]
    assert [r["stage"] for r in rows] == ["stage_6", "mixed"]
    assert rows[1]["retention_after_last"]["after"] == "mixed"
    row = rows[0]
    assert row["build"] == "pretrained" and row["base_model"] == str(random_model_dir)
    assert row["config"]["entities_per_stage"] == 6 and row["config"]["batch_size"] == 8
    assert "pre-registered" in row["selection"]
    for key in ("stage1_vs_stage6", "early_vs_late", "adjacent_mean", "stage_accuracy"):
        lo, hi = row[key]["ci95"]
        assert lo <= row[key]["value"] <= hi
    assert row["retention_after_last"]["after"] == "stage_6"
    assert row["train_tokens_per_s"] > 0
