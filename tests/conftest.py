"""Shared fixtures. Each package's fixtures live in their own plugin module, listed here."""

import os
import shutil
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite starts many services in this one process: a gc.freeze() there would keep every
# earlier test's models alive. The freeze itself is tested on its own (test_engine.py).
os.environ.setdefault("RECENCY_AUDIT_GC_FREEZE", "0")

# Every artifact a test does not place itself (job state, data, bases, banks) goes under a temporary
# HOME, never the checkout's ./artifacts; subprocesses inherit it. Tests that need their own HOME
# still set it (tests/service/conftest.py gives each app a fresh one).
_SESSION_HOME = tempfile.mkdtemp(prefix="recency-audit-tests-")
os.environ["RECENCY_AUDIT_HOME"] = _SESSION_HOME


def pytest_sessionfinish() -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


pytest_plugins = [
    "tests.fixtures_models",
    "tests.fixtures_trainer",
    "tests.fixtures_bank",
]
