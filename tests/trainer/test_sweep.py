"""`recency-audit sweep`: spec validation, resumable recording, and a real row from a tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from trainer.sweep import HEADLINE, SweepSpec, load_spec, results_table, run_sweep


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), "utf-8")
    return path


def test_spec_rejects_duplicate_and_unsafe_names(tmp_path: Path) -> None:
    dup = _write(tmp_path / "dup.json", {"configs": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(UserError, match="unique"):
        load_spec(dup)
    bad = _write(tmp_path / "bad.json", {"configs": [{"name": "../escape"}]})
    with pytest.raises(UserError, match="not a valid sweep spec"):
        load_spec(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_spec(tmp_path / "missing.json")


def test_recorded_configs_are_not_rerun(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text(json.dumps({"name": "done"}) + "\n", "utf-8")
    spec = SweepSpec.model_validate({"configs": [{"name": "done", "preset": "tiny"}]})
    run_sweep(spec, tmp_path)  # would train into tmp_path/done/run if it ignored the record
    assert not (tmp_path / "done").exists()


def test_row_matches_the_bank_it_records(tiny_run: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_run, tmp_path / "t0" / "run")  # finished: the trainer only verifies it
    spec = SweepSpec.model_validate(
        {"configs": [{"name": "t0", "preset": "tiny", "seed": 0}], "fast_bank": True}
    )
    results = run_sweep(spec, tmp_path)
    (row,) = [json.loads(line) for line in results.read_text("utf-8").splitlines()]
    metrics = json.loads((tmp_path / "t0" / "bank" / "metrics.json").read_text("utf-8"))
    for key in HEADLINE:
        assert row[key] == metrics[key]
    assert row["config"]["seed"] == 0 and row["retention_after_last"]["after"] == "stage_6"
    table = results_table(results)
    assert "| t0 | 0 |" in table and f"{metrics['stage1_vs_stage6']['value']:.3f}" in table


def test_the_table_pools_its_runs_with_an_interval(tmp_path: Path) -> None:
    """Several runs end in one pooled row (random effects, 95% interval), not a bare mean."""

    def row(name: str, value: float) -> dict:
        cell = {"value": value, "ci95": [value - 0.04, value + 0.04], "n_entities": 500}
        cols = ("stage1_vs_stage6", "early_vs_late", "adjacent_mean", "stage_accuracy")
        return {
            "name": name,
            "seed": 0,
            **{c: cell for c in cols},
            "centroid_order_spearman": {"value": 0.1},
            "baselines": {"answer_loss": {"stage1_vs_stage6": {"value": 0.99}}},
        }

    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(row(n, v)) + "\n" for n, v in (("a", 0.51), ("b", 0.53))))
    last = results_table(results).splitlines()[-1]
    assert last.startswith("| 2 pooled | |")
    # the runs agree within their intervals (tau = 0): 0.52 +- 1.96 x (0.04 / 1.96) / sqrt(2)
    assert last.count("0.520 [0.492, 0.548]") == 4
