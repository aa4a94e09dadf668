"""Selection-adjusted accuracy: the layer x position choice made inside each outer fold.

The bank picks its layer and position by a scan over the same entities it reports on, which
flatters the headline a little. Here every outer fold picks its own cell by an inner, entity-grouped
early-vs-late score on its training entities only, and the chosen probe is scored on the fold's
held-out entities. The result is what a fresh set of entities should see.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from sklearn.base import clone

from probe_bank.heldout.folds import (
    BINARY_TASKS,
    ProbeConfig,
    ProbeData,
    correct_of,
    entity_folds,
    entity_mean,
    task_correct,
)
from probe_bank.heldout.stats import interval, nanmean_at

Cells = dict[tuple[int, str], np.ndarray]
Cell = tuple[int, str]

#: How the served cell is read off a scan: `best`, the highest score (ties: the earliest block);
#: `one_se`, the earliest block whose score is within one standard error of the best's
#: (Breiman's one-standard-error rule). Every block before the probed one runs on every served
#: prompt, so depth that the scores cannot tell from noise is not bought: with probes at chance
#: on every block, `best` picks whichever block the noise favours.
CellRule = Literal["best", "one_se"]


def choose_cell(scores: Mapping[Cell, tuple[float, float]], rule: CellRule) -> Cell:
    """The cell `rule` picks from {cell: (score, standard error)}; under `one_se`, among the
    earliest qualifying block's cells, the highest score."""
    best = max(scores, key=lambda c: (scores[c][0], -c[0]))
    if rule == "best":
        return best
    floor = scores[best][0] - scores[best][1]
    within = [c for c in scores if scores[c][0] >= floor]
    return min(within, key=lambda c: (c[0], -scores[c][0]))


def standard_error(correct: np.ndarray) -> float:
    """Standard error of the mean of the defined entries (0 with fewer than two)."""
    v = correct[np.isfinite(correct)]
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def nested_selection(
    cells: Cells,
    y: np.ndarray,
    entity: np.ndarray,
    entity_labels: np.ndarray,
    cfg: ProbeConfig,
    *,
    n_boot: int,
    rule: CellRule = "best",
) -> dict:
    """early_vs_late and stage1_vs_stage6 with the cell chosen inside each outer fold, by the
    bank's own `rule` over the inner scores."""
    staged = y > 0
    ys, es = y[staged], entity[staged]
    n_ent = len(entity_labels)
    inner_cfg = cfg.model_copy(update={"seed": cfg.seed + 1})
    # the same estimator the bank serves, with the two heads that answer the binary tasks
    template = cfg.estimator(heads=("late", "pairwise"), pairs=((1, 6),))
    found = {task: np.full(n_ent, np.nan) for task in BINARY_TASKS}
    chosen = []
    for tr, te in entity_folds(ys, es, cfg):
        inner = {
            cell: task_correct(
                ProbeData(X[staged][tr], ys[tr], es[tr], entity_labels),
                "early_vs_late",
                inner_cfg,
            )
            for cell, X in cells.items()
        }
        best = choose_cell(
            {c: (float(np.nanmean(v)), standard_error(v)) for c, v in inner.items()}, rule
        )
        chosen.append([best[0], best[1]])
        Xs = cells[best][staged]
        est = clone(template).fit(Xs[tr], ys[tr], groups=es[tr])
        decisions = {
            "early_vs_late": est.late_decision(Xs[te]),
            "stage1_vs_stage6": est.pair_decision(Xs[te])[:, 0],
        }
        for task, (neg, pos) in BINARY_TASKS.items():
            c = correct_of(entity_mean(decisions[task], es[te], n_ent), entity_labels, neg, pos)
            found[task][np.isfinite(c)] = c[np.isfinite(c)]

    def ci(values: np.ndarray) -> dict:
        return interval(
            lambda idx: nanmean_at(values, idx),
            entity_labels,
            int(np.isfinite(values).sum()),
            n_boot=n_boot,
            seed=cfg.seed,
        )

    return {
        "early_vs_late": ci(found["early_vs_late"]),
        "stage1_vs_stage6": ci(found["stage1_vs_stage6"]),
        "chosen_per_fold": chosen,
        "criterion": "inner entity-grouped early-vs-late accuracy on the outer training "
        f"entities, cell rule {rule}",
    }
