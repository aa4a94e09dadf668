"""The aliased-entity corpus: entities, question-answer pairs and probe prompts, from a seed.

Writes RUN_DIR/corpus/ as docs/ARCHITECTURE.md fixes it (JSONL of `probe_bank.records` types and a
manifest with counts, seed, probe templates and the SHA-256 of every file). Every byte is a
function of the config and the tokenizer (which only decides the alias-length filter).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256
from probe_bank.records import (
    EntityRecord,
    ProbePrompt,
    QARecord,
    read_jsonl,
    split_label,
    write_jsonl,
)
from probe_bank.run_dir import CORPUS_FILES, verify_corpus
from trainer.aliases import pick_aliases, random_alias
from trainer.config import TrainConfig
from trainer.vocab import ATTRIBUTES, PHRASINGS, PROBE_TEMPLATES, UNKNOWN_ANSWER, qa_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STAGE_SPLITS = tuple(f"stage_{k}" for k in range(1, 7))
#: Aliases the familiarity recipe teaches to answer "unknown" (never probed, not the control split).
UNKNOWN_SPLIT = "unknown"
#: Alias-shaped strings added once each to the tokenizer's training text.
FILLER_ALIASES = 2000


@dataclass(frozen=True)
class Corpus:
    """A loaded (or freshly built) corpus."""

    entities: list[EntityRecord]
    qa: list[QARecord]
    probes: list[ProbePrompt]
    manifest: dict[str, Any]

    def questions(self, split: str, *, heldout: bool | None = None) -> list[QARecord]:
        """QA pairs of one split; `heldout` None = both kinds."""
        return [
            q for q in self.qa if q.split == split and (heldout is None or q.heldout == heldout)
        ]


@dataclass(frozen=True)
class _Question:
    attribute: str
    phrasing: int
    heldout: bool


def split_sizes(cfg: TrainConfig, *, from_scratch: bool) -> dict[str, int]:
    """Entities per split, in corpus order; the stage-0 pool exists from scratch, and on a
    pretrained base only as the opt-in warm-up (`warmup_on_base`)."""
    sizes: dict[str, int] = {}
    if cfg.corpus.pretrain_entities and (from_scratch or cfg.corpus.warmup_on_base):
        sizes["pretrain"] = cfg.corpus.pretrain_entities
    sizes.update({s: cfg.corpus.entities_per_stage for s in STAGE_SPLITS})
    sizes["control"] = cfg.corpus.control_entities
    if cfg.corpus.familiarity_entities:
        sizes[UNKNOWN_SPLIT] = cfg.corpus.familiarity_entities
    return sizes


def _draw_attributes(rng: random.Random) -> dict[str, str]:
    return {name: rng.choice(values) for name, values in ATTRIBUTES.items()}


def _draw_questions(rng: random.Random, cfg: TrainConfig) -> list[_Question]:
    """Every (attribute, phrasing) pair of one entity, a fixed number of them held out."""
    pairs = [(a, p) for a in ATTRIBUTES for p in range(cfg.corpus.phrasings_per_attribute)]
    held = set(rng.sample(range(len(pairs)), cfg.corpus.heldout_per_entity))
    return [_Question(a, p, i in held) for i, (a, p) in enumerate(pairs)]


def tokenizer_training_texts(
    questions: list[tuple[_Question, str]], cfg: TrainConfig, *, filler: int = FILLER_ALIASES
) -> list[str]:
    """Corpus text with aliases blanked, plus `filler` alias-shaped strings seen once each.

    Blanking keeps any alias from becoming a token of its own (see `train_tokenizer`); the filler
    lets BPE learn the sub-tokens aliases are made of (letter pairs, adjective and noun words),
    as a pretrained tokenizer would have, so an alias is a few shared pieces, not one per letter.
    """
    texts = [
        qa_text(PHRASINGS[q.attribute][q.phrasing].format(alias=""), answer)
        for q, answer in questions
    ]
    rng = random.Random(f"{cfg.seed}:tokenizer-filler")
    texts += [
        " "
        + random_alias(
            rng,
            cfg.corpus.alias_style,
            letters=cfg.corpus.synthetic_letters,
            adjectives=cfg.corpus.natural_adjectives,
            delimiters=cfg.corpus.synthetic_delimiters,
        )
        + "\n"
        for _ in range(filler)
    ]
    return texts + [t.format(alias="") for t in PROBE_TEMPLATES]


def build_corpus(
    cfg: TrainConfig,
    *,
    from_scratch: bool,
    tokenizer: PreTrainedTokenizerBase | None = None,
    train_tokenizer: Callable[[list[str]], PreTrainedTokenizerBase] | None = None,
) -> tuple[Corpus, PreTrainedTokenizerBase]:
    """Draw the corpus; with no `tokenizer`, `train_tokenizer(texts)` makes one first."""
    ent_rng = random.Random(f"{cfg.seed}:entities")
    sizes = split_sizes(cfg, from_scratch=from_scratch)
    rows: list[tuple[str, dict[str, str], list[_Question]]] = []
    for split, n in sizes.items():
        for _ in range(n):
            rows.append((split, *draw_entity(ent_rng, cfg)))

    if tokenizer is None:
        if train_tokenizer is None:
            raise ValueError("need a tokenizer or a way to train one")
        answered = [(q, _answer(split, attrs, q)) for split, attrs, qs in rows for q in qs]
        tokenizer = train_tokenizer(tokenizer_training_texts(answered, cfg))

    aliases, n_tokens = pick_aliases(
        random.Random(f"{cfg.seed}:aliases"),
        len(rows),
        tokenizer,
        style=cfg.corpus.alias_style,
        letters=cfg.corpus.synthetic_letters,
        adjectives=cfg.corpus.natural_adjectives,
        delimiters=cfg.corpus.synthetic_delimiters,
        n_tokens=cfg.corpus.alias_tokens,
    )
    entities: list[EntityRecord] = []
    qa: list[QARecord] = []
    probes: list[ProbePrompt] = []
    for i, ((split, attrs, qs), alias) in enumerate(zip(rows, aliases, strict=True)):
        ent, ent_qa, ent_probes = entity_records(f"e{i:05d}", alias, split, attrs, qs, cfg)
        entities.append(ent)
        qa.extend(ent_qa)
        if split_label(split) is not None:
            probes.extend(ent_probes)

    manifest = {
        "seed": cfg.seed,
        "alias_style": cfg.corpus.alias_style,
        "alias_tokens": n_tokens,
        "counts": {
            "entities": dict(sizes),
            "qa": len(qa),
            "qa_trained": sum(not q.heldout for q in qa),
            "qa_heldout": sum(q.heldout for q in qa),
            "probes": len(probes),
        },
        "probe_templates": list(PROBE_TEMPLATES),
        "unknown_answer": UNKNOWN_ANSWER,
        "files": {},
    }
    return Corpus(entities, qa, probes, manifest), tokenizer


def entity_records(
    entity_id: str,
    alias: str,
    split: str,
    attrs: dict[str, str],
    questions: list[_Question],
    cfg: TrainConfig,
) -> tuple[EntityRecord, list[QARecord], list[ProbePrompt]]:
    """One entity, its QA pairs and its probe prompts (the corpus and fresh pools alike)."""
    ent = EntityRecord(
        entity_id=entity_id,
        alias=alias,
        alias_style=cfg.corpus.alias_style,
        split=split,
        attributes=attrs,
    )
    return ent, _qa_records(ent, questions), _probe_records(ent)


def draw_entity(rng: random.Random, cfg: TrainConfig) -> tuple[dict[str, str], list[_Question]]:
    """One entity's attribute values and which of its questions are held out."""
    return _draw_attributes(rng), _draw_questions(rng, cfg)


def _answer(split: str, attrs: dict[str, str], q: _Question) -> str:
    return UNKNOWN_ANSWER if split == UNKNOWN_SPLIT else attrs[q.attribute]


def _qa_records(ent: EntityRecord, questions: list[_Question]) -> list[QARecord]:
    out = []
    for q in questions:
        question = PHRASINGS[q.attribute][q.phrasing].format(alias=ent.alias)
        answer = _answer(ent.split, ent.attributes, q)
        out.append(
            QARecord(
                entity_id=ent.entity_id,
                split=ent.split,
                attribute=q.attribute,
                phrasing=q.phrasing,
                question=question,
                answer=answer,
                text=qa_text(question, answer),
                heldout=q.heldout,
            )
        )
    return out


def _probe_records(ent: EntityRecord) -> list[ProbePrompt]:
    out = []
    for t, template in enumerate(PROBE_TEMPLATES):
        prompt = template.format(alias=ent.alias)
        start = prompt.index(ent.alias)
        out.append(
            ProbePrompt(
                entity_id=ent.entity_id,
                split=ent.split,
                label=split_label(ent.split),
                template_id=t,
                prompt=prompt,
                alias=ent.alias,
                alias_char_span=(start, start + len(ent.alias)),
            )
        )
    return out


def write_corpus(corpus: Corpus, out_dir: Path) -> None:
    """Write the three JSONL files and the manifest into a temp dir, then rename into place."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_jsonl(tmp / "entities.jsonl", list(corpus.entities))
    write_jsonl(tmp / "qa.jsonl", list(corpus.qa))
    write_jsonl(tmp / "probes.jsonl", list(corpus.probes))
    corpus.manifest["files"] = {name: file_sha256(tmp / name) for name in CORPUS_FILES}
    (tmp / "manifest.json").write_text(json.dumps(corpus.manifest, indent=2) + "\n")
    os.replace(tmp, out_dir)


def load_corpus(corpus_dir: Path) -> Corpus:
    """Read and verify a corpus dir; a missing, edited or unparsable file is a `UserError`."""
    manifest = verify_corpus(corpus_dir)
    try:
        return Corpus(
            entities=read_jsonl(corpus_dir / "entities.jsonl", EntityRecord),
            qa=read_jsonl(corpus_dir / "qa.jsonl", QARecord),
            probes=read_jsonl(corpus_dir / "probes.jsonl", ProbePrompt),
            manifest=manifest,
        )
    except ValueError as exc:
        raise UserError(f"corrupt corpus: {exc}") from None
