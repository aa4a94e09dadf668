"""Small statistics: rank correlation, calibration error, bootstrap-over-entities intervals, and
one figure pooled over runs.

Intervals resample entities (not prompts) within each class, because entities are the unit the
probes generalise over; a prompt-level bootstrap would understate the uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: the standard normal's two-sided 95% quantile
Z95 = 1.959964


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: bin by confidence, weight |accuracy - confidence| by bin size."""
    probs = np.asarray(probs, float)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def stratified_resamples(labels: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap index sets over entities, resampled within each class (class sizes kept)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return [
        np.concatenate([rng.choice(idx, size=len(idx), replace=True) for idx in by_class])
        for _ in range(n_boot)
    ]


def interval(
    metric: Callable[[np.ndarray], float],
    labels: np.ndarray,
    n_entities: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """{"value", "ci95", "n_entities"} for `metric(entity_indices)`; NaN draws are dropped."""
    full = metric(np.arange(len(labels)))
    draws = np.array([metric(idx) for idx in stratified_resamples(labels, n_boot, seed)])
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0 or not np.isfinite(full):
        lo = hi = float("nan")
    else:
        lo, hi = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
    return {"value": _num(full), "ci95": [_num(lo), _num(hi)], "n_entities": int(n_entities)}


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the median, and IQR / 1.349 (the sd of a normal) as spread, 1 where the
    rows do not vary. How anchors (never-trained controls) set the units a statistic is read in."""
    q25, center, q75 = np.percentile(np.asarray(X, np.float64), [25, 50, 75], axis=0)
    scale = (q75 - q25) / 1.349
    return center, np.where(scale > 1e-6, scale, 1.0)


def _num(x: float) -> float | None:
    """JSON-safe float (NaN -> None), rounded for readable files."""
    return None if not np.isfinite(x) else round(float(x), 6)


def nanmean_at(values: np.ndarray, idx: np.ndarray) -> float:
    """Mean of the defined (non-NaN) entries of values[idx]."""
    v = values[idx]
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


@dataclass(frozen=True)
class Pooled:
    """One held-out figure pooled over runs by inverse variance: the fixed-effect mean, the
    DerSimonian-Laird random-effects mean (between-run sd `tau`), each with its 95% interval."""

    runs: int
    unweighted_mean: float
    fixed: float
    fixed_ci95: tuple[float, float]
    random: float
    random_ci95: tuple[float, float]
    tau: float
    cochran_q: float


def pooled(
    values: Sequence[float], ci95s: Sequence[tuple[float, float]], n_entities: Sequence[int]
) -> Pooled:
    """Pool runs' figures, each run's standard error read from its 95% bootstrap interval
    (width / 2 x 1.96) and at least one entity's share (1 / n), so that an interval of
    [1.000, 1.000] does not weigh without bound.

    Why: one run's interval at a few hundred entities cannot tell a two-point effect from
    noise; a sweep's runs together can, and the random-effects interval widens by how much the
    runs disagree beyond their own intervals."""
    if not values:
        raise ValueError("nothing to pool")
    se = np.array(
        [max((hi - lo) / (2 * Z95), 1 / n) for (lo, hi), n in zip(ci95s, n_entities, strict=True)]
    )
    x = np.asarray(values, float)
    w = 1 / se**2
    fixed = float((w * x).sum() / w.sum())
    q = float((w * (x - fixed) ** 2).sum())
    c = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - (len(x) - 1)) / c) if len(x) > 1 and c > 0 else 0.0
    wr = 1 / (se**2 + tau2)
    rand = float((wr * x).sum() / wr.sum())
    fixed_se, rand_se = 1 / math.sqrt(w.sum()), 1 / math.sqrt(wr.sum())
    return Pooled(
        runs=len(x),
        unweighted_mean=float(x.mean()),
        fixed=fixed,
        fixed_ci95=(fixed - Z95 * fixed_se, fixed + Z95 * fixed_se),
        random=rand,
        random_ci95=(rand - Z95 * rand_se, rand + Z95 * rand_se),
        tau=math.sqrt(tau2),
        cochran_q=q,
    )
