"""Held-out figures of text scoring: the calibration model against the reference.

The calibration model is the reference finetuned once more on fresh entities, so its extra
stage's QA texts are texts a later finetune touched and the corpus entities' QA texts are texts
it did not. Nothing here is fitted (the anchor texts that scale the loss drop are neither), so
every figure is out of sample; intervals resample entities, whose texts are correlated.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from probe_bank.heldout.stats import interval


def text_figures(
    z: np.ndarray,
    flagged: np.ndarray,
    entity: np.ndarray,
    touched_entity: np.ndarray,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, object]:
    """AUC of the anchor-unit loss drop, touched vs untouched texts, and the shares flagged;
    `entity` per text (0..E-1), `touched_entity` per entity."""
    z, flagged, entity = np.asarray(z, float), np.asarray(flagged, bool), np.asarray(entity)
    touched_entity = np.asarray(touched_entity, bool)
    rows = [np.flatnonzero(entity == e) for e in range(len(touched_entity))]

    def texts_of(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([rows[e] for e in idx]) if len(idx) else np.zeros(0, int)

    def auc(idx: np.ndarray) -> float:
        t = texts_of(idx)
        truth = touched_entity[entity[t]]
        return float(roc_auc_score(truth, z[t])) if 0 < truth.sum() < len(t) else float("nan")

    def share(which: bool):  # type: ignore[no-untyped-def]
        def metric(idx: np.ndarray) -> float:
            t = texts_of(idx[touched_entity[idx] == which])
            return float(flagged[t].mean()) if len(t) else float("nan")

        return metric

    labels = touched_entity.astype(int)
    n = len(touched_entity)
    return {
        "what": "the calibration model against the reference: its extra stage's trained QA "
        "texts (touched) vs the corpus entities' trained QA texts (untouched); loss drop in "
        "units of the anchor texts; 95% bootstrap over entities",
        "auc_touched_vs_untouched": interval(auc, labels, n, n_boot=n_boot, seed=seed),
        "touched_flagged": interval(share(True), labels, n, n_boot=n_boot, seed=seed),
        "untouched_flagged": interval(share(False), labels, n, n_boot=n_boot, seed=seed),
        "n_texts": {
            "touched": int(touched_entity[entity].sum()),
            "untouched": int((~touched_entity[entity]).sum()),
        },
    }
