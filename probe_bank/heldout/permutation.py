"""Permutation null for the binary probes: the same pipeline on entity labels shuffled.

A bootstrap interval says how much an accuracy would move with other entities; it does not model
the quirks of grouped cross-validation on few entities (held-out accuracy on pure noise can sit
below 0.5). Shuffling the entities' classes and rerunning the identical probe gives the accuracy
that chance produces under exactly these folds, entity counts and features.
"""

from __future__ import annotations

import numpy as np

from probe_bank.heldout.folds import BINARY_TASKS, ProbeConfig, ProbeData, task_correct


def _accuracy(data: ProbeData, task: str, cfg: ProbeConfig) -> float:
    return float(np.nanmean(task_correct(data, task, cfg)))


def shuffled(data: ProbeData, rng: np.random.Generator) -> ProbeData:
    """The same rows with the entities' classes permuted (class sizes kept)."""
    return data.relabelled(rng.permutation(data.entity_labels))


def permutation_test(data: ProbeData, cfg: ProbeConfig, n_permutations: int) -> dict:
    """Per binary task: observed accuracy, null mean and 95% range, one-sided p-value."""
    rng = np.random.default_rng(cfg.seed)
    observed = {k: _accuracy(data, k, cfg) for k in BINARY_TASKS}
    null: dict[str, list[float]] = {k: [] for k in BINARY_TASKS}
    for _ in range(n_permutations):
        perm = shuffled(data, rng)
        for k in BINARY_TASKS:
            null[k].append(_accuracy(perm, k, cfg))
    out = {}
    for k, values in null.items():
        v = np.array(values)
        out[k] = {
            "observed": round(observed[k], 6),
            "null_mean": round(float(v.mean()), 6),
            "null_95": [round(float(x), 6) for x in np.percentile(v, [2.5, 97.5])],
            "p_value": round(float((1 + (v >= observed[k]).sum()) / (1 + len(v))), 6),
            "n_permutations": len(v),
        }
    return out
