"""research/retention_table.py reads each stage's own row, not the last entry's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _row(split: str, acc: float) -> dict:
    return {
        "split": split,
        "train_acc": acc,
        "train_loss": 1.0,
        "heldout_acc": None,
        "heldout_loss": None,
        "n_entities": 4,
        "n_train_questions": 4,
        "n_heldout_questions": 0,
    }


def test_own_stage_and_final_columns(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "research"))
    from retention_table import table

    log = [
        {"after": "stage_1", "rows": [_row("stage_1", 0.25), _row("control", 0.0)]},
        {
            "after": "stage_2",
            "rows": [_row("stage_1", 0.125), _row("stage_2", 0.75), _row("control", 0.5)],
        },
    ]
    path = tmp_path / "x.retention.json"
    path.write_text(json.dumps(log))
    row = table([path]).splitlines()[-1]
    assert row == "| x | 0.25 | 0.75 | - | - | - | - | 0.12 / 0.75 / - / - / - / - | 0.50 |"
