"""`pooled`: runs' held-out figures pooled by inverse variance, as the textbook does."""

from __future__ import annotations

import math

import pytest

from probe_bank.heldout.stats import Z95, pooled


def _ci(value: float, se: float) -> tuple[float, float]:
    return (value - Z95 * se, value + Z95 * se)


def test_equal_errors_pool_to_the_mean_with_a_narrower_interval() -> None:
    got = pooled([0.50, 0.54], [_ci(0.50, 0.02), _ci(0.54, 0.02)], [500, 500])
    assert got.fixed == pytest.approx(0.52) and got.unweighted_mean == pytest.approx(0.52)
    lo, hi = got.fixed_ci95
    assert hi - lo == pytest.approx(2 * Z95 * 0.02 / math.sqrt(2))
    # each run lies one standard error from the pooled mean: Q = 2 > k - 1, so tau > 0
    assert got.cochran_q == pytest.approx(2.0)
    assert got.tau > 0 and got.random_ci95[1] - got.random_ci95[0] > hi - lo


def test_runs_that_agree_have_no_between_run_spread() -> None:
    got = pooled([0.52, 0.52, 0.52], [_ci(0.52, 0.02)] * 3, [500] * 3)
    assert got.tau == 0 and got.random_ci95 == pytest.approx(got.fixed_ci95)


def test_the_more_certain_run_weighs_more() -> None:
    got = pooled([0.50, 0.60], [_ci(0.50, 0.01), _ci(0.60, 0.03)], [500, 500])
    assert got.fixed == pytest.approx((0.50 / 0.01**2 + 0.60 / 0.03**2) / (1e4 + 1 / 0.03**2))


def test_a_zero_width_interval_weighs_as_one_entity_not_without_bound() -> None:
    got = pooled([1.0, 0.5], [(1.0, 1.0), _ci(0.5, 0.025)], [500, 500])
    assert 0.5 < got.fixed < 1.0


def test_nothing_to_pool_is_an_error() -> None:
    with pytest.raises(ValueError):
        pooled([], [], [])
