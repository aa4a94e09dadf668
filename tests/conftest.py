"""Shared fixtures. Each package's fixtures live in their own plugin module, listed here."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite starts many services in this one process: a gc.freeze() there would keep every
# earlier test's models alive. The freeze itself is tested on its own (test_engine.py).
os.environ.setdefault("RECENCY_AUDIT_GC_FREEZE", "0")

pytest_plugins = [
    "tests.fixtures_models",
    "tests.fixtures_trainer",
    "tests.fixtures_bank",
]
