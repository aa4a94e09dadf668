"""Held-out evidence for every family: entity-grouped folds over (entity, model) rows.

Rows come from the reference (classes 0..6; the calibration pool's entities are never trained
there, class 0) and from each calibration model (the same entities, and the pool as class 7; one
model per kind of later finetune the bank is calibrated on, `kind` 1, 2, ...). An entity's rows
from every model share a fold, so no classifier sees any row of an entity it is scored on. The
probe columns are themselves out-of-fold (`oof_probe_columns`): stacked, never in-sample.
Figures: on the reference rows the study's tasks; on the calibration rows how often the pool is
classed "after the bank" and how often everything else is (false alarms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from probe_bank.families import (
    COLUMNS,
    FUSED_CANDIDATES,
    N_EVIDENCE,
    EvidenceClassifier,
    entity_probe_columns,
)
from probe_bank.heldout.folds import EARLY, LATE, ProbeConfig, ProbeData, entity_folds
from probe_bank.heldout.stats import interval
from probe_bank.schemas import AFTER_BANK, FAMILIES, AfterRule


def oof_probe_columns(
    table: ProbeData,
    X: dict[str, np.ndarray],
    cfg: ProbeConfig,
    pool_X: dict[str, np.ndarray],
    pool_entity: np.ndarray,
    n_pool: int,
) -> dict[str, np.ndarray]:
    """[E + P, 9] probe columns per entity on each model (`X`: model -> the table's prompt
    activations, the folds' probes fitted on `X["ref"]`; `pool_X`: the pool's), every entity
    scored by a fold's clone that never saw it: table entities by their own fold's, pool
    entities (never fitted on) by fold `p % k`'s, so both come from probes of one kind."""
    folds = entity_folds(table.y, table.entity, cfg)
    pool_fold = pool_entity % len(folds)
    out = {}
    for key in X:
        rows = (np.zeros((len(table.y), 7)), np.zeros(len(table.y)), np.zeros(len(table.y)))
        prow = (
            np.zeros((len(pool_entity), 7)),
            np.zeros(len(pool_entity)),
            np.zeros(len(pool_entity)),
        )
        out[key] = (rows, prow)
    for k, (tr, te) in enumerate(folds):
        est = clone(cfg.estimator()).fit(X["ref"][tr], table.y[tr], table.entity[tr])
        sel = pool_fold == k
        for key in X:
            for (probs, rec, late), Xm, idx in (
                (out[key][0], X[key], te),
                (out[key][1], pool_X[key], np.flatnonzero(sel)),
            ):
                probs[idx] = est.predict_proba(Xm[idx])
                rec[idx] = est.recency_score(Xm[idx])
                late[idx] = est.p_late(Xm[idx])
    return {
        key: np.vstack(
            [
                entity_probe_columns(*rows, table.entity, table.n_entities),
                entity_probe_columns(*prow, pool_entity, n_pool),
            ]
        )
        for key, (rows, prow) in out.items()
    }


def untouched_rows(
    y: np.ndarray, on_reference: np.ndarray, kind: np.ndarray | None = None
) -> np.ndarray:
    """Rows whose false alarms the class-7 threshold budgets, as budget groups (-1: none): each
    calibration model's entities that its extra finetune did not touch (classes 0..6 there),
    one group per calibration model (`kind`; None: a single one)."""
    budgeted = ~np.asarray(on_reference, bool) & (np.asarray(y) != AFTER_BANK)
    return np.where(budgeted, calibration_kinds(on_reference, kind), -1)


def calibration_kinds(on_reference: np.ndarray, kind: np.ndarray | None) -> np.ndarray:
    """The model of each row: 0 the reference, k the k-th calibration model (None: one)."""
    if kind is not None:
        return np.asarray(kind, int)
    return np.where(np.asarray(on_reference, bool), 0, 1)


def family_classifier(
    name: str,
    C: float,
    false_alarm: float | None,
    n_splits: int,
    seed: int,
    fused_Cs: Sequence[float] | None = None,
) -> EvidenceClassifier:
    """The one estimator of a family, as fitted for serving and cloned in every fold; `fused`
    chooses which families it reads (`FUSED_CANDIDATES`) and, with `fused_Cs`, its L2 strength
    inside its training rows."""
    fused = name == "fused"
    return EvidenceClassifier(
        COLUMNS[name],
        C,
        false_alarm,
        n_splits=n_splits,
        seed=seed,
        candidates=FUSED_CANDIDATES if fused else None,
        Cs=fused_Cs if fused else None,
    )


@dataclass
class AnchorRows:
    """The anchors' (never-trained aliases, never a training row) feature rows on each model,
    in their own units: what the "calibration_and_anchors" rule reads its floor from. One array
    per calibration model, in `kind` order."""

    reference: np.ndarray
    calibration: list[np.ndarray]

    def of(self, kind: int) -> np.ndarray:
        """Kind 0 the reference's rows, k the k-th calibration model's."""
        return self.reference if kind == 0 else self.calibration[kind - 1]


def saved_kinds(rows: Mapping[str, np.ndarray]) -> tuple[np.ndarray, AnchorRows]:
    """Each fitted row's model (0 the reference, k the k-th calibration model) and the anchors'
    rows per model, from the rows a bank saves (`family_rows.safetensors`; banks calibrated on
    one model before `model` was saved read it from `on_reference`)."""
    model = rows["model"] if "model" in rows else 1 - rows["on_reference"]
    anchor_model = (
        rows["anchor_model"] if "anchor_model" in rows else 1 - rows["anchor_on_reference"]
    )
    A = rows["anchor_features"].astype(np.float64)
    calibrations = [A[anchor_model == k] for k in range(1, int(anchor_model.max()) + 1)]
    return np.asarray(model, int), AnchorRows(A[anchor_model == 0], calibrations)


def cross_fit_families(
    F: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    untouched: np.ndarray,
    *,
    C: float,
    false_alarm: float | None,
    n_splits: int,
    seed: int,
    on_reference: np.ndarray | None = None,
    anchors: AnchorRows | None = None,
    fused_Cs: Sequence[float] | None = None,
    kind: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Out-of-fold class probabilities [rows, 8] and classes [rows] of each family's classifier
    (a clone per fold; with `false_alarm`, each clone sets its threshold on inner folds of its
    own training rows). With `anchors` each row's class 7 is read as served under the rule
    "calibration_and_anchors": at the clone's threshold raised to its floor on the anchors of
    the row's own model (`on_reference`, and `kind` with several calibration models)."""
    if anchors is not None and on_reference is None:
        raise ValueError("anchors need each row's model (on_reference)")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    model = None if on_reference is None else calibration_kinds(on_reference, kind)
    probs = {name: np.zeros((len(y), N_EVIDENCE)) for name in FAMILIES}
    classes = {name: np.zeros(len(y), int) for name in FAMILIES}
    for tr, te in folds.split(F, y, groups):
        for name in FAMILIES:
            est = clone(family_classifier(name, C, false_alarm, n_splits, seed, fused_Cs))
            est.fit(F[tr], y[tr], groups[tr], untouched[tr])
            probs[name][te] = est.predict_proba(F[te])
            if anchors is None:
                classes[name][te] = est.classes_from(probs[name][te])
                continue
            assert model is not None
            for k in np.unique(model[te]):
                rows = te[model[te] == k]
                floor = est.anchor_floor(anchors.of(int(k)))
                classes[name][rows] = est.classes_from(probs[name][rows], floor=floor)
    return probs, classes


def share_interval(correct: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> dict:
    """The share of true flags, with its bootstrap interval (resampled within `labels`)."""
    correct = np.asarray(correct, float)
    return interval(
        lambda idx: float(correct[idx].mean()), labels, len(labels), n_boot=n_boot, seed=seed
    )


def auc_interval(score: np.ndarray, truth: np.ndarray, n_boot: int, seed: int) -> dict:
    """ROC AUC of `score` for boolean `truth`, with its bootstrap interval (within class)."""

    def metric(idx: np.ndarray) -> float:
        t = truth[idx]
        return float(roc_auc_score(t, score[idx])) if 0 < t.sum() < len(t) else float("nan")

    return interval(metric, truth.astype(int), len(truth), n_boot=n_boot, seed=seed)


def reference_metrics(
    ref_p: np.ndarray, ref_y: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, dict]:
    """The study's stage tasks from out-of-fold class probabilities [rows, 8] of reference
    rows: accuracy on stage 1 vs 6, early vs late, adjacent pairs, balanced 7-class."""
    out: dict[str, dict] = {}

    def correct(neg: tuple[int, ...], pos: tuple[int, ...]) -> np.ndarray:
        """Per reference row: 1 / 0 where the task's summed classes' mass decides it right,
        NaN on rows outside the task."""
        said_pos = ref_p[:, list(pos)].sum(1) > ref_p[:, list(neg)].sum(1)
        hit = (said_pos == np.isin(ref_y, pos)).astype(float)
        return np.where(np.isin(ref_y, neg + pos), hit, np.nan)

    def binary(neg: tuple[int, ...], pos: tuple[int, ...]) -> dict:
        sel = np.isin(ref_y, neg + pos)
        return share_interval(correct(neg, pos)[sel], ref_y[sel], n_boot, seed)

    out["stage1_vs_stage6"] = binary((1,), (6,))
    out["early_vs_late"] = binary(EARLY, LATE)
    # the mean of the five adjacent pairs' accuracies, its interval by resampling entities within
    # each stage (every pair's two stages resampled together, as a reader would redraw them)
    adjacent = np.column_stack([correct((k,), (k + 1,)) for k in range(1, 6)])
    staged = np.isin(ref_y, range(1, 7))
    out["adjacent_mean"] = interval(
        lambda idx: float(np.mean(np.nanmean(adjacent[staged][idx], axis=0))),
        ref_y[staged],
        int(staged.sum()),
        n_boot=n_boot,
        seed=seed,
    )
    # balanced (mean recall over classes 0..6): the reference rows hold the calibration pool
    # too, all class 0, so plain accuracy would reward always answering 0. Served on the
    # reference itself, class 7 is impossible (`estimates(after_possible=False)`): the same here
    hit = (ref_p[:, :AFTER_BANK].argmax(1) == ref_y).astype(float)

    def balanced(idx: np.ndarray) -> float:
        return float(np.mean([hit[idx][ref_y[idx] == c].mean() for c in np.unique(ref_y[idx])]))

    out["stage_accuracy"] = interval(balanced, ref_y, len(ref_y), n_boot=n_boot, seed=seed)
    return out


def family_metrics(
    probs: np.ndarray,
    classes: np.ndarray,
    y: np.ndarray,
    on_reference: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    kind: np.ndarray | None = None,
) -> dict[str, Any]:
    """The held-out figures of one family from its out-of-fold probabilities and classes; with
    several calibration models (`kind`) the false alarms on each as well."""
    ref_y, ref_c = y[on_reference], classes[on_reference]
    cal_p, cal_y, cal_c = probs[~on_reference], y[~on_reference], classes[~on_reference]
    out: dict[str, Any] = reference_metrics(probs[on_reference], ref_y, n_boot=n_boot, seed=seed)
    new = cal_y == AFTER_BANK
    said_after = cal_c == AFTER_BANK
    out["after_bank_recall"] = share_interval(said_after[new], cal_y[new], n_boot, seed)
    out["after_bank_false_alarms"] = share_interval(said_after[~new], cal_y[~new], n_boot, seed)
    cal_kind = calibration_kinds(on_reference, kind)[~np.asarray(on_reference, bool)]
    if len(np.unique(cal_kind)) > 1:
        out["after_bank_false_alarms_by_calibration"] = [
            share_interval(
                said_after[~new & (cal_kind == k)], cal_y[~new & (cal_kind == k)], n_boot, seed
            )
            for k in np.unique(cal_kind)
        ]
    # what the class-7 rule alone would flag on reference rows (a model with the reference's
    # behaviour but other weights); on the reference itself the service never says 7
    out["reference_false_alarms"] = share_interval(ref_c == AFTER_BANK, ref_y, n_boot, seed)
    sel = np.isin(cal_y, (6, AFTER_BANK))
    out["after_vs_stage6_auc"] = auc_interval(
        cal_p[sel, AFTER_BANK], cal_y[sel] == AFTER_BANK, n_boot, seed
    )
    return out


def evaluate_families(
    F: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    on_reference: np.ndarray,
    *,
    C: float,
    false_alarm: float | None,
    n_splits: int,
    seed: int,
    n_boot: int,
    after_rule: AfterRule | None = None,
    anchors: AnchorRows | None = None,
    fused_Cs: Sequence[float] | None = None,
    kind: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Out-of-fold class probabilities per family, and metrics.json `families`: per family the
    held-out figures, plus what they were fitted on. The false alarms are budgeted on each
    calibration model's untouched rows (classes 0..6 there; `kind` names the model of each row
    when there are several); class 7 is read under `after_rule` (calibration_and_anchors needs
    `anchors`)."""
    if after_rule == "calibration_and_anchors" and anchors is None:
        raise ValueError("the rule calibration_and_anchors needs the anchors' rows")
    oof, classes = cross_fit_families(
        F,
        y,
        groups,
        untouched_rows(y, on_reference, kind),
        C=C,
        false_alarm=false_alarm,
        n_splits=n_splits,
        seed=seed,
        on_reference=on_reference,
        anchors=anchors if after_rule == "calibration_and_anchors" else None,
        fused_Cs=fused_Cs,
        kind=kind,
    )
    return oof, {
        "what": "entity-held-out folds over (entity, model) rows: the reference (classes 0..6) "
        "and each calibration model (the reference finetuned once more on fresh entities, "
        "class 7; one per kind of later finetune); stage tasks on the reference rows, "
        "after-the-bank figures on the calibration rows; 95% bootstrap over entities within "
        "each class",
        "calibration_models": int(len(np.unique(calibration_kinds(on_reference, kind)))) - 1,
        "chance": {"stage1_vs_stage6": 0.5, "early_vs_late": 0.5, "stage_accuracy": 1 / 7},
        "stage_accuracy": "balanced accuracy over classes 0..6 on the reference rows",
        "false_alarm_target": false_alarm,
        "after_rule": after_rule,
        "n_rows": int(len(y)),
        "n_entities": int(len(np.unique(groups))),
        **{
            name: family_metrics(
                oof[name], classes[name], y, on_reference, n_boot=n_boot, seed=seed, kind=kind
            )
            for name in FAMILIES
        },
    }
