"""BankScorer: a verified bank plus its model, and the one scoring pipeline every consumer uses.

The pipeline reads in one direction (as text-embeddings-inference's queue and LitServe's api):
`prepare` validates and tokenizes once into `Encoded` items, a caller may queue and batch them,
`forward` runs one batch through the truncated model and the bank's probes, and
`aggregate_entity` folds an entity's template scores into one. The service's engine only queues
and batches between `prepare` and `forward`; the bank build, jobs and offline audits call the
same two steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe_bank.answers import stop_token_ids
from probe_bank.bank import ProbeBank
from probe_bank.capture import Encoded, capture_encoded, encode, hook_name
from probe_bank.errors import UserError
from probe_bank.families import (
    anchor_floors,
    anchor_norm,
    answer_evidence,
    entity_features,
    estimates,
    normalize,
    question_columns,
    question_items,
    score_columns,
)
from probe_bank.modeling import load_model
from probe_bank.run_dir import fill_template
from probe_bank.schemas import EvidenceSpec, StageScore, TextScore, TextStatistics
from probe_bank.texts import (
    DropScale,
    TextItem,
    drop_scale,
    model_statistics,
    pair_statistics,
    text_items,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

__all__ = ["BankScorer", "Encoded", "StageScore", "aggregate_entity"]


def alias_span(prompt: str, alias: str | None) -> tuple[int, int] | None:
    """The alias's character span in its prompt; an alias that does not occur is a UserError."""
    if alias is None:
        return None
    start = prompt.find(alias)
    if start < 0:
        raise UserError(f"alias {alias!r} does not occur in prompt {prompt!r}")
    return start, start + len(alias)


def aggregate_entity(scores: Sequence[StageScore]) -> StageScore:
    """One entity's score from its template prompts: mean (renormalised) probabilities and their
    argmax, mean p_late and recency, total tokens; the alias flag is the entity's."""
    probs = np.mean([s.stage_probabilities for s in scores], axis=0)
    probs = probs / probs.sum()
    return scores[0].model_copy(
        update={
            "stage_probabilities": [float(x) for x in probs],
            "estimated_stage": int(np.argmax(probs)),
            "recency_score": float(np.mean([s.recency_score for s in scores])),
            "p_late": float(np.mean([s.p_late for s in scores])),
            "n_tokens": int(sum(s.n_tokens for s in scores)),
        }
    )


class BankScorer:
    """Scores prompts and entities with one bank; safe to share, not thread-safe per call."""

    def __init__(
        self,
        bank: ProbeBank,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        model_dir: str | Path | None = None,
        reference: PreTrainedModel | None = None,
    ) -> None:
        """`model_dir`: where the audited model was loaded from (default the bank's reference);
        `reference`: the bank's reference model, needed for the difference family when the
        audited model is a descendant (None: the audited model is the reference)."""
        if bank.families is not None and bank.relation == "descendant" and reference is None:
            raise UserError("the difference family of a descendant needs the reference model")
        self.bank = bank
        self.model = model
        self.reference = reference
        #: answer-ending tokens (a pass over the vocabulary: once, at load, not per request)
        self._stop_ids = stop_token_ids(tokenizer) if bank.families is not None else None
        self._anchor_norm: tuple[np.ndarray, np.ndarray] | None = None  # on first entity score
        self._anchor_floors: dict[str, float | None] = {}  # class 7's floor per family, likewise
        self._text_scale: DropScale | None = None  # on first text score
        self.tokenizer = tokenizer
        m = bank.manifest
        path = Path(model_dir) if model_dir is not None else bank.audited_dir
        self.bank_id: str = m.bank_id
        self.model_id: str = f"{path.parent.name}/{path.name}"
        self.relation = bank.relation
        self.max_tokens: int = m.max_tokens

    @classmethod
    def from_bank_dir(
        cls,
        bank_dir: str | Path,
        *,
        model_dir: str | Path | None = None,
        device: torch.device | str | None = None,
        expected_bank_id: str | None = None,
        home: Path | None = None,
    ) -> BankScorer:
        """Load and verify the bank, then the model to audit: its reference (default) or a
        descendant of it (`model_dir`, same lineage; see `probe_bank.bank.model_relation`): a
        model directory, or a PEFT adapter directory merged onto the reference (under `home`,
        default the artifacts home)."""
        bank = ProbeBank.load(
            bank_dir, model_dir=model_dir, expected_id=expected_bank_id, home=home
        )
        path = bank.audited_dir  # a PEFT adapter's: its merge onto the reference
        model, tokenizer = load_model(path, device)
        reference = None
        if bank.relation == "descendant":
            if bank.families is not None:  # the difference family needs it
                reference = load_reference(bank, device)
            else:  # text scoring's loss drop uses it when it is still where the bank says
                try:
                    reference = load_reference(bank, device)
                except UserError as exc:
                    log.warning("texts will have no reference statistics: %s", exc)
        return cls(bank, model, tokenizer, path, reference)

    # -- the pipeline: prepare -> (queue, batch) -> forward -----------------------------------

    def prepare(
        self, prompts: Sequence[str], aliases: Sequence[str | None] | None = None
    ) -> list[Encoded]:
        """Validate and tokenize once: every given alias must occur in its prompt, an alias-mean
        bank needs one for every prompt, and no prompt may exceed the model's token limit."""
        prompts = list(prompts)
        if aliases is not None and len(aliases) != len(prompts):
            raise UserError(
                f"{len(aliases)} aliases for {len(prompts)} prompts; give one per prompt"
            )
        alias_of = list(aliases) if aliases is not None else [None] * len(prompts)
        spans = [alias_span(p, a) for p, a in zip(prompts, alias_of, strict=True)]
        if self.bank.manifest.position == "alias_mean" and any(s is None for s in spans):
            raise UserError("this bank reads the alias tokens: give the alias of every prompt")
        items = encode(self.tokenizer, prompts, spans, max_tokens=self.max_tokens)
        return [replace(it, alias=a) for it, a in zip(items, alias_of, strict=True)]

    def forward(self, batch: Sequence[Encoded]) -> list[StageScore]:
        """One batch through the blocks up to the bank's layer, then the bank's probes."""
        return self._forward(batch, self.model)

    def _forward(self, batch: Sequence[Encoded], model: PreTrainedModel) -> list[StageScore]:
        if not batch:
            return []
        m = self.bank.manifest
        cap = capture_encoded(
            model, batch, layers=[m.layer], positions=[m.position], batch_size=len(batch)
        )
        return self.bank.predict(
            cap.acts[hook_name(m.layer)][m.position],
            cap.n_tokens,
            [it.alias for it in batch],
            model_id=self.model_id,
        )

    @property
    def has_families(self) -> bool:
        """Whether entity scores carry the evidence families (the bank was calibrated)."""
        return self.bank.families is not None

    def entity_evidence(
        self,
        aliases: Sequence[str],
        scores: Sequence[StageScore],
        batch_size: int = 64,
        *,
        after_possible: bool | None = None,
    ) -> list[StageScore]:
        """Each entity's aggregated probe score with every family's estimate added: the bank's
        trained-attribute questions about each alias through the audited model (and the
        reference, for a descendant), one batch per `batch_size` prompts.

        `after_possible` None (as served): class 7 is impossible on the reference itself, which
        cannot hold anything learned after its own bank was built. True reads the classifiers
        as they are, on any model (a benchmark's "before" on the reference)."""
        if self.bank.families is None or not aliases:
            return list(scores)
        F = self.entity_features(aliases, scores, batch_size)
        if after_possible is None:
            after_possible = self.relation != "reference"
        per_entity = estimates(
            self.bank.families, F, after_possible=after_possible, floors=self._anchor_floors
        )
        return [
            s.model_copy(update={"families": f}) for s, f in zip(scores, per_entity, strict=True)
        ]

    def entity_features(
        self, aliases: Sequence[str], scores: Sequence[StageScore], batch_size: int = 64
    ) -> np.ndarray:
        """[E, len(FEATURES)]: the families' inputs as the bank build computed them, behaviour
        and difference in units of the bank's anchors' spread on this model (cached, with each
        family's class-7 floor on this model under the bank's `after_rule`)."""
        if self._anchor_norm is None:
            spec = self._spec()
            agg = self._entity_scores(spec.anchor_aliases, batch_size, self.model)
            raw = self._raw_features(spec.anchor_aliases, agg, batch_size)
            self._anchor_norm = anchor_norm(raw)
            assert self.bank.families is not None
            self._anchor_floors = anchor_floors(
                self.bank.families, normalize(raw, *self._anchor_norm), spec.after_rule
            )
        return normalize(self._raw_features(aliases, scores, batch_size), *self._anchor_norm)

    def after_thresholds(self) -> dict[str, float | None]:
        """Each family's class-7 threshold on the audited model, as its estimates carry it
        (`after_threshold`): empty before the anchors ran (first entity score, or the service's
        warm-up) and on the reference itself, which is never classed 7."""
        if self.bank.families is None or self._anchor_norm is None or self.relation == "reference":
            return {}
        return {
            name: est.threshold(self._anchor_floors.get(name))
            for name, est in self.bank.families.items()
        }

    def _spec(self) -> EvidenceSpec:
        spec = self.bank.manifest.evidence
        if spec is None:
            raise UserError("this bank has no evidence families (built without calibration)")
        return spec

    def _raw_features(
        self, aliases: Sequence[str], scores: Sequence[StageScore], batch_size: int
    ) -> np.ndarray:
        spec = self._spec()
        m = self.bank.manifest
        items, entity = question_items(self.tokenizer, spec.question_templates, list(aliases))
        assert self._stop_ids is not None
        ev = answer_evidence(
            self.model,
            self.reference,
            items,
            m.layer,
            m.position,
            stop_ids=self._stop_ids,
            answer_tokens=spec.answer_tokens,
            batch_size=batch_size,
        )
        ref_probe = None
        if self.reference is not None:  # the bank's probes on the reference's activations
            ref_probe = score_columns(self._entity_scores(aliases, batch_size, self.reference))
        questions = question_columns(ev, entity, len(aliases))
        return entity_features(score_columns(scores), questions, ref_probe)

    # -- texts: membership evidence, and its change against the reference --------------------

    def prepare_texts(
        self, texts: Sequence[str], answers: Sequence[str | None] | None = None
    ) -> list[TextItem]:
        """Validate and tokenize once (each answer must occur in its text; token limit)."""
        return text_items(self.tokenizer, texts, answers, max_tokens=self.max_tokens)

    def score_texts(self, items: Sequence[TextItem], batch_size: int = 8) -> list[TextScore]:
        """Each text's statistics on the audited model and, when the reference is loaded (a
        descendant), on the reference with the loss drop; in units of the bank's anchor texts
        when the bank records them (a families bank built with text scoring)."""
        layer = self.bank.manifest.layer
        n = len(items)
        theirs: Sequence[TextStatistics | None] = [None] * n
        drops: Sequence[float | None] = [None] * n
        z: list[float | None] = [None] * n
        touched: list[bool | None] = [None] * n
        if self.reference is None:
            mine = model_statistics(self.model, items, layer=layer, batch_size=batch_size)
        else:
            mine, theirs, drop = pair_statistics(
                self.model, self.reference, items, layer=layer, batch_size=batch_size
            )
            drops = drop
            scale = self._anchor_text_scale(batch_size)
            if scale is not None:
                z = [scale.z(d) for d in drop]
                touched = [scale.z(d) > scale.threshold_z for d in drop]
        return [
            TextScore(
                n_tokens=it.n_tokens,
                scored=it.scored,
                n_scored=len(it.scored_ids),
                audited=a,
                reference=r,
                loss_drop=d,
                loss_drop_anchor_z=zz,
                touched=t,
                model_id=self.model_id,
                bank_id=self.bank_id,
                relation=self.relation,
            )
            for it, a, r, d, zz, t in zip(items, mine, theirs, drops, z, touched, strict=True)
        ]

    def _anchor_text_scale(self, batch_size: int) -> DropScale | None:
        """Median and spread of the anchor texts' loss drop on these two models (cached)."""
        spec = self.bank.manifest.evidence
        if self.reference is None or spec is None or not spec.anchor_texts:
            return None
        if self._text_scale is None:
            items = self.prepare_texts(*zip(*spec.anchor_texts, strict=True))
            *_, drops = pair_statistics(
                self.model,
                self.reference,
                items,
                layer=self.bank.manifest.layer,
                batch_size=batch_size,
            )
            self._text_scale = drop_scale(drops)
        return self._text_scale

    # -- conveniences over the pipeline (offline callers) -------------------------------------

    def score_prompts(
        self,
        prompts: Sequence[str],
        aliases: Sequence[str | None] | None = None,
        batch_size: int = 32,
    ) -> list[StageScore]:
        """One StageScore per prompt, `batch_size` prompts per forward."""
        return self._score_items(self.prepare(prompts, aliases), batch_size, self.model)

    def _score_items(
        self, items: Sequence[Encoded], batch_size: int, model: PreTrainedModel
    ) -> list[StageScore]:
        out: list[StageScore] = []
        for lo in range(0, len(items), batch_size):
            out.extend(self._forward(items[lo : lo + batch_size], model))
        return out

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]:
        """(prompt, alias) for each of the bank's probe templates."""
        if not alias or not alias.strip():
            raise UserError("alias must be a non-empty string")
        return [(fill_template(t, alias)[0], alias) for t in self.bank.manifest.templates]

    def score_entities(
        self, aliases: Sequence[str], batch_size: int = 32, *, after_possible: bool | None = None
    ) -> list[StageScore]:
        """Per entity: its template prompts scored, `aggregate_entity`, then the families
        (`after_possible`: see `entity_evidence`)."""
        entities = self._entity_scores(aliases, batch_size, self.model)
        return self.entity_evidence(aliases, entities, batch_size, after_possible=after_possible)

    def _entity_scores(
        self, aliases: Sequence[str], batch_size: int, model: PreTrainedModel
    ) -> list[StageScore]:
        """Each alias's template prompts through `model` and the bank's probes, aggregated."""
        pairs = [pt for a in aliases for pt in self.entity_prompts(a)]
        items = self.prepare([p for p, _ in pairs], [a for _, a in pairs])
        scores = self._score_items(items, batch_size, model)
        k = len(self.bank.manifest.templates)
        return [aggregate_entity(scores[i * k : (i + 1) * k]) for i in range(len(aliases))]


def load_reference(bank: ProbeBank, device: torch.device | str | None = None) -> PreTrainedModel:
    """The bank's reference model at its recorded path, verified by fingerprint."""
    from probe_bank.fingerprint import model_fingerprint

    path = Path(bank.manifest.model_path)
    if not (path / "config.json").is_file():
        raise UserError(
            f"the bank's reference model {path} is missing: the difference family of a "
            "descendant compares against it"
        )
    if model_fingerprint(path) != bank.manifest.model_fingerprint:
        raise UserError(f"the model at {path} is no longer the bank's reference (fingerprint)")
    model, _ = load_model(path, device)
    return model
