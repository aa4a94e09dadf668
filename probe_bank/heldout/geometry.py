"""Cross-fitted centroid geometry (the study's centroid line).

x = normalised (c6 - c1), y = top principal component of the stage centroids orthogonal to x,
both from one half of the entities; the centroids placed on them come from the other half (then the
halves swap and the coordinates are averaged). Only stages 1 and 6 define x, so where stages 2-5
land is evidence rather than construction.
"""

from __future__ import annotations

import warnings

import numpy as np

from probe_bank.heldout.stats import spearman

CLASSES = tuple(range(7))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def class_centroids(acts: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[7, d] normalised weighted centroids (NaN rows for absent classes)."""
    out = np.full((len(CLASSES), acts.shape[1]), np.nan)
    for c in CLASSES:
        w = weights * (labels == c)
        if w.sum() > 0:
            out[c] = _unit((acts * w[:, None]).sum(0) / w.sum())
    return out


def axes(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) unit axes from one half's centroids (stages 1..6 rows)."""
    x = _unit(centroids[6] - centroids[1])
    stages = centroids[1:7]
    resid = stages - np.outer(stages @ x, x)
    resid = resid - resid.mean(0)
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    y = vt[0]
    if (stages @ y)[-1] < (stages @ y)[0]:
        y = -y
    return x, y


def cross_fitted(
    acts: np.ndarray, labels: np.ndarray, half: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """[7, 2] centroid coordinates, axes from one half and centroids from the other, averaged."""
    w = np.ones(len(labels)) if weights is None else weights
    coords = []
    for a in (0, 1):
        ca = class_centroids(acts, labels, w * (half == a))
        cb = class_centroids(acts, labels, w * (half != a))
        if np.isnan(ca[[1, 6]]).any():
            continue
        x, y = axes(np.nan_to_num(ca))
        coords.append(np.stack([cb @ x, cb @ y], axis=1))
    if not coords:
        return np.full((len(CLASSES), 2), np.nan)
    with warnings.catch_warnings():  # a class absent from a resample stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(coords), axis=0)


def order_spearman(coords: np.ndarray) -> float:
    """Rank correlation of the stages' x coordinates with the training order."""
    return spearman(coords[1:7, 0], np.arange(1, 7))


def random_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """0/1 per entity, each class split in two (near-)equal halves."""
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels), int)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half[idx[len(idx) // 2 :]] = 1
    return half
