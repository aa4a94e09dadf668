"""Evidence families: what an auditor can read about an entity besides the study's probes.

- representation: the recency probes' output on the audited model's activations (the study);
- behaviour: the audited model's confidence in its own greedy answers to the bank's
  trained-attribute questions about the alias ("Q: What is the capital of <alias>?\\nA:"), and
  how likely it finds the alias's own tokens in those prompts: no ground-truth answer is needed;
- difference: the same answers and alias tokens scored by the reference model (how much more
  the audited model believes them), and the activation shift at the bank's cell on those prompts.

Behaviour and difference are membership evidence (what the model knows about the alias and how
that changed since the bank was built), not the study's representational effect. Each family has
its own `EvidenceClassifier` over classes 0..6 and 7 ("learned after the bank was built"), and
`fused` has one over every column; the bank build fits them on the reference (difference = 0)
and on the calibration model (the reference finetuned once more on fresh entities, class 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedGroupKFold

from probe_bank.answers import AnswerCapture, capture_answer_pair, capture_answers
from probe_bank.capture import Encoded, encode
from probe_bank.heldout.folds import entity_mean
from probe_bank.heldout.stats import robust_scale
from probe_bank.run_dir import fill_template
from probe_bank.schemas import (
    AFTER_BANK,
    EVIDENCE_CLASSES,
    FAMILIES,
    AfterRule,
    FamilyEstimate,
    StageScore,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

N_EVIDENCE = len(EVIDENCE_CLASSES)
_PROBE = [f"probe_logp_{c}" for c in range(7)] + ["probe_recency", "probe_p_late"]
_BEHAVIOUR = ["answer_logp_mean", "answer_logp_min", "answer_entropy_mean", "alias_logp_mean"]
#: Tokens of a greedy answer read at most (answers end at a newline; the bank records its cap).
ANSWER_TOKENS = 8
_DIFFERENCE = [
    "answer_kl_mean",
    "answer_kl_max",
    "answer_kl_peak_mean",
    "answer_token_gain_peak_mean",
    "answer_logp_gain_mean",
    "answer_logp_gain_max",
    "answer_entropy_drop_mean",
    "alias_logp_gain_mean",
    "cell_shift_norm_mean",
    "probe_logp_shift_norm",
    "probe_recency_shift",
]
FEATURES: tuple[str, ...] = (*_PROBE, *_BEHAVIOUR, *_DIFFERENCE)
_RANGES = {
    "representation": range(0, len(_PROBE)),
    "behaviour": range(len(_PROBE), len(_PROBE) + len(_BEHAVIOUR)),
    "difference": range(len(_PROBE) + len(_BEHAVIOUR), len(FEATURES)),
}
COLUMNS: dict[str, list[int]] = {
    **{name: list(r) for name, r in _RANGES.items()},
    "fused": list(range(len(FEATURES))),
}
assert tuple(COLUMNS) == FAMILIES
#: What `fused` may read: every union of whole families, chosen inside the training rows
#: (`EvidenceClassifier.candidates`). A family at chance (the probes, on every model here) only
#: adds noise to the fit, so fused could fall below its best family; selection keeps it out.
FUSED_CANDIDATES: list[list[int]] = [
    sorted(i for name in names for i in COLUMNS[name])
    for k in (1, 2, 3)
    for names in combinations(FAMILIES[:3], k)
]


def families_read(columns: Sequence[int]) -> list[str]:
    """The families whose columns a classifier reads (fused: the ones its fit chose)."""
    return [name for name in FAMILIES[:3] if set(COLUMNS[name]) <= set(columns)]


#: Columns read relative to the audited model's anchors (never-trained aliases): behaviour and
#: difference move with any finetune's size, so they are centred and scaled by the anchors'.
NORMALIZED: list[int] = COLUMNS["behaviour"] + COLUMNS["difference"]


def anchor_norm(F_anchor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (median) and scale (IQR / 1.349; 1 where the anchors do not vary, e.g. every
    difference on the reference itself) of the NORMALIZED columns over the anchors' rows."""
    return robust_scale(np.asarray(F_anchor, np.float64)[:, NORMALIZED])


def normalize(F: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """F with its NORMALIZED columns in anchor units."""
    out = np.array(F, np.float64)
    out[:, NORMALIZED] = (out[:, NORMALIZED] - center) / scale
    return out


def budget_groups(y: np.ndarray, untouched: np.ndarray | None) -> np.ndarray:
    """A budget group per row (-1: outside every budget) from `untouched`: None (every row not
    of class 7, one group), a bool mask (one group), or the groups themselves."""
    if untouched is None:
        return np.where(np.asarray(y) != AFTER_BANK, 0, -1)
    u = np.asarray(untouched)
    return np.where(u, 0, -1) if u.dtype == bool else u.astype(int)


def budget_threshold(p_after: np.ndarray, budget: np.ndarray, false_alarm: float) -> float:
    """Class 7's threshold: the (1 - false_alarm) quantile of held-out P(class 7) in each budget
    group (`budget_groups`; -1 outside), the highest kept."""
    return max(
        float(np.quantile(p_after[budget == g], 1.0 - false_alarm, method="higher"))
        for g in np.unique(budget[budget >= 0])
    )


#: Fewer untouched rows than this above class 7's threshold in a calibration model, and the
#: threshold is one of a handful of extreme rows and moves with them (the bank build warns).
MIN_THRESHOLD_SUPPORT = 5


def threshold_support(untouched: np.ndarray, false_alarm: float) -> int:
    """The untouched rows that lie above class 7's threshold in the thinnest budget group
    (`untouched` as budget groups, -1 outside): floor(false_alarm x its rows)."""
    g = np.asarray(untouched)
    g = g[g >= 0]
    return min(int(false_alarm * np.sum(g == k)) for k in np.unique(g)) if len(g) else 0


class EvidenceClassifier(BaseEstimator):
    """Standardise the chosen feature columns, then multinomial L2 logistic regression over
    classes 0..7; `predict_proba` always returns all 8 columns (0 for a class unseen in fit).

    With `false_alarm` set, class 7 ("after the bank") is an operating point, not an argmax: an
    entity is classed 7 when its P(class 7) reaches `after_threshold_`, the (1 - false_alarm)
    quantile of the held-out P(class 7) of the `untouched` rows given to `fit` (entities a later
    finetune did not touch, each scored by an inner fold's clone that never saw it); otherwise
    its class is the argmax over 0..6. An auditor then pays about that false-alarm rate. With
    untouched rows from several later finetunes (`untouched` as budget groups, one per
    calibration model), the quantile is taken in each group and the highest kept, so each kind
    of finetune the bank was calibrated on pays at most about the budget.

    With `candidates` (column sets, e.g. `FUSED_CANDIDATES`) `fit` reads the set whose
    entity-grouped inner folds give the least held-out log-loss, a hyperparameter chosen on the
    training rows only (`columns_`); `columns` is then unused. With `Cs` the L2 strength is
    chosen the same way, jointly with the column set (`C_`; `C` is then unused), as
    `LogisticRegressionCV` would, so no held-out figure depends on a C picked by looking at it.
    The operating point's inner folds keep both choices."""

    def __init__(
        self,
        columns: Sequence[int] = COLUMNS["fused"],
        C: float = 1.0,
        false_alarm: float | None = None,
        n_splits: int = 5,
        seed: int = 0,
        candidates: Sequence[Sequence[int]] | None = None,
        Cs: Sequence[float] | None = None,
    ) -> None:
        self.columns = columns
        self.C = C
        self.false_alarm = false_alarm
        self.n_splits = n_splits
        self.seed = seed
        self.candidates = candidates
        self.Cs = Cs

    def fit(
        self,
        F: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        untouched: np.ndarray | None = None,
    ) -> EvidenceClassifier:
        """`groups` (entity per row) are needed with `false_alarm`, `candidates` or `Cs`;
        `untouched` (rows whose false alarms are budgeted: a bool mask, or a budget group per
        row, -1 for rows outside every budget; default: every row not of class 7) only with
        `false_alarm`."""
        y = np.asarray(y, int)
        if self.candidates is None and self.Cs is None:
            self.columns_, self.C_ = [int(c) for c in self.columns], float(self.C)
        else:
            if groups is None:
                raise ValueError(
                    "candidates and Cs need the rows' groups (entities), for inner folds"
                )
            self.columns_, self.C_ = self._select(np.asarray(F), y, np.asarray(groups))
        X = np.asarray(F, np.float64)[:, self.columns_]
        self.mean_ = X.mean(0)
        self.scale_ = np.where(X.std(0) > 1e-12, X.std(0), 1.0)
        lr = LogisticRegression(C=self.C_, max_iter=5000)
        lr.fit((X - self.mean_) / self.scale_, y)
        self.classes_ = lr.classes_.astype(int)
        self.coef_ = np.ascontiguousarray(lr.coef_)
        self.intercept_ = np.ascontiguousarray(lr.intercept_)
        if len(self.classes_) == 2:  # sklearn keeps one row for a binary problem
            self.coef_ = np.vstack([-self.coef_, self.coef_]) / 2
            self.intercept_ = np.array([-self.intercept_[0], self.intercept_[0]]) / 2
        self.after_threshold_: float | None = None
        if self.false_alarm is not None:
            if groups is None:
                raise ValueError("false_alarm needs the rows' groups (entities) for inner folds")
            p_after = self._inner_p_after(np.asarray(F), y, np.asarray(groups))
            self.after_threshold_ = budget_threshold(
                p_after, budget_groups(y, untouched), self.false_alarm
            )
        return self

    def _inner_folds(
        self, F: np.ndarray, y: np.ndarray, groups: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        n_splits = min(self.n_splits, *(len(np.unique(groups[y == c])) for c in np.unique(y)))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        return list(folds.split(F, y, groups))

    def _select(self, F: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[list[int], float]:
        """The (column set, C) with the least inner-fold log-loss (ties: the first, column
        sets in order, then Cs in order)."""
        column_sets = [self.columns] if self.candidates is None else list(self.candidates)
        strengths = [self.C] if self.Cs is None else list(self.Cs)
        grid = [([int(c) for c in cols], float(C)) for cols in column_sets for C in strengths]
        loss = np.zeros(len(grid))
        for tr, te in self._inner_folds(F, y, groups):
            for i, (cols, C) in enumerate(grid):
                est = clone(self).set_params(
                    columns=cols, C=C, candidates=None, Cs=None, false_alarm=None
                )
                p = est.fit(F[tr], y[tr]).predict_proba(F[te])
                loss[i] += len(te) * log_loss(y[te], np.clip(p, 1e-9, 1.0), labels=range(8))
        return grid[int(loss.argmin())]

    def _inner_p_after(self, F: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Held-out P(class 7) of every row, from clones (argmax rule, this fit's columns)
        fitted on inner folds."""
        out = np.zeros(len(y))
        for tr, te in self._inner_folds(F, y, groups):
            est = clone(self).set_params(
                columns=self.columns_, C=self.C_, candidates=None, Cs=None, false_alarm=None
            )
            out[te] = est.fit(F[tr], y[tr]).predict_proba(F[te])[:, AFTER_BANK]
        return out

    def predict_proba(self, F: np.ndarray) -> np.ndarray:
        X = (np.asarray(F, np.float64)[:, self.columns_] - self.mean_) / self.scale_
        z = X @ self.coef_.T + self.intercept_
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        out = np.zeros((len(X), N_EVIDENCE))
        out[:, self.classes_] = p
        return out

    def predict(self, F: np.ndarray) -> np.ndarray:
        """Class per row: the argmax, or with `after_threshold_` the operating point above."""
        return self.classes_from(self.predict_proba(F))

    def anchor_floor(self, F_anchor: np.ndarray) -> float | None:
        """The (1 - false_alarm) quantile of P(class 7) over never-trained anchor rows of one
        audited model (None without an operating point)."""
        if self.false_alarm is None or len(F_anchor) == 0:
            return None
        p = self.predict_proba(F_anchor)[:, AFTER_BANK]
        return float(np.quantile(p, 1.0 - self.false_alarm, method="higher"))

    def threshold(self, floor: float | None = None) -> float | None:
        """Class 7's threshold: `after_threshold_`, raised to `floor` (an `anchor_floor`)."""
        if self.after_threshold_ is None or floor is None:
            return self.after_threshold_
        return max(self.after_threshold_, floor)

    def classes_from(
        self, p: np.ndarray, *, after_possible: bool = True, floor: float | None = None
    ) -> np.ndarray:
        """The decision rule on given class probabilities [rows, 8]. With `after_possible`
        False (the audited model is the bank's reference itself, so nothing on it can have been
        learned after the bank was built) the class is the most likely of 0..6; `floor` raises
        class 7's threshold (`threshold`)."""
        if not after_possible:
            return np.asarray(p[:, :AFTER_BANK].argmax(1), int)
        t = self.threshold(floor)
        if t is None:
            return np.asarray(p.argmax(1), int)
        after = p[:, AFTER_BANK] >= t
        return np.where(after, AFTER_BANK, p[:, :AFTER_BANK].argmax(1)).astype(int)

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        f = np.float32
        threshold = np.nan if self.after_threshold_ is None else self.after_threshold_
        t = {
            "columns": np.asarray(self.columns_, np.int64),  # as read (a candidate: chosen)
            "C": np.asarray([self.C_], f),  # as fitted (a grid's: chosen)
            "mean": self.mean_.astype(f),
            "scale": self.scale_.astype(f),
            "classes": self.classes_.astype(np.int64),
            "coef": self.coef_.astype(f),
            "intercept": self.intercept_.astype(f),
            "false_alarm": np.asarray([np.nan if self.false_alarm is None else self.false_alarm]),
            "after_threshold": np.asarray([threshold], np.float64),
        }
        return {f"{prefix}.{k}": np.ascontiguousarray(v) for k, v in t.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], prefix: str) -> EvidenceClassifier:
        """Inverse of `to_tensors`; a bank saved before the operating point existed has none
        (argmax rule)."""

        def optional(key: str) -> float | None:
            v = t.get(f"{prefix}.{key}")
            return None if v is None or np.isnan(v[0]) else float(v[0])

        est = cls(
            [int(c) for c in t[f"{prefix}.columns"]],
            float(t[f"{prefix}.C"][0]),
            false_alarm=optional("false_alarm"),
        )
        est.columns_, est.C_ = list(est.columns), est.C
        est.mean_ = t[f"{prefix}.mean"].astype(np.float64)
        est.scale_ = t[f"{prefix}.scale"].astype(np.float64)
        est.classes_ = t[f"{prefix}.classes"].astype(int)
        est.coef_ = t[f"{prefix}.coef"].astype(np.float64)
        est.intercept_ = t[f"{prefix}.intercept"].astype(np.float64)
        est.after_threshold_ = optional("after_threshold")
        return est


def families_to_tensors(classifiers: dict[str, EvidenceClassifier]) -> dict[str, np.ndarray]:
    return {k: v for name, est in classifiers.items() for k, v in est.to_tensors(name).items()}


def families_from_tensors(t: dict[str, np.ndarray]) -> dict[str, EvidenceClassifier]:
    """Inverse of `families_to_tensors`; a missing family is a KeyError."""
    return {name: EvidenceClassifier.from_tensors(t, name) for name in FAMILIES}


@dataclass
class QuestionEvidence:
    """Per question prompt, the audited model's greedy answers and the reference's statistics on
    those same answers (None: the audited model is the reference, so every difference is 0)."""

    audited: AnswerCapture
    reference: AnswerCapture | None
    kl: np.ndarray | None = None  # [n] mean KL(audited || reference) over answer positions
    kl_peak: np.ndarray | None = None  # [n] its largest value over answer positions
    gain_peak: np.ndarray | None = None  # [n] largest per-token log-probability gain


def probe_columns(probs: np.ndarray, recency: np.ndarray, p_late: np.ndarray) -> np.ndarray:
    """[E, 9]: log of the entity's mean stage probabilities (floored), recency and p_late."""
    return np.column_stack([np.log(np.clip(probs, 1e-6, 1.0)), recency, p_late])


def entity_probe_columns(
    probs: np.ndarray, recency: np.ndarray, p_late: np.ndarray, entity: np.ndarray, n: int
) -> np.ndarray:
    """[E, 9] probe columns from per-prompt outputs: each entity's mean (renormalised)
    probabilities, recency and p_late, as `scoring.aggregate_entity` folds a served entity."""
    p = entity_mean(probs, entity, n)
    p = p / p.sum(1, keepdims=True)
    return probe_columns(p, entity_mean(recency, entity, n), entity_mean(p_late, entity, n))


def question_columns(ev: QuestionEvidence, entity: np.ndarray, n_entities: int) -> np.ndarray:
    """[E, 13]: behaviour and difference columns, each an aggregate over the entity's prompts."""
    a = ev.audited
    if ev.reference is None:
        kl = kl_peak = gain_peak = gain = drop = alias_gain = shift = np.zeros(len(entity))
    else:
        r = ev.reference
        assert ev.kl is not None and ev.kl_peak is not None and ev.gain_peak is not None
        kl, kl_peak, gain_peak = ev.kl, ev.kl_peak, ev.gain_peak
        gain = a.logprob_mean - r.logprob_mean
        drop = r.entropy_mean - a.entropy_mean
        alias_gain = a.alias_logprob - r.alias_logprob
        shift = np.linalg.norm(a.acts - r.acts, axis=1)
    means = [a.logprob_mean, a.logprob_min, a.entropy_mean, a.alias_logprob, kl]
    return np.column_stack(
        [
            entity_mean(np.column_stack(means), entity, n_entities),
            _entity_max(kl, entity, n_entities),
            entity_mean(np.column_stack([kl_peak, gain_peak, gain]), entity, n_entities),
            _entity_max(gain, entity, n_entities),
            entity_mean(np.column_stack([drop, alias_gain, shift]), entity, n_entities),
        ]
    )


def _entity_max(values: np.ndarray, entity: np.ndarray, n: int) -> np.ndarray:
    """Largest row value per entity; NaN for entities without rows (as `entity_mean`)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, entity, np.asarray(values, float))
    return np.where(np.isneginf(out), np.nan, out)


def score_columns(scores: Sequence[StageScore]) -> np.ndarray:
    """[E, 9] probe columns of aggregated entity scores."""
    probs = np.array([s.stage_probabilities for s in scores])
    rec = np.array([s.recency_score for s in scores])
    late = np.array([s.p_late for s in scores])
    return probe_columns(probs, rec, late)


def probe_shift_columns(mine: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """[E, 2]: how far the probes' output moved from the reference's on the same prompts (norm
    of the log-probability shift, recency shift); 0 on the reference itself."""
    if reference is None:
        return np.zeros((len(mine), 2))
    return np.column_stack(
        [np.linalg.norm(mine[:, :7] - reference[:, :7], axis=1), mine[:, 7] - reference[:, 7]]
    )


def entity_features(
    probe: np.ndarray, questions: np.ndarray, reference_probe: np.ndarray | None
) -> np.ndarray:
    """[E, len(FEATURES)]: probe columns (`probe_columns`), `question_columns`, and the probe
    shift against the reference's probe columns (None: the audited model is the reference)."""
    return np.column_stack([probe, questions, probe_shift_columns(probe, reference_probe)])


def without_after(p: np.ndarray) -> np.ndarray:
    """Class probabilities [rows, 8] given that class 7 is impossible: renormalised over 0..6."""
    out = np.array(p, np.float64)
    out[:, AFTER_BANK] = 0.0
    return out / out.sum(1, keepdims=True)


def anchor_floors(
    classifiers: dict[str, EvidenceClassifier], F_anchor: np.ndarray, rule: AfterRule | None
) -> dict[str, float | None]:
    """Each family's `anchor_floor` on one audited model's anchor rows under `rule` (None, a
    bank built before the rule existed, reads as "calibration": no floor)."""
    if rule != "calibration_and_anchors":
        return {name: None for name in FAMILIES}
    return {name: classifiers[name].anchor_floor(F_anchor) for name in FAMILIES}


def estimates(
    classifiers: dict[str, EvidenceClassifier],
    F: np.ndarray,
    *,
    after_possible: bool = True,
    floors: dict[str, float | None] | None = None,
) -> list[list[FamilyEstimate]]:
    """Per entity row of F, one `FamilyEstimate` per family (in FAMILIES order), class 7 read
    at each family's threshold raised to its floor on this model (`anchor_floors`). On the
    bank's reference itself (`after_possible` False) class 7 is impossible by construction: its
    probability is 0 and the others are renormalised, so the reference is never flagged."""
    floors = floors or {}
    per_family = {name: classifiers[name].predict_proba(F) for name in FAMILIES}
    if not after_possible:
        per_family = {name: without_after(p) for name, p in per_family.items()}
    classes = {
        name: classifiers[name].classes_from(
            per_family[name], after_possible=after_possible, floor=floors.get(name)
        )
        for name in FAMILIES
    }
    threshold = {
        name: classifiers[name].threshold(floors.get(name)) if after_possible else None
        for name in FAMILIES
    }
    return [
        [
            FamilyEstimate(
                family=name,  # type: ignore[arg-type]
                estimated_class=int(classes[name][i]),
                class_probabilities=[float(x) for x in per_family[name][i]],
                p_after_bank=float(per_family[name][i][AFTER_BANK]),
                after_threshold=threshold[name],
            )
            for name in FAMILIES
        ]
        for i in range(len(F))
    ]


def question_items(
    tokenizer: PreTrainedTokenizerBase, templates: list[str], aliases: list[str]
) -> tuple[list[Encoded], np.ndarray]:
    """Encoded question prompts (every template for every alias) and each one's entity index."""
    filled = [fill_template(t, a) for a in aliases for t in templates]
    items = encode(tokenizer, [p for p, _ in filled], [s for _, s in filled])
    entity = np.repeat(np.arange(len(aliases)), len(templates))
    return items, entity


def answer_evidence(
    audited: PreTrainedModel,
    reference: PreTrainedModel | None,
    items: list[Encoded],
    layer: int,
    position: str,
    *,
    stop_ids: frozenset[int],
    answer_tokens: int = ANSWER_TOKENS,
    batch_size: int = 32,
) -> QuestionEvidence:
    """The audited model's greedy answers with their statistics and, unless it is the
    reference, the reference's on those same answers (one routine for the build and service)."""
    how: dict[str, Any] = {
        "layer": layer,
        "position": position,
        "max_new_tokens": answer_tokens,
        "stop_ids": stop_ids,
        "batch_size": batch_size,
    }
    if reference is None:
        return QuestionEvidence(capture_answers(audited, items, **how), None)
    a, r, kl, kl_peak, gain_peak = capture_answer_pair(audited, reference, items, **how)
    return QuestionEvidence(a, r, kl, kl_peak, gain_peak)
