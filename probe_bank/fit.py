"""The bank's final probes: refitted on every entity at the chosen layer and position."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from probe_bank.bank import ProbeWeights
from probe_bank.calibration import TemperatureScaledClassifier
from probe_bank.probes import STAGE_PAIRS, ProbeConfig


def fit_weights(X: np.ndarray, y: np.ndarray, entity: np.ndarray, cfg: ProbeConfig) -> ProbeWeights:
    """Refit every probe on all entities (standardisation shared, folded in at predict time)."""
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)

    def lr() -> LogisticRegression:
        return LogisticRegression(C=cfg.C, max_iter=cfg.max_iter)

    stage = TemperatureScaledClassifier(lr(), n_splits=3).fit(Z, y, groups=entity)
    staged = y > 0
    late = lr().fit(Z[staged], (y[staged] >= 4).astype(int))
    rec = Ridge(alpha=cfg.ridge_alpha).fit(Z[staged], y[staged].astype(float))
    pair_coef, pair_b = [], []
    for i, j in STAGE_PAIRS:
        m = np.isin(y, (i, j))
        p = lr().fit(Z[m], (y[m] == j).astype(int))
        pair_coef.append(p.coef_[0])
        pair_b.append(p.intercept_[0])
    return ProbeWeights(
        mean=scaler.mean_,
        scale=scaler.scale_,
        stage_coef=stage.estimator_.coef_,
        stage_intercept=stage.estimator_.intercept_,
        temperature=stage.temperature_,
        late_coef=late.coef_[0],
        late_intercept=float(late.intercept_[0]),
        recency_coef=rec.coef_,
        recency_intercept=float(rec.intercept_),
        pairwise_coef=np.array(pair_coef),
        pairwise_intercept=np.array(pair_b),
    )
