"""The trainer's fixtures: one real tiny six-stage run per pytest session.

Set RECENCY_AUDIT_TEST_CACHE=/some/dir to keep the run between pytest invocations: the trainer
resumes, so a finished cached run costs only a verification pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The console script, as a module run (no dependence on the venv's bin/ being on PATH).
CLI = [sys.executable, "-m", "recency_audit"]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: one thread, offline, no tokenizer fork warnings."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `recency-audit ARGS` from the repository root and capture its output."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [*CLI, *args],
        cwd=root,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_tiny(out: Path, *, seed: int = 0) -> Path:
    """Train (or resume, or just verify) the `tiny` preset into `out`, in this process."""
    from probe_bank.errors import UserError
    from trainer.config import resolve_config
    from trainer.run import RunOptions, train_run

    cfg = resolve_config("tiny", seed=seed)
    try:
        train_run(cfg, RunOptions(preset="tiny", out=out))
    except UserError:
        # a cached run from an older recipe: start over rather than fail the session
        shutil.rmtree(out)
        train_run(cfg, RunOptions(preset="tiny", out=out))
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR of a finished `tiny` run (seed 0): corpus, tokenizer, stage_0..stage_6, retention.

    Read-only by convention: copy it before changing anything.
    """
    cache = os.environ.get("RECENCY_AUDIT_TEST_CACHE")
    out = Path(cache) / "tiny_run" if cache else tmp_path_factory.mktemp("tiny") / "run"
    return train_tiny(out)
