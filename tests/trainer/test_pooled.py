"""research/pooled.py reads every recorded pretrained run (older rows' `controls` key included)
at the cell fixed in advance (the pooling itself: tests/probe_bank/test_pooled_stats.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research"))

from pooled import Row, recipe, summarise  # noqa: E402


def test_recipe_drops_only_the_seed() -> None:
    assert recipe("pretrained-natural-s2") == "pretrained-natural"
    assert recipe("lr1e-4-const-s0") == "lr1e-4-const"
    assert recipe("pretrained-s10") == "pretrained"


def test_the_recorded_runs_all_parse_and_pool() -> None:
    rows = [
        Row.model_validate_json(line)
        for path in sorted((ROOT / "research/sweeps").glob("pretrained*.results.jsonl"))
        for line in path.read_text("utf-8").splitlines()
        if line.strip()
    ]
    rows = [r for r in rows if (r.layer, r.position) == (22, "last") and r.stage != "mixed"]
    assert len(rows) >= 12 and all(r.baselines for r in rows)  # `controls` read as baselines
    summary = summarise(rows)
    probe = summary["probe"]
    assert isinstance(probe, dict)
    perm = probe["stage1_vs_stage6"]["permutation"]
    assert perm["runs"] == len(rows) and 0 < perm["fisher_p"] <= 1


def test_the_recorded_power_records_parse_and_pool() -> None:
    from pooled import Power, summarise_readers

    records = [
        Power.model_validate_json(p.read_text("utf-8"))
        for p in sorted((ROOT / "research/power").glob("pretrained-*.json"))
    ]
    assert records and all((r.layer, r.position) == (22, "last") for r in records)
    readers = summarise_readers(records)
    task = readers["stage1_vs_stage6"]
    assert isinstance(task, dict) and "logistic_C" in task
    assert task["logistic_C"]["runs"] == len(records) and 0 < task["logistic_C"]["fisher_p"] <= 1
