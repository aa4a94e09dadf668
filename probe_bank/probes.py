"""Probe estimators and their out-of-fold evaluation on entities they never saw.

Rows are prompts; `entity` holds each row's entity index. Folds are StratifiedGroupKFold over
entities, so no entity has prompts on both sides of a split, and the same (y, entity, seed) give the
same folds for the probe and for every control (scikit-learn splits ignore X). Out-of-fold scores
are averaged over each entity's prompts: one verdict per entity, as the service gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from pydantic import BaseModel
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe_bank.calibration import TemperatureScaledClassifier
from probe_bank.errors import UserError

STAGE_PAIRS: tuple[tuple[int, int], ...] = tuple(combinations(range(1, 7), 2))
EARLY = (1, 2, 3)
LATE = (4, 5, 6)


class ProbeConfig(BaseModel):
    """Hyper-parameters shared by the probes and the controls."""

    C: float = 0.1
    ridge_alpha: float = 10.0
    n_splits: int = 5
    seed: int = 0
    max_iter: int = 2000
    n_jobs: int = 1  # joblib workers for the 15 pairwise probes (1 = in process)


@dataclass
class ProbeData:
    """Prompt rows with their class and entity; entity_labels[e] is entity e's class."""

    X: np.ndarray
    y: np.ndarray
    entity: np.ndarray
    entity_labels: np.ndarray

    @property
    def n_entities(self) -> int:
        return len(self.entity_labels)

    def rows(self, mask: np.ndarray) -> ProbeData:
        """The rows in `mask`, entity indices kept (entity-level arrays stay aligned)."""
        return ProbeData(self.X[mask], self.y[mask], self.entity[mask], self.entity_labels)


def classifier(cfg: ProbeConfig) -> BaseEstimator:
    """Standardise then L2 logistic regression (lbfgs), as the study's probes."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))


def regressor(cfg: ProbeConfig) -> BaseEstimator:
    """Standardise then ridge regression onto the stage number."""
    return make_pipeline(StandardScaler(), Ridge(alpha=cfg.ridge_alpha))


def entity_folds(
    y: np.ndarray, entity: np.ndarray, cfg: ProbeConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over entities; fewer folds when a class has fewer entities."""
    per_class = [len(np.unique(entity[y == c])) for c in np.unique(y)]
    n_splits = min(cfg.n_splits, min(per_class))
    if n_splits < 2:
        raise UserError("each class needs at least 2 entities for entity-held-out evaluation")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
    return list(sgkf.split(np.zeros(len(y)), y, entity))


def entity_mean(values: np.ndarray, entity: np.ndarray, n_entities: int) -> np.ndarray:
    """Mean of row values per entity ([E] or [E, k]); NaN for entities without rows."""
    values = np.asarray(values, float)
    shape = (n_entities, *values.shape[1:])
    total = np.zeros(shape)
    np.add.at(total, entity, values)
    count = np.bincount(entity, minlength=n_entities).astype(float)
    with np.errstate(invalid="ignore"):
        return total / count.reshape(-1, *([1] * (values.ndim - 1)))


def oof_binary(data: ProbeData, positive: np.ndarray, cfg: ProbeConfig) -> np.ndarray:
    """Out-of-fold decision values for a binary target (rows of `data` only)."""
    target = positive.astype(int)
    out = np.zeros(len(target))
    for tr, te in entity_folds(data.y, data.entity, cfg):
        est = clone(classifier(cfg)).fit(data.X[tr], target[tr])
        out[te] = est.decision_function(data.X[te])
    return out


def binary_correct(data: ProbeData, pos_classes: tuple[int, ...], cfg: ProbeConfig) -> np.ndarray:
    """Per-entity correctness [E] (NaN outside `data`) of a held-out positive-vs-rest probe."""
    pos = np.isin(data.y, pos_classes)
    score = entity_mean(oof_binary(data, pos, cfg), data.entity, data.n_entities)
    truth = np.isin(data.entity_labels, pos_classes)
    correct = ((score > 0) == truth).astype(float)
    correct[~np.isfinite(score)] = np.nan
    return correct


def pairwise_correct(data: ProbeData, cfg: ProbeConfig) -> np.ndarray:
    """[15, E]: held-out correctness of each stage-pair probe (later stage = positive)."""
    from joblib import Parallel, delayed

    rows = Parallel(n_jobs=cfg.n_jobs)(
        delayed(binary_correct)(data.rows(np.isin(data.y, (i, j))), (j,), cfg)
        for i, j in STAGE_PAIRS
    )
    return np.stack(rows)


def early_late_correct(data: ProbeData, cfg: ProbeConfig) -> np.ndarray:
    """[E]: held-out correctness of the early (1-3) vs late (4-6) probe."""
    return binary_correct(data.rows(np.isin(data.y, EARLY + LATE)), LATE, cfg)


def stage_estimator(cfg: ProbeConfig) -> TemperatureScaledClassifier:
    """7-class logistic regression with an entity-cross-fitted temperature."""
    return TemperatureScaledClassifier(classifier(cfg), n_splits=3)


def stage_probabilities(data: ProbeData, cfg: ProbeConfig) -> np.ndarray:
    """[E, 7] held-out calibrated class probabilities, averaged over each entity's prompts."""
    classes = np.arange(7)
    oof = np.zeros((len(data.y), len(classes)))
    for tr, te in entity_folds(data.y, data.entity, cfg):
        est = stage_estimator(cfg).fit(data.X[tr], data.y[tr], groups=data.entity[tr])
        oof[np.ix_(te, np.searchsorted(classes, est.classes_))] = est.predict_proba(data.X[te])
    return entity_mean(oof, data.entity, data.n_entities)


def recency_scores(data: ProbeData, cfg: ProbeConfig) -> np.ndarray:
    """[E]: held-out regression onto stage 1..6 (NaN for never-trained entities)."""
    sub = data.rows(data.y > 0)
    out = np.zeros(len(sub.y))
    for tr, te in entity_folds(sub.y, sub.entity, cfg):
        est = clone(regressor(cfg)).fit(sub.X[tr], sub.y[tr].astype(float))
        out[te] = est.predict(sub.X[te])
    return entity_mean(out, sub.entity, sub.n_entities)
