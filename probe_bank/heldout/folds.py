"""Out-of-fold evaluation of `RecencyProbes` on entities it never saw.

Rows are prompts; `entity` holds each row's entity index. Folds are StratifiedGroupKFold over
entities, so no entity has prompts on both sides of a split, and the same (y, entity, seed) give the
same folds for the probe and for every control (scikit-learn splits ignore X). Each fold fits a
`clone` of the one estimator the bank serves; out-of-fold outputs are averaged over each entity's
prompts: one verdict per entity, as the service gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold

from probe_bank.errors import UserError
from probe_bank.estimator import EARLY, HEADS, LATE, N_CLASSES, STAGE_PAIRS, RecencyProbes
from probe_bank.records import ProbePrompt

__all__ = ["EARLY", "LATE", "STAGE_PAIRS", "BINARY_TASKS", "ProbeConfig", "ProbeData"]

#: The two binary questions every report asks: task -> (negative classes, positive classes).
BINARY_TASKS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "stage1_vs_stage6": ((1,), (6,)),
    "early_vs_late": (EARLY, LATE),
}
#: The heads (and pairs) of `RecencyProbes` that answer each binary task.
_TASK_HEADS: dict[str, dict] = {
    "stage1_vs_stage6": {"heads": ("pairwise",), "pairs": ((1, 6),)},
    "early_vs_late": {"heads": ("late",), "pairs": ()},
}


class ProbeConfig(BaseModel):
    """The estimator's hyper-parameters and how its held-out evaluation folds entities."""

    C: float = 0.1
    ridge_alpha: float = 10.0
    max_iter: int = 2000
    calibration_splits: int = 3
    n_splits: int = 5
    seed: int = 0
    n_jobs: int = 1  # joblib workers over the folds (1 = in process)

    def estimator(self, **params: object) -> RecencyProbes:
        """The bank's estimator with these hyper-parameters (heads and pairs overridable)."""
        base = {
            "C": self.C,
            "ridge_alpha": self.ridge_alpha,
            "max_iter": self.max_iter,
            "calibration_splits": self.calibration_splits,
        }
        return RecencyProbes(**{**base, **params})  # type: ignore[arg-type]


@dataclass
class ProbeData:
    """Prompt rows with their class and entity; entity_labels[e] is entity e's class.

    `ids` (entity ids, by index) and `probes` (the prompt of each row) are set when the rows
    come from a run (`probe_bank.run_dir.probe_data`), absent for synthetic data.
    """

    X: np.ndarray
    y: np.ndarray
    entity: np.ndarray
    entity_labels: np.ndarray
    ids: list[str] = field(default_factory=list)
    probes: list[ProbePrompt] = field(default_factory=list)

    @property
    def n_entities(self) -> int:
        return len(self.entity_labels)

    def rows(self, mask: np.ndarray) -> ProbeData:
        """The rows in `mask`, entity indices kept (entity-level arrays stay aligned)."""
        probes = (
            [p for p, keep in zip(self.probes, mask, strict=True) if keep] if self.probes else []
        )
        return ProbeData(
            self.X[mask], self.y[mask], self.entity[mask], self.entity_labels, self.ids, probes
        )

    def entities(self, keep: np.ndarray) -> ProbeData:
        """Only the entities `keep` (indices into entity_labels), renumbered 0..len(keep)-1."""
        keep = np.asarray(keep, dtype=np.int64)
        new = np.full(self.n_entities, -1, dtype=np.int64)
        new[keep] = np.arange(len(keep))
        mask = new[self.entity] >= 0
        probes = [p for p, k in zip(self.probes, mask, strict=True) if k] if self.probes else []
        ids = [self.ids[i] for i in keep] if self.ids else []
        return ProbeData(
            self.X[mask],
            self.y[mask],
            new[self.entity[mask]],
            self.entity_labels[keep],
            ids,
            probes,
        )

    def with_features(self, X: np.ndarray) -> ProbeData:
        """The same rows with features X [n_rows, k]."""
        return ProbeData(X, self.y, self.entity, self.entity_labels, self.ids, self.probes)

    def relabelled(self, entity_labels: np.ndarray) -> ProbeData:
        """The same rows with other entity classes (permutation null, audit scenarios)."""
        labels = np.asarray(entity_labels)
        return ProbeData(self.X, labels[self.entity], self.entity, labels, self.ids, self.probes)


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


@dataclass
class HeldOut:
    """Per-entity out-of-fold outputs of the estimator's heads (None: head not fitted)."""

    pairs: tuple[tuple[int, int], ...]
    pair_decision: np.ndarray | None = None  # [E, n_pairs]
    late_decision: np.ndarray | None = None  # [E]
    stage_probs: np.ndarray | None = None  # [E, 7]
    recency: np.ndarray | None = None  # [E], NaN for never-trained entities


def _fold(
    template: RecencyProbes, X: np.ndarray, y: np.ndarray, groups: np.ndarray, te_X: np.ndarray
) -> dict[str, np.ndarray]:
    est = clone(template).fit(X, y, groups=groups)
    out = {}
    if "pairwise" in est.heads:
        out["pair_decision"] = est.pair_decision(te_X)
    if "late" in est.heads:
        out["late_decision"] = est.late_decision(te_X)
    if "stage" in est.heads:
        out["stage_probs"] = est.predict_proba(te_X)
    if "recency" in est.heads:
        out["recency"] = est.recency_score(te_X)
    return out


def cross_fit(
    data: ProbeData,
    cfg: ProbeConfig,
    *,
    heads: Sequence[str] = HEADS,
    pairs: Sequence[tuple[int, int]] = STAGE_PAIRS,
) -> HeldOut:
    """Clone the estimator in every entity fold; average its test-row outputs per entity."""
    from joblib import Parallel, delayed

    template = cfg.estimator(heads=tuple(heads), pairs=tuple(pairs))
    folds = entity_folds(data.y, data.entity, cfg)
    results = Parallel(n_jobs=cfg.n_jobs)(
        delayed(_fold)(template, data.X[tr], data.y[tr], data.entity[tr], data.X[te])
        for tr, te in folds
    )
    n = len(data.y)
    rows: dict[str, np.ndarray] = {}
    for (_, te), res in zip(folds, results, strict=True):
        for key, value in res.items():
            if key not in rows:
                rows[key] = np.zeros((n, *value.shape[1:]))
            rows[key][te] = value
    staged = data.y > 0
    if "recency" in rows:  # the regression is only defined for trained entities
        rows["recency"][~staged] = np.nan
    means = {k: entity_mean(v, data.entity, data.n_entities) for k, v in rows.items()}
    if "recency" in means:
        means["recency"][data.entity_labels == 0] = np.nan
    return HeldOut(pairs=tuple(pairs), **means)


def correct_of(decision: np.ndarray, labels: np.ndarray, neg: tuple, pos: tuple) -> np.ndarray:
    """Per-entity correctness of `decision > 0` = positive; NaN outside neg + pos."""
    correct = ((decision > 0) == np.isin(labels, pos)).astype(float)
    correct[~np.isin(labels, neg + pos) | ~np.isfinite(decision)] = np.nan
    return correct


def pairwise_correct_of(held: HeldOut, labels: np.ndarray) -> np.ndarray:
    """[n_pairs, E]: correctness of each stage-pair probe (later stage = positive)."""
    assert held.pair_decision is not None
    return np.stack(
        [
            correct_of(held.pair_decision[:, k], labels, (i,), (j,))
            for k, (i, j) in enumerate(held.pairs)
        ]
    )


def early_late_correct_of(held: HeldOut, labels: np.ndarray) -> np.ndarray:
    """[E]: correctness of the early (1-3) vs late (4-6) probe."""
    assert held.late_decision is not None
    return correct_of(held.late_decision, labels, EARLY, LATE)


def task_correct(data: ProbeData, task: str, cfg: ProbeConfig) -> np.ndarray:
    """[E]: held-out correctness of one of `BINARY_TASKS` (NaN for entities outside it)."""
    neg, pos = BINARY_TASKS[task]
    sub = data.rows(np.isin(data.y, neg + pos))
    held = cross_fit(sub, cfg, **_TASK_HEADS[task])
    if task == "early_vs_late":
        return early_late_correct_of(held, data.entity_labels)
    return pairwise_correct_of(held, data.entity_labels)[0]


def stage_probability_matrix(data: ProbeData, cfg: ProbeConfig) -> np.ndarray:
    """[E, 7] held-out calibrated class probabilities, averaged over each entity's prompts."""
    probs = cross_fit(data, cfg, heads=("stage",), pairs=()).stage_probs
    assert probs is not None and probs.shape[1] == N_CLASSES
    return probs
