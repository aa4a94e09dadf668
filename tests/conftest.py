"""Shared fixtures. Each package's fixtures live in their own plugin module, listed here."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures_models",
    "tests.fixtures_trainer",
    "tests.fixtures_bank",
]
