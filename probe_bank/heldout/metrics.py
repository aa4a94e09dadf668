"""From held-out outcomes to metrics.json entries, each with a bootstrap-over-entities interval.

Outcomes are per-entity arrays (NaN where a probe does not apply), so one resample of entities
re-scores every metric consistently.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from probe_bank.heldout.folds import (
    BINARY_TASKS,
    STAGE_PAIRS,
    ProbeConfig,
    ProbeData,
    cross_fit,
    early_late_correct_of,
    entity_mean,
    pairwise_correct_of,
    task_correct,
)
from probe_bank.heldout.geometry import cross_fitted, order_spearman, random_halves
from probe_bank.heldout.stats import expected_calibration_error, interval, nanmean_at, spearman

ADJACENT = [k for k, (i, j) in enumerate(STAGE_PAIRS) if j == i + 1]
ONE_SIX = STAGE_PAIRS.index((1, 6))


@dataclass
class Outcomes:
    """Held-out per-entity results of every probe on one feature set."""

    labels: np.ndarray
    pairwise: np.ndarray
    early_late: np.ndarray
    stage_probs: np.ndarray | None = None
    recency: np.ndarray | None = None


def binary_outcomes(data: ProbeData, cfg: ProbeConfig) -> Outcomes:
    """Pairwise and early/late probes only (the cheap part, used by the layer scan)."""
    held = cross_fit(data, cfg, heads=("late", "pairwise"))
    labels = data.entity_labels
    return Outcomes(labels, pairwise_correct_of(held, labels), early_late_correct_of(held, labels))


def full_outcomes(data: ProbeData, cfg: ProbeConfig) -> Outcomes:
    """Every head of one cross-fitted estimator: pairs, early/late, stage classes, recency."""
    held = cross_fit(data, cfg)
    labels = data.entity_labels
    return Outcomes(
        labels,
        pairwise_correct_of(held, labels),
        early_late_correct_of(held, labels),
        stage_probs=held.stage_probs,
        recency=held.recency,
    )


def _count(values: np.ndarray) -> int:
    return int(np.isfinite(values).sum())


def _pair_ci(o: Outcomes, k: int, n_boot: int, seed: int) -> dict:
    return interval(
        lambda idx: nanmean_at(o.pairwise[k], idx),
        o.labels,
        _count(o.pairwise[k]),
        n_boot=n_boot,
        seed=seed,
    )


def binary_metrics(o: Outcomes, n_boot: int, seed: int) -> dict:
    """pairwise_accuracy (6x6, null diagonal), each pair with its interval in `pairwise`,
    stage1_vs_stage6, early_vs_late and adjacent_mean."""
    grid = np.full((6, 6), np.nan)
    for k, (i, j) in enumerate(STAGE_PAIRS):
        grid[i - 1, j - 1] = grid[j - 1, i - 1] = np.nanmean(o.pairwise[k])
    adjacent = o.pairwise[ADJACENT]
    return {
        "pairwise_accuracy": [
            [None if np.isnan(v) else round(float(v), 6) for v in r] for r in grid
        ],
        "pairwise": [
            {"stages": [i, j], **_pair_ci(o, k, n_boot, seed)}
            for k, (i, j) in enumerate(STAGE_PAIRS)
        ],
        "stage1_vs_stage6": _pair_ci(o, ONE_SIX, n_boot, seed),
        "early_vs_late": interval(
            lambda idx: nanmean_at(o.early_late, idx),
            o.labels,
            _count(o.early_late),
            n_boot=n_boot,
            seed=seed,
        ),
        "adjacent_mean": interval(
            lambda idx: float(np.mean([nanmean_at(a, idx) for a in adjacent])),
            o.labels,
            int(np.isfinite(adjacent).any(axis=0).sum()),
            n_boot=n_boot,
            seed=seed,
        ),
    }


def binary_tasks(
    data: ProbeData, cfg: ProbeConfig, *, n_boot: int
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Held-out accuracy with interval of each of `BINARY_TASKS` alone (the cheap scan), and
    each task's per-entity correctness."""
    out, correct = {}, {}
    for task in BINARY_TASKS:
        correct[task] = task_correct(data, task, cfg)
        out[task] = interval(
            partial(nanmean_at, correct[task]),
            data.entity_labels,
            _count(correct[task]),
            n_boot=n_boot,
            seed=cfg.seed,
        )
    return out, correct


def stage_metrics(o: Outcomes, n_boot: int, seed: int) -> dict:
    """stage_accuracy, ece (stage estimator) and recency_spearman."""
    assert o.stage_probs is not None and o.recency is not None
    probs, rec, labels = o.stage_probs, o.recency, o.labels
    correct = (probs.argmax(axis=1) == labels).astype(float)
    staged = np.isfinite(rec)
    return {
        "stage_accuracy": interval(
            lambda idx: float(correct[idx].mean()), labels, len(labels), n_boot=n_boot, seed=seed
        ),
        "stage_chance": float(np.bincount(labels).max() / len(labels)),
        "ece": interval(
            lambda idx: expected_calibration_error(probs[idx], labels[idx]),
            labels,
            len(labels),
            n_boot=n_boot,
            seed=seed,
        ),
        "recency_spearman": interval(
            lambda idx: spearman(rec[idx][staged[idx]], labels[idx][staged[idx]]),
            labels,
            int(staged.sum()),
            n_boot=n_boot,
            seed=seed,
        ),
    }


def centroid_metrics(data: ProbeData, n_boot: int, seed: int) -> tuple[dict, dict]:
    """centroid_order_spearman (with interval) and the centroids.json content."""
    acts = entity_mean(data.X, data.entity, data.n_entities)
    labels = data.entity_labels
    half = random_halves(labels, seed)

    def rho(idx: np.ndarray) -> float:
        w = np.bincount(idx, minlength=len(labels)).astype(float)
        return order_spearman(cross_fitted(acts, labels, half, w))

    coords = cross_fitted(acts, labels, half)
    centroids = {
        "classes": list(range(7)),
        "x": [None if np.isnan(v) else float(v) for v in coords[:, 0]],
        "y": [None if np.isnan(v) else float(v) for v in coords[:, 1]],
        "n_entities": [int((labels == c).sum()) for c in range(7)],
        "method": "cross-fitted: axes from one half of the entities, centroids from the other",
    }
    metric = interval(rho, labels, int((labels > 0).sum()), n_boot=n_boot, seed=seed)
    return metric, centroids
