"""The probes on synthetic activations: a planted direction is found, pure noise reads chance."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from probe_bank.fit import fit_probes
from probe_bank.heldout.folds import ProbeConfig
from probe_bank.heldout.metrics import (
    binary_metrics,
    binary_outcomes,
    centroid_metrics,
    full_outcomes,
    stage_metrics,
)
from tests.probe_bank.synthetic import planted

CFG = ProbeConfig(C=1.0, ridge_alpha=1.0)


def _metrics(data):
    o = full_outcomes(data, CFG)
    rho, centroids = centroid_metrics(data, n_boot=100, seed=0)
    return {
        **binary_metrics(o, 300, 0),
        **stage_metrics(o, 300, 0),
        "centroid_order_spearman": rho,
    }, centroids


def test_planted_direction_is_found():
    strength = 1.0
    data, u = planted(strength)
    m, centroids = _metrics(data)
    bayes_adjacent = norm.cdf(strength / 2)  # 0.69
    assert m["stage1_vs_stage6"]["value"] >= 0.9
    assert m["stage1_vs_stage6"]["ci95"][0] > 0.5
    assert m["early_vs_late"]["value"] >= 0.8
    # finite-sample probes approach but cannot beat the Bayes rate (a leak would exceed it)
    assert bayes_adjacent - 0.15 <= m["adjacent_mean"]["value"] <= bayes_adjacent + 0.07
    assert m["stage_accuracy"]["ci95"][0] > 1 / 7
    assert m["recency_spearman"]["value"] >= 0.8
    assert m["centroid_order_spearman"]["value"] >= 0.9
    assert m["stage1_vs_stage6"]["n_entities"] == 80
    xs = centroids["x"][1:7]
    assert xs == sorted(xs), "cross-fitted centroids lie in training order"
    w = fit_probes(data.X, data.y, data.entity, CFG)
    direction = w.recency_coef_ / w.scale_
    assert abs(direction @ u) / np.linalg.norm(direction) > 0.8


def test_pure_noise_reads_chance():
    """With no signal, accuracy is chance: pooled over 8 noise sets, and inside most intervals.

    Per-seed intervals resample held-out entities but not the refits, so on noise they cover
    chance a little less than 95% of the time (measured ~85% over 30 seeds); the pooled check
    is the exact one, the per-seed check guards the interval's width and placement.
    """
    keys = ("stage1_vs_stage6", "early_vs_late", "adjacent_mean")
    covered = dict.fromkeys(keys, 0)
    values: dict[str, list[float]] = {k: [] for k in keys}
    for seed in range(8):
        data, _ = planted(0.0, seed=seed)
        m = binary_metrics(binary_outcomes(data, CFG), 300, 0)
        for key in keys:
            lo, hi = m[key]["ci95"]
            covered[key] += lo <= 0.5 <= hi
            values[key].append(m[key]["value"])
            assert hi - lo < 0.4
    assert all(c >= 4 for c in covered.values()), covered
    for key, v in values.items():
        half_width = 2.36 * np.std(v, ddof=1) / np.sqrt(len(v))  # t(7), 95%
        assert abs(np.mean(v) - 0.5) <= half_width + 0.01, (key, v)


def test_pure_noise_stage_estimator_reads_chance():
    data, _ = planted(0.0, seed=11)
    m, _ = _metrics(data)
    lo, hi = m["stage_accuracy"]["ci95"]
    assert lo <= 1 / 7 <= hi
    lo, hi = m["recency_spearman"]["ci95"]
    assert lo <= 0.0 <= hi
    assert m["ece"]["value"] < 0.2  # calibrated: confidence near 1/7 when nothing is known


def test_the_one_se_rule_buys_depth_only_beyond_noise():
    """`best` takes whichever block the noise favours; `one_se` the earliest block within one
    standard error of it, yet still a deeper block that is better by more than that."""
    from probe_bank.heldout.selection import choose_cell

    tied = {(0, "last"): (0.515, 0.02), (2, "last"): (0.53, 0.02), (1, "alias_mean"): (0.52, 0.02)}
    assert choose_cell(tied, "best") == (2, "last")
    assert choose_cell(tied, "one_se") == (0, "last")
    clear = {(0, "last"): (0.50, 0.02), (1, "last"): (0.60, 0.02), (2, "last"): (0.61, 0.02)}
    assert choose_cell(clear, "one_se") == (1, "last")
    same_block = {
        (0, "last"): (0.51, 0.02),
        (0, "alias_mean"): (0.52, 0.02),
        (3, "last"): (0.53, 0.02),
    }
    assert choose_cell(same_block, "one_se") == (0, "alias_mean")


def test_selection_adjusted_finds_the_signal_cell_and_is_honest_on_noise():
    from probe_bank.heldout.selection import nested_selection

    signal, _ = planted(1.0, per_class=20, seed=5)
    cells = {(i, "last"): planted(0.0, per_class=20, seed=20 + i)[0].X for i in range(4)}
    cells[(4, "last")] = signal.X
    for rule in ("best", "one_se"):
        out = nested_selection(
            cells, signal.y, signal.entity, signal.entity_labels, CFG, n_boot=200, rule=rule
        )
        assert out["chosen_per_fold"] == [[4, "last"]] * 5
    assert out["early_vs_late"]["value"] >= 0.75
    del cells[(4, "last")]
    noise = nested_selection(cells, signal.y, signal.entity, signal.entity_labels, CFG, n_boot=200)
    lo, hi = noise["early_vs_late"]["ci95"]
    assert lo <= 0.5 <= hi


def test_permutation_null_separates_signal_from_noise():
    from probe_bank.heldout.permutation import permutation_test

    small = ProbeConfig(C=1.0, n_splits=4)
    signal, _ = planted(0.6, per_class=12, seed=7)
    out = permutation_test(signal, small, n_permutations=30)
    assert out["early_vs_late"]["p_value"] <= 1 / 31 + 1e-9
    assert out["early_vs_late"]["observed"] > out["early_vs_late"]["null_95"][1]
    noise, _ = planted(0.0, per_class=12, seed=8)
    null = permutation_test(noise, small, n_permutations=30)["early_vs_late"]
    assert abs(null["null_mean"] - 0.5) < 0.08
    assert null["null_95"][0] <= null["observed"] <= null["null_95"][1]
