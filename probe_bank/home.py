"""The artifacts home: one root (`$RECENCY_AUDIT_HOME`, default ./artifacts) and its layout."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "RECENCY_AUDIT_HOME"


def home_dir() -> Path:
    return Path(os.environ.get(ENV, "artifacts"))
