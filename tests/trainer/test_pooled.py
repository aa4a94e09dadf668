"""research/pooled.py: the inverse-variance pooling is the textbook one, and every recorded
pretrained run (older rows' `controls` key included) is read at the cell fixed in advance."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "research"))

from pooled import Row, pool, recipe, summarise  # noqa: E402


def test_equal_errors_pool_to_the_mean_with_a_narrower_interval() -> None:
    half = 1.959964 * 0.02  # each run: standard error 0.02
    got = pool(
        [0.50, 0.54], [(0.50 - half, 0.50 + half), (0.54 - half, 0.54 + half)], [500] * 2, 0.5
    )
    assert got["fixed"] == pytest.approx(0.52)
    lo, hi = got["fixed_ci95"]  # type: ignore[misc]
    assert hi - lo == pytest.approx(2 * 1.959964 * 0.02 / math.sqrt(2), abs=1e-3)
    assert got["above_chance"] == 1 and got["runs"] == 2
    # each run lies one standard error from the pooled mean: Q = 2 > k - 1, so tau > 0
    assert got["cochran_q"] == pytest.approx(2.0, abs=1e-3)
    assert got["tau"] > 0 and got["random_ci95"][1] - got["random_ci95"][0] > hi - lo  # type: ignore[index]


def test_a_zero_width_interval_weighs_as_one_entity_not_without_bound() -> None:
    got = pool([1.0, 0.5], [(1.0, 1.0), (0.45, 0.55)], [500, 500], 0.5)
    assert 0.5 < got["fixed"] < 1.0  # type: ignore[operator]


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
