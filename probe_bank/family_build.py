"""The bank build's evidence step: capture every model, stack the features, evaluate, fit.

Needs RUN_DIR/calibration (written by `recency-audit calibrate`): `pool/` (fresh entities in the
corpus format) and `run/extra_1` (the reference finetuned one more stage on them), and, when
calibrated on more than one kind of later finetune, `run-<kind>/extra_1` beside it (the same
pool, another recipe: `calibrate --also KIND` writes `run-<KIND>`, e.g. `run-lora16`). Every
capture goes through `probe_bank.capture` at the bank's (layer, position), as the service's does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe_bank.answers import stop_token_ids
from probe_bank.capture import capture
from probe_bank.errors import UserError
from probe_bank.estimator import RecencyProbes
from probe_bank.families import (
    ANSWER_TOKENS,
    COLUMNS,
    FEATURES,
    MIN_THRESHOLD_SUPPORT,
    EvidenceClassifier,
    anchor_norm,
    answer_evidence,
    entity_features,
    entity_probe_columns,
    families_read,
    normalize,
    question_columns,
    question_items,
    threshold_support,
)
from probe_bank.fingerprint import model_fingerprint
from probe_bank.heldout.families import (
    AnchorRows,
    evaluate_families,
    family_classifier,
    oof_probe_columns,
    untouched_rows,
)
from probe_bank.heldout.folds import ProbeConfig, ProbeData
from probe_bank.heldout.texts import text_figures
from probe_bank.modeling import load_model
from probe_bank.records import EntityRecord, FinetuneKind, QARecord, RunRecord
from probe_bank.run_dir import ALIAS, RunData, _read_records, fill_template, verify_corpus
from probe_bank.schemas import AFTER_BANK, FAMILIES, AfterRule, EvidenceSpec
from probe_bank.texts import drop_scale, pair_statistics, text_items

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CALIBRATION_DIR = "calibration"
CALIBRATION_MODEL = "run/extra_1"
#: Calibration models of further kinds: RUN/calibration/run-<kind>/extra_1.
MORE_CALIBRATION_MODELS = "run-*/extra_1"


@dataclass
class Calibration:
    """The calibration pool's entities and the calibration models' directories (the first
    trained with the run's own recipe, then one per further kind of later finetune)."""

    entities: list[EntityRecord]
    model_dirs: list[Path]
    anchors: list[str]
    anchor_texts: list[tuple[str, str]]  # (QA text, answer): what text scoring is read against
    pool_qa: list[QARecord]  # the extra stage's QA: the texts a later finetune touched

    @property
    def model_dir(self) -> Path:
        """The calibration model of the run's own recipe (text scoring is validated on it)."""
        return self.model_dirs[0]

    def kinds(self) -> list[FinetuneKind]:
        """Each calibration model's kind of later finetune (recipe, lora16, reexpose4, ...),
        read from its run.json."""
        out = []
        for d in self.model_dirs:
            try:
                extra = RunRecord.read(d.parent / "run.json").extra_stage
            except (OSError, ValueError) as exc:
                raise UserError(
                    f"{d.parent / 'run.json'} is not a readable run record: {exc}"
                ) from None
            if extra is None:
                raise UserError(f"{d.parent} has no extra stage: not a calibration model")
            out.append(extra.kind)
        return out


#: Trained QA texts per entity that text scoring reads: the bank build's validation, and the
#: anchors (about 300 texts: the served scale costs one pass over them per model, at load).
TEXTS_PER_ENTITY = 3


def first_texts(qa: list[QARecord]) -> list[QARecord]:
    """The first TEXTS_PER_ENTITY trained (not held-out) QA records of each entity."""
    seen: dict[str, int] = {}
    out = []
    for q in qa:
        if not q.heldout and seen.get(q.entity_id, 0) < TEXTS_PER_ENTITY:
            seen[q.entity_id] = seen.get(q.entity_id, 0) + 1
            out.append(q)
    return out


def find_calibration(run_dir: Path) -> Calibration | None:
    """RUN_DIR/calibration when complete (pool verified), else None."""
    root = run_dir / CALIBRATION_DIR
    model_dir = root / CALIBRATION_MODEL
    if not (model_dir / "config.json").is_file():
        return None
    verify_corpus(root / "pool")
    if not (root / "anchors").is_dir():
        raise UserError(f"{root / 'anchors'} is missing: rerun `recency-audit calibrate`")
    verify_corpus(root / "anchors")
    anchors = _read_records(root / "anchors" / "entities.jsonl", EntityRecord)
    pool = _read_records(root / "pool" / "entities.jsonl", EntityRecord)
    qa = _read_records(root / "anchors" / "qa.jsonl", QARecord)
    texts = [(q.text, q.answer) for q in first_texts(qa) if q.answer and q.answer in q.text]
    pool_qa = _read_records(root / "pool" / "qa.jsonl", QARecord)
    more = sorted(p for p in root.glob(MORE_CALIBRATION_MODELS) if (p / "config.json").is_file())
    return Calibration(pool, [model_dir, *more], [e.alias for e in anchors], texts, pool_qa)


def question_templates(qa: list[QARecord], aliases: dict[str, str]) -> list[str]:
    """One trained question prompt per attribute (its first phrasing), the alias as '{alias}',
    ending at 'A:' as in training; sorted by attribute."""
    found: dict[str, tuple[int, str]] = {}
    for q in qa:
        if q.heldout or q.entity_id not in aliases:
            continue
        prompt = q.text[: q.text.rindex(q.answer)].rstrip(" ")
        template = prompt.replace(aliases[q.entity_id], ALIAS)
        if ALIAS in template and (q.attribute not in found or q.phrasing < found[q.attribute][0]):
            found[q.attribute] = (q.phrasing, template)
    if not found:
        raise UserError("the corpus has no trained question to read behaviour from")
    return [found[a][1] for a in sorted(found)]


def validate_texts(
    audited: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    anchor_texts: list[tuple[str, str]],
    touched: list[QARecord],
    untouched: list[QARecord],
    *,
    layer: int,
    n_boot: int,
    seed: int,
) -> dict[str, object]:
    """Text scoring as served (`BankScorer.score_texts` on a descendant), measured on the
    calibration model: the first TEXTS_PER_ENTITY trained QA texts of each entity."""
    picked = [(q, True) for q in first_texts(touched)]
    picked += [(q, False) for q in first_texts(untouched)]
    ids = list(dict.fromkeys(q.entity_id for q, _ in picked))
    index = {e: i for i, e in enumerate(ids)}
    flag_of = dict((q.entity_id, f) for q, f in picked)
    items = text_items(tokenizer, [q.text for q, _ in picked], [q.answer for q, _ in picked])
    anchors = text_items(tokenizer, [t for t, _ in anchor_texts], [a for _, a in anchor_texts])
    *_, anchor_drops = pair_statistics(audited, reference, anchors, layer=layer)
    scale = drop_scale(anchor_drops)
    *_, drops = pair_statistics(audited, reference, items, layer=layer)
    z = np.array([scale.z(d) for d in drops])
    return text_figures(
        z,
        z > scale.threshold_z,
        np.array([index[q.entity_id] for q, _ in picked]),
        np.array([flag_of[e] for e in ids]),
        n_boot=n_boot,
        seed=seed,
    )


def _cell(model: PreTrainedModel, tokenizer, prompts, spans, layer, position, batch_size):  # type: ignore[no-untyped-def]
    cap = capture(
        model,
        tokenizer,
        prompts,
        layers=[layer],
        positions=[position],
        alias_spans=spans,
        batch_size=batch_size,
    )
    return next(iter(cap.acts.values()))[position]


def _served_probe_columns(
    probes: RecencyProbes, X: np.ndarray, entity: np.ndarray, n: int
) -> np.ndarray:
    """[E, 9] probe columns of the saved probes on prompt activations X (as the service)."""
    return entity_probe_columns(
        probes.predict_proba(X), probes.recency_score(X), probes.p_late(X), entity, n
    )


def fit_families(
    run: RunData,
    calibration: Calibration,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    table: ProbeData,
    X_ref: np.ndarray,
    probes: RecencyProbes,
    *,
    layer: int,
    position: str,
    templates: list[str],
    probe_cfg: ProbeConfig,
    C: float,
    n_boot: int,
    batch_size: int,
    answer_tokens: int = ANSWER_TOKENS,
    questions: int | None = None,
    false_alarm: float | None = None,
    after_rule: AfterRule = "calibration",
    fused_Cs: Sequence[float] | None = None,
) -> tuple[dict[str, EvidenceClassifier], dict[str, object], EvidenceSpec, dict[str, np.ndarray]]:
    """Every family's classifier fitted on all rows, its held-out metrics, the manifest spec,
    and the rows themselves (features, class, entity, model) for the report and for tests.
    `questions` keeps the first that many attribute questions (None: all); the spec records
    them, so the service asks what was evaluated."""
    cal_models = [load_model(d)[0] for d in calibration.model_dirs]
    alias_of = {e.entity_id: e.alias for e in run.entities}
    table_aliases = [alias_of[i] for i in table.ids]
    pool_aliases = [e.alias for e in calibration.entities]
    taken = set(table_aliases) & set(pool_aliases)
    if taken:
        raise UserError(f"{len(taken)} calibration aliases are also corpus entities")
    anchors = [a for a in calibration.anchors if a not in {*table_aliases, *pool_aliases}]
    if len(anchors) < 20:
        raise UserError("the calibration needs at least 20 anchor aliases")
    q_templates = question_templates(run.qa, alias_of)[:questions]
    log.info(
        "evidence: %d question templates, %d + %d entities",
        len(q_templates),
        len(table_aliases),
        len(pool_aliases),
    )

    # representation columns: out-of-fold (fold probes fitted on the reference's activations)
    prompts = [p.prompt for p in table.probes]
    spans = [p.alias_char_span for p in table.probes]
    X_cal = {
        f"cal{k}": _cell(m, tokenizer, prompts, spans, layer, position, batch_size)
        for k, m in enumerate(cal_models)
    }

    def filled_cells(m: PreTrainedModel, aliases: list[str]) -> np.ndarray:
        filled = [fill_template(t, a) for a in aliases for t in templates]
        return _cell(
            m,
            tokenizer,
            [p for p, _ in filled],
            [s for _, s in filled],
            layer,
            position,
            batch_size,
        )

    per = len(templates)
    pool_entity = np.repeat(np.arange(len(pool_aliases)), per)
    models = {"ref": model, **{f"cal{k}": m for k, m in enumerate(cal_models)}}
    probe = oof_probe_columns(
        table,
        {"ref": X_ref, **X_cal},
        probe_cfg,
        {key: filled_cells(m, pool_aliases) for key, m in models.items()},
        pool_entity,
        len(pool_aliases),
    )
    anchor_entity = np.repeat(np.arange(len(anchors)), per)
    anchor_probe = {
        key: _served_probe_columns(probes, filled_cells(m, anchors), anchor_entity, len(anchors))
        for key, m in models.items()
    }

    # behaviour and difference columns, for table + pool + anchors on each model
    aliases = table_aliases + pool_aliases + anchors
    items, q_entity = question_items(tokenizer, q_templates, aliases)
    stops = stop_token_ids(tokenizer)

    def question_cols(audited: PreTrainedModel, reference: PreTrainedModel | None) -> np.ndarray:
        ev = answer_evidence(
            audited,
            reference,
            items,
            layer,
            position,
            stop_ids=stops,
            answer_tokens=answer_tokens,
            batch_size=batch_size,
        )
        return question_columns(ev, q_entity, len(aliases))

    E = len(table_aliases)
    n = E + len(pool_aliases)
    ref_all = np.vstack([probe["ref"], anchor_probe["ref"]])
    # every model's features (reference first), each in units of its own anchors' spread
    F_models = [entity_features(ref_all, question_cols(model, None), None)] + [
        entity_features(
            np.vstack([probe[f"cal{k}"], anchor_probe[f"cal{k}"]]), question_cols(m, model), ref_all
        )
        for k, m in enumerate(cal_models)
    ]
    norms = [anchor_norm(Fm[n:]) for Fm in F_models]
    F = np.vstack([normalize(Fm[:n], *nm) for Fm, nm in zip(F_models, norms, strict=True)])
    anchor_F = [normalize(Fm[n:], *nm) for Fm, nm in zip(F_models, norms, strict=True)]
    # never a training row: the served rule's floor, held out
    anchor_rows = AnchorRows(anchor_F[0], anchor_F[1:])
    pool_n = len(pool_aliases)
    K = len(cal_models)
    y = np.concatenate(
        [table.entity_labels, np.zeros(pool_n, int)]
        + [table.entity_labels, np.full(pool_n, AFTER_BANK)] * K
    )
    groups = np.tile(np.arange(n), K + 1)
    kind = np.repeat(np.arange(K + 1), n)  # 0 the reference, k the k-th calibration model
    # a calibration finetune that re-exposed an earlier stage touched those entities: on that
    # model they are neither untouched rows nor examples of class 7
    cal_kinds = calibration.kinds()
    keep = np.ones(len(y), bool)
    for k, fk in enumerate(cal_kinds, 1):
        if fk.reexpose is not None:
            keep &= ~((kind == k) & (groups < E) & (y == fk.reexpose))
    F, y, groups, kind = F[keep], y[keep], groups[keep], kind[keep]
    on_reference = kind == 0
    oof, metrics = evaluate_families(
        F,
        y,
        groups,
        on_reference,
        C=C,
        false_alarm=false_alarm,
        n_splits=probe_cfg.n_splits,
        seed=probe_cfg.seed,
        n_boot=n_boot,
        after_rule=after_rule,
        anchors=anchor_rows,
        fused_Cs=fused_Cs,
        kind=kind,
    )
    metrics["n_calibration_entities"] = pool_n
    metrics["calibration_kinds"] = [k.name for k in cal_kinds]
    metrics["n_table_entities"] = E
    untouched = untouched_rows(y, on_reference, kind)
    support = None if false_alarm is None else threshold_support(untouched, false_alarm)
    if support is not None and support < MIN_THRESHOLD_SUPPORT:
        log.warning(
            "class 7's threshold at a %.3g false-alarm budget rests on %d untouched row(s) of the "
            "thinnest calibration model (fewer than %d): it moves with a handful of entities; "
            "raise the budget, or build on a run with more entities per stage",
            false_alarm,
            support,
            MIN_THRESHOLD_SUPPORT,
        )
    classifiers = {
        name: family_classifier(
            name, C, false_alarm, probe_cfg.n_splits, probe_cfg.seed, fused_Cs
        ).fit(F, y, groups, untouched)
        for name in FAMILIES
    }
    metrics["fused_reads"] = families_read(classifiers["fused"].columns_)
    metrics["fused_C"] = classifiers["fused"].C_
    # text scoring is validated on the first calibration model: its untouched texts only
    touched_again = f"stage_{cal_kinds[0].reexpose}" if cal_kinds[0].reexpose else None
    metrics["texts"] = validate_texts(
        cal_models[0],
        model,
        tokenizer,
        calibration.anchor_texts,
        calibration.pool_qa,
        [q for q in run.qa if q.entity_id in set(table.ids) and q.split != touched_again],
        layer=layer,
        n_boot=n_boot,
        seed=probe_cfg.seed,
    )
    spec = EvidenceSpec(
        question_templates=q_templates,
        answer_tokens=answer_tokens,
        features=list(FEATURES),
        columns=COLUMNS,
        calibration_model_fingerprint=model_fingerprint(calibration.model_dir),
        calibration_models=(
            [model_fingerprint(d) for d in calibration.model_dirs]
            if len(calibration.model_dirs) > 1
            else None
        ),
        calibration_entities=pool_n,
        anchor_aliases=anchors,
        anchor_texts=calibration.anchor_texts,
        false_alarm=false_alarm,
        after_rule=after_rule,
    )
    # the fitted rows in full precision: `research/families/recompute.py` refits on them, and a
    # fused choice (columns x C) on near-tied inner losses can flip on float32 rounding
    rows: dict[str, np.ndarray] = {
        "features": F.astype(np.float64),
        "label": y.astype(np.int64),
        "entity": groups.astype(np.int64),
        "on_reference": on_reference.astype(np.int64),
        "model": kind.astype(np.int64),
        **{f"oof_{name}": p.astype(np.float32) for name, p in oof.items()},
        "anchor_features": np.vstack(anchor_F).astype(np.float64),
        "anchor_on_reference": np.repeat([1] + [0] * K, len(anchors)).astype(np.int64),
        "anchor_model": np.repeat(np.arange(K + 1), len(anchors)).astype(np.int64),
    }
    return classifiers, metrics, spec, rows
