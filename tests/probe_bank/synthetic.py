"""Synthetic activations with a planted stage direction of known strength (test helper)."""

from __future__ import annotations

import numpy as np

from probe_bank.heldout.folds import ProbeData


def planted(
    strength: float,
    *,
    per_class: int = 40,
    prompts: int = 2,
    d: int = 16,
    offset: float = 10.0,
    seed: int = 0,
) -> tuple[ProbeData, np.ndarray]:
    """Entity e of class k sits at offset * m + strength * k * u + N(0, I); prompts add N(0, 0.1^2).

    m is a shared mean direction (residual streams have a large common component, which is what
    lets normalised centroids keep their order).

    Adjacent stages are `strength` apart along u, so a Bayes-optimal probe on one entity reaches
    Phi(strength / 2) on adjacent pairs and Phi(5 * strength / 2) on stage 1 vs 6.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    labels = np.repeat(np.arange(7), per_class)
    m = rng.normal(size=d)
    m -= (m @ u) * u
    m /= np.linalg.norm(m)
    centres = offset * m + strength * labels[:, None] * u + rng.normal(size=(len(labels), d))
    entity = np.repeat(np.arange(len(labels)), prompts)
    X = centres[entity] + 0.1 * rng.normal(size=(len(entity), d))
    return ProbeData(X, labels[entity], entity, labels), u
