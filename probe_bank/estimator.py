"""The recency probes as one scikit-learn estimator: what a bank serves is what was evaluated.

`RecencyProbes` standardises the activations once and fits every head on the standardised rows:
the calibrated 7-class stage classifier (0 = never trained), the early (1-3) vs late (4-6) probe,
the regression onto stage 1..6, and the stage-pair probes (later stage positive). The held-out
evaluation, the selection-adjusted score, the permutation null and the scalar baselines all
`clone` this estimator inside their folds, and the bank saves the same estimator refitted on
every entity (`to_tensors`, safetensors): no second pipeline can drift from the evaluated one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge

from probe_bank.calibration import TemperatureScaledClassifier

#: Probe classes: 0 = never trained, k = stage k.
N_CLASSES = 7
STAGE_PAIRS: tuple[tuple[int, int], ...] = tuple(combinations(range(1, 7), 2))
EARLY = (1, 2, 3)
LATE = (4, 5, 6)
HEADS = ("stage", "late", "recency", "pairwise")


class RecencyProbes(BaseEstimator):
    """Every recency probe over one shared standardisation (L2 logistic, lbfgs, as the study).

    `heads` and `pairs` choose what `fit` trains: the layer scan and the permutation null need
    only the early/late probe and stage 1 vs 6; the bank fits all of them.
    """

    def __init__(
        self,
        C: float = 0.1,
        ridge_alpha: float = 10.0,
        max_iter: int = 2000,
        calibration_splits: int = 3,
        heads: Sequence[str] = HEADS,
        pairs: Sequence[tuple[int, int]] = STAGE_PAIRS,
    ) -> None:
        self.C = C
        self.ridge_alpha = ridge_alpha
        self.max_iter = max_iter
        self.calibration_splits = calibration_splits
        self.heads = heads
        self.pairs = pairs

    def _logistic(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, max_iter=self.max_iter)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> RecencyProbes:
        """`groups` (entity per row) keeps the temperature's inner folds entity-held-out."""
        X, y = np.asarray(X, np.float64), np.asarray(y, int)
        unknown = set(self.heads) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown heads {sorted(unknown)}; choose from {HEADS}")
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)  # as StandardScaler: constant columns kept
        Z = (X - self.mean_) / self.scale_
        staged = y > 0
        if "stage" in self.heads:
            stage = TemperatureScaledClassifier(self._logistic(), self.calibration_splits)
            stage.fit(Z, y, groups=groups)
            self.stage_classes_ = stage.classes_
            self.stage_coef_ = stage.estimator_.coef_
            self.stage_intercept_ = stage.estimator_.intercept_
            self.temperature_ = float(stage.temperature_)
        if "late" in self.heads:
            late = self._logistic().fit(Z[staged], (y[staged] >= LATE[0]).astype(int))
            self.late_coef_ = late.coef_[0]
            self.late_intercept_ = float(late.intercept_[0])
        if "recency" in self.heads:
            rec = Ridge(alpha=self.ridge_alpha).fit(Z[staged], y[staged].astype(float))
            self.recency_coef_ = rec.coef_
            self.recency_intercept_ = float(rec.intercept_)
        if "pairwise" in self.heads:
            coef, bias = [], []
            for i, j in self.pairs:
                m = np.isin(y, (i, j))
                p = self._logistic().fit(Z[m], (y[m] == j).astype(int))
                coef.append(p.coef_[0])
                bias.append(p.intercept_[0])
            self.pairwise_coef_ = np.array(coef).reshape(len(self.pairs), X.shape[1])
            self.pairwise_intercept_ = np.array(bias)
        return self

    def standardise(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float64) - self.mean_) / self.scale_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated [n, 7] class probabilities (classes a fit never saw get 0)."""
        logits = (self.standardise(X) @ self.stage_coef_.T + self.stage_intercept_) / (
            self.temperature_
        )
        if logits.shape[1] == 1:  # a binary fit: sklearn's single column is the positive class
            logits = logits * np.array([-0.5, 0.5])
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        out = np.zeros((len(p), N_CLASSES))
        out[:, self.stage_classes_] = p
        return out

    def late_decision(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of late (4-6) vs early (1-3)."""
        return self.standardise(X) @ self.late_coef_ + self.late_intercept_

    def p_late(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.late_decision(X)))

    def recency_score(self, X: np.ndarray) -> np.ndarray:
        """Regression onto stage 1..6: higher = more recent."""
        return self.standardise(X) @ self.recency_coef_ + self.recency_intercept_

    def pair_decision(self, X: np.ndarray) -> np.ndarray:
        """[n, len(pairs)] log-odds of the later stage of each pair."""
        return self.standardise(X) @ self.pairwise_coef_.T + self.pairwise_intercept_

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Flat name -> float32 mapping for safetensors (a bank fits every head).

        C order is forced: scikit-learn's multinomial `coef_` is Fortran-ordered, and
        safetensors writes the raw buffer, so without it the stage weights load transposed.
        """
        f = np.float32
        tensors = {
            "mean": self.mean_.astype(f),
            "scale": self.scale_.astype(f),
            "stage.coef": self.stage_coef_.astype(f),
            "stage.intercept": self.stage_intercept_.astype(f),
            "stage.temperature": np.asarray([self.temperature_], f),
            "late.coef": self.late_coef_.astype(f),
            "late.intercept": np.asarray([self.late_intercept_], f),
            "recency.coef": self.recency_coef_.astype(f),
            "recency.intercept": np.asarray([self.recency_intercept_], f),
            "pairwise.coef": self.pairwise_coef_.astype(f),
            "pairwise.intercept": self.pairwise_intercept_.astype(f),
        }
        return {k: np.ascontiguousarray(v) for k, v in tensors.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], **params: object) -> RecencyProbes:
        """Inverse of `to_tensors` (every head, classes 0..6); a missing tensor is a KeyError."""
        est = cls(**params)  # type: ignore[arg-type]
        est.mean_, est.scale_ = t["mean"].astype(np.float64), t["scale"].astype(np.float64)
        est.stage_coef_ = t["stage.coef"].astype(np.float64)
        est.stage_intercept_ = t["stage.intercept"].astype(np.float64)
        est.stage_classes_ = np.arange(len(est.stage_intercept_))
        est.temperature_ = float(t["stage.temperature"][0])
        est.late_coef_ = t["late.coef"].astype(np.float64)
        est.late_intercept_ = float(t["late.intercept"][0])
        est.recency_coef_ = t["recency.coef"].astype(np.float64)
        est.recency_intercept_ = float(t["recency.intercept"][0])
        est.pairwise_coef_ = t["pairwise.coef"].astype(np.float64)
        est.pairwise_intercept_ = t["pairwise.intercept"].astype(np.float64)
        return est
