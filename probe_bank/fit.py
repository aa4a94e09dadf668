"""The bank's final probes: the evaluated estimator, refitted on every entity at the chosen cell."""

from __future__ import annotations

import numpy as np

from probe_bank.estimator import RecencyProbes
from probe_bank.heldout.folds import ProbeConfig


def fit_probes(X: np.ndarray, y: np.ndarray, entity: np.ndarray, cfg: ProbeConfig) -> RecencyProbes:
    """The estimator every held-out fold cloned, fitted on all rows (groups = entities)."""
    return cfg.estimator().fit(X, y, groups=entity)
