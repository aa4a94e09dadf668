"""The scalar baselines beside the probe: features from the model, then the same probes on them.

Each statistic alone and all combined get the probe's own rows and folds; then the recency probe
is retrained on entities balanced on each statistic (the study's test that it is not a proxy).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from probe_bank.baselines import (
    BASELINE_NAMES,
    answer_nll,
    balanced_entities,
    prompt_baselines,
    text_statistics,
)
from probe_bank.errors import UserError
from probe_bank.heldout.folds import BINARY_TASKS, ProbeConfig, ProbeData, entity_mean, task_correct
from probe_bank.heldout.metrics import binary_metrics, full_outcomes, stage_metrics
from probe_bank.heldout.stats import interval, nanmean_at
from probe_bank.run_dir import RunData
from probe_bank.schemas import BALANCED_PREFIX

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def baseline_features(
    run: RunData,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    table: ProbeData,
    acts: np.ndarray,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Prompt-row features of every baseline (answer loss broadcast from its entity)."""
    prompts = [p.prompt for p in table.probes]
    feats = prompt_baselines(text_statistics(model, tokenizer, prompts, batch_size), prompts, acts)
    wanted = set(table.ids)
    qa = [q for q in run.qa if q.entity_id in wanted and not q.heldout]
    qa_stats = text_statistics(model, tokenizer, [q.text for q in qa], batch_size)
    per_entity: dict[str, list[float]] = {}
    for i, q in enumerate(qa):
        start = q.text.rfind(q.answer)
        span = (start, start + len(q.answer))
        per_entity.setdefault(q.entity_id, []).append(answer_nll(qa_stats, i, span))
    loss = np.array([np.nanmean(per_entity.get(e, [np.nan])) for e in table.ids])
    feats["answer_loss"] = loss[table.entity]
    return {k: feats[k] for k in BASELINE_NAMES}


def _fill(x: np.ndarray) -> np.ndarray:
    """Replace undefined statistics by the column mean (a constant carries no signal)."""
    x = np.array(x, float)
    col = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
    return np.where(np.isfinite(x), x, np.nan_to_num(col))


def baseline_metrics(
    feats: dict[str, np.ndarray], data: ProbeData, cfg: ProbeConfig, *, n_boot: int, n_bins: int
) -> dict:
    """Each baseline alone and all combined (same folds as the probe), then balanced probes."""
    out: dict[str, dict] = {}
    sets = {name: f[:, None] for name, f in feats.items()}
    sets["combined"] = np.stack(list(feats.values()), axis=1)
    for name, F in sets.items():
        o = full_outcomes(data.with_features(_fill(F)), cfg)
        out[name] = {
            **binary_metrics(o, n_boot, cfg.seed),
            **stage_metrics(o, n_boot, cfg.seed),
        }
        log.info("baseline %s: 1v6 %s", name, out[name]["stage1_vs_stage6"]["value"])
    for name, f in feats.items():
        stat = entity_mean(_fill(f[:, None])[:, 0], data.entity, data.n_entities)
        out[BALANCED_PREFIX + name] = balanced_probe_metrics(
            data, stat, cfg, n_boot=n_boot, n_bins=n_bins
        )
    return out


def balanced_probe_metrics(
    data: ProbeData, stat: np.ndarray, cfg: ProbeConfig, *, n_boot: int, n_bins: int
) -> dict:
    """The probe retrained and tested on entities subsampled to share `stat`'s histogram."""
    res: dict[str, dict] = {}
    for key, (a, b) in BINARY_TASKS.items():
        keep = balanced_entities(stat, data.entity_labels, a, b, n_bins=n_bins, seed=cfg.seed)
        empty = {"value": None, "ci95": [None, None], "n_entities": int(keep.sum())}
        try:
            correct = task_correct(data.rows(keep[data.entity]), key, cfg)
        except UserError:  # too few entities left in a class for held-out folds
            res[key] = empty
            continue
        res[key] = interval(
            partial(nanmean_at, correct),
            data.entity_labels,
            int(np.isfinite(correct).sum()),
            n_boot=n_boot,
            seed=cfg.seed,
        )
    return res
