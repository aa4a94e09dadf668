"""Reading a RUN_DIR (written by the trainer) without importing the trainer, and its probe rows.

Every problem with the directory (missing files, bad records, no final stage) is a UserError with
the path in the message, because the input comes from the user's command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256
from probe_bank.heldout.folds import ProbeData
from probe_bank.records import EntityRecord, ProbePrompt, QARecord, RunRecord, read_jsonl

CORPUS_FILES = ("entities.jsonl", "qa.jsonl", "probes.jsonl")
ALIAS = "{alias}"


@dataclass
class RunData:
    """What the bank needs from a run: its final model, the probe prompts and the QA texts."""

    run_dir: Path
    run: RunRecord
    model_dir: Path
    entities: list[EntityRecord]
    qa: list[QARecord]
    probes: list[ProbePrompt]
    corpus_hashes: dict[str, str]

    @property
    def labelled_probes(self) -> list[ProbePrompt]:
        """Probe prompts of classes 0..6 (pretraining entities have no label)."""
        return [p for p in self.probes if p.label is not None]


def _read_records(path: Path, model: type) -> list:
    if not path.is_file():
        raise UserError(f"{path} is missing")
    try:
        return read_jsonl(path, model)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def verify_corpus(corpus_dir: Path) -> dict[str, Any]:
    """corpus/manifest.json, once every corpus file matches its SHA-256 there (the one check,
    for the trainer's resume and the bank build alike); anything else is a `UserError`."""
    try:
        manifest = json.loads((corpus_dir / "manifest.json").read_text("utf-8"))
        hashes = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"corrupt corpus manifest in {corpus_dir}: {exc}") from None
    if not isinstance(hashes, dict):
        raise UserError(f"corrupt corpus manifest in {corpus_dir}: files is not a mapping")
    for name in CORPUS_FILES:
        path = corpus_dir / name
        if not path.is_file():
            raise UserError(f"corrupt corpus: {path} is missing")
        if file_sha256(path) != hashes.get(name):
            raise UserError(f"corrupt corpus: {path} does not match its SHA-256 in the manifest")
    return dict(manifest)


def load_run(run_dir: str | Path, *, stage: str | None = None) -> RunData:
    """Validate and read a RUN_DIR; `stage` picks a model dir other than run.json's `final`."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"run directory {root} does not exist")
    try:
        run = RunRecord.read(root / "run.json")
    except FileNotFoundError:
        raise UserError(f"{root / 'run.json'} is missing") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{root / 'run.json'} is not a valid run record: {exc}") from None
    final = stage or run.final or "stage_6"
    model_dir = root / final
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not a complete model (has the run finished {final}?)")
    corpus = root / "corpus"
    hashes = verify_corpus(corpus)["files"]
    probes = _read_records(corpus / "probes.jsonl", ProbePrompt)
    labels = {p.label for p in probes if p.label is not None}
    if not {0, 1, 6} <= labels:
        raise UserError(f"{corpus / 'probes.jsonl'} needs control, stage_1 and stage_6 prompts")
    return RunData(
        run_dir=root,
        run=run,
        model_dir=model_dir,
        entities=_read_records(corpus / "entities.jsonl", EntityRecord),
        qa=_read_records(corpus / "qa.jsonl", QARecord),
        probes=probes,
        corpus_hashes=hashes,
    )


def templates_of(probes: list[ProbePrompt]) -> list[str]:
    """One template per template_id, the alias replaced by `{alias}` (sorted by template_id)."""
    found: dict[int, str] = {}
    for p in probes:
        if p.template_id not in found:
            s, e = p.alias_char_span
            found[p.template_id] = p.prompt[:s] + ALIAS + p.prompt[e:]
    return [found[k] for k in sorted(found)]


def fill_template(template: str, alias: str) -> tuple[str, tuple[int, int]]:
    """The prompt for `alias` and the alias's character span in it."""
    start = template.index(ALIAS)
    prompt = template[:start] + alias + template[start + len(ALIAS) :]
    return prompt, (start, start + len(alias))


def probe_data(run: RunData) -> ProbeData:
    """Rows of every labelled probe prompt (no features yet); the bank needs all classes 0..6."""
    probes = run.labelled_probes
    ids = sorted({p.entity_id for p in probes})
    index = {e: i for i, e in enumerate(ids)}
    entity = np.array([index[p.entity_id] for p in probes])
    y = np.array([p.label for p in probes], dtype=int)
    entity_labels = np.zeros(len(ids), int)
    entity_labels[entity] = y
    if sorted(set(y)) != list(range(7)):
        raise UserError(f"probe prompts cover classes {sorted(set(y))}; the bank needs 0..6")
    return ProbeData(np.zeros((len(y), 0), np.float32), y, entity, entity_labels, ids, probes)
