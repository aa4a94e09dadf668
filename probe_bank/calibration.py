"""Temperature scaling as a scikit-learn meta-estimator, cross-fitted by entity.

The temperature is fitted on out-of-fold logits from entity-grouped folds, so it corrects the
over-confidence the classifier shows on entities it never saw (the only ones it will score).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GroupKFold


def _nll(logits: np.ndarray, y_idx: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y_idx)), y_idx].mean())


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """Temperature minimising the NLL of softmax(logits / T), searched on log T in [-3, 3]."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda lt: _nll(logits, y_idx, float(np.exp(lt))), bounds=(-3.0, 3.0), method="bounded"
    )
    return float(np.exp(res.x))


class TemperatureScaledClassifier(ClassifierMixin, BaseEstimator):
    """Wraps a classifier with `decision_function`; `fit(X, y, groups=...)` groups by entity."""

    def __init__(self, estimator: BaseEstimator, n_splits: int = 3) -> None:
        self.estimator = estimator
        self.n_splits = n_splits

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None):
        y = np.asarray(y)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        self.classes_ = np.unique(y)
        y_idx = np.searchsorted(self.classes_, y)
        n_splits = min(self.n_splits, len(np.unique(groups)))
        oof = np.zeros((len(y), len(self.classes_)))
        ok = np.zeros(len(y), bool)
        for tr, te in GroupKFold(n_splits=n_splits).split(X, y, groups):
            est = clone(self.estimator).fit(X[tr], y[tr])
            cols = np.searchsorted(self.classes_, est.classes_)
            fold = np.full((len(te), len(self.classes_)), -1e4)
            fold[:, cols] = _logits(est, X[te])
            oof[te] = fold
            ok[te] = True
        self.temperature_ = fit_temperature(oof[ok], y_idx[ok])
        self.estimator_ = clone(self.estimator).fit(X, y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return _logits(self.estimator_, X) / self.temperature_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _logits(est: BaseEstimator, X: np.ndarray) -> np.ndarray:
    z = est.decision_function(X)
    return z[:, None] * np.array([-0.5, 0.5]) if z.ndim == 1 else z
