"""The GPU serving run, rehearsed on CPU at toy size: the script a lent GPU runs must work first
time, so its device minutes go to the measurement (issue 14.4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed (scripts/setup.sh)")
def test_the_gpu_serving_script_runs_end_to_end_at_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "bench/serve_gpu.py"), "--toy", "--out", str(out)]
    cmd += ["--levels", "1,2", "--per-client", "2", "--min-requests", "8", "--bound-seconds", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "serve.json").read_text())
    assert result["compute_bound_prompts_per_s"] > 0
    for server in ("batched", "naive"):
        for kind in ("prompt", "entities8"):
            levels = result[server][kind]
            assert [r["clients"] for r in levels] == [1, 2]
            assert all(r["requests"] >= 8 and r["errors"] == 0 for r in levels), levels
    assert [r["clients"] for r in result["batched"]["healthz"]] == [1, 2]
    assert "| clients | batched req/s |" in (out / "serve.md").read_text()
    assert json.loads((out / "env.json").read_text())["serve_bench_rc"] == 0
    assert not (out / "work/model").exists()  # OUT stays small for the transfer back
