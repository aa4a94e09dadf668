"""Selection-adjusted accuracy: the layer x position choice made inside each outer fold.

The bank picks its layer and position by a sweep over the same entities it reports on, which
flatters the headline a little. Here every outer fold picks its own cell by an inner, entity-grouped
early-vs-late score on its training entities only, and the chosen probe is scored on the fold's
held-out entities. The result is what a fresh set of entities should see.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from probe_bank.probes import (
    EARLY,
    LATE,
    ProbeConfig,
    ProbeData,
    classifier,
    early_late_correct,
    entity_folds,
    entity_mean,
)
from probe_bank.stats import interval, nanmean_at

Cells = dict[tuple[int, str], np.ndarray]


def _held_out_correct(
    X: np.ndarray,
    y: np.ndarray,
    entity: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    pos: tuple[int, ...],
    neg: tuple[int, ...],
    cfg: ProbeConfig,
    n_entities: int,
) -> np.ndarray:
    """Fit pos-vs-neg on rows `tr`, score rows `te`; per-entity correctness (NaN elsewhere)."""
    keep_tr = tr[np.isin(y[tr], pos + neg)]
    keep_te = te[np.isin(y[te], pos + neg)]
    est = clone(classifier(cfg)).fit(X[keep_tr], np.isin(y[keep_tr], pos).astype(int))
    score = entity_mean(est.decision_function(X[keep_te]), entity[keep_te], n_entities)
    truth = np.zeros(n_entities, bool)
    truth[entity[keep_te]] = np.isin(y[keep_te], pos)
    correct = ((score > 0) == truth).astype(float)
    correct[~np.isfinite(score)] = np.nan
    return correct


def nested_selection(
    cells: Cells,
    y: np.ndarray,
    entity: np.ndarray,
    entity_labels: np.ndarray,
    cfg: ProbeConfig,
    *,
    n_boot: int,
) -> dict:
    """early_vs_late and stage1_vs_stage6 with the cell chosen inside each outer fold."""
    staged = y > 0
    ys, es = y[staged], entity[staged]
    n_ent = len(entity_labels)
    inner_cfg = cfg.model_copy(update={"seed": cfg.seed + 1})
    late = np.full(n_ent, np.nan)
    one_six = np.full(n_ent, np.nan)
    chosen = []
    for tr, te in entity_folds(ys, es, cfg):
        scores = {
            cell: float(
                np.nanmean(
                    early_late_correct(
                        ProbeData(X[staged][tr], ys[tr], es[tr], entity_labels), inner_cfg
                    )
                )
            )
            for cell, X in cells.items()
        }
        best = max(scores, key=lambda c: (scores[c], -c[0]))
        chosen.append([best[0], best[1]])
        Xs = cells[best][staged]
        for out, pos, neg in ((late, LATE, EARLY), (one_six, (6,), (1,))):
            c = _held_out_correct(Xs, ys, es, tr, te, pos, neg, cfg, n_ent)
            out[np.isfinite(c)] = c[np.isfinite(c)]

    def ci(values: np.ndarray) -> dict:
        return interval(
            lambda idx: nanmean_at(values, idx),
            entity_labels,
            int(np.isfinite(values).sum()),
            n_boot=n_boot,
            seed=cfg.seed,
        )

    return {
        "early_vs_late": ci(late),
        "stage1_vs_stage6": ci(one_six),
        "chosen_per_fold": chosen,
        "criterion": "inner entity-grouped early-vs-late accuracy on the outer training entities",
    }
