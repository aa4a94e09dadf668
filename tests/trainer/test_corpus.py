"""The corpus is a pure function of the seed, and its splits never share an entity or alias."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from probe_bank.records import split_label
from probe_bank.run_dir import CORPUS_FILES
from trainer.config import resolve_config
from trainer.corpus import STAGE_SPLITS, build_corpus, load_corpus, write_corpus
from trainer.tokenizer import train_tokenizer
from trainer.vocab import ATTRIBUTES, PROBE_TEMPLATES


def _write(out: Path, seed: int, **overrides: object) -> Path:
    cfg = resolve_config("tiny", seed=seed, overrides=dict(overrides))
    corpus, _ = build_corpus(
        cfg,
        from_scratch=True,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    write_corpus(corpus, out)
    return out


def _bytes(corpus_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(corpus_dir.iterdir())}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", seed=3)
    b = _write(tmp_path / "b", seed=3)
    assert _bytes(a) == _bytes(b)
    assert load_corpus(a).manifest["files"] == load_corpus(b).manifest["files"]


def test_other_seed_other_corpus(tmp_path: Path) -> None:
    a = load_corpus(_write(tmp_path / "a", seed=3))
    b = load_corpus(_write(tmp_path / "b", seed=4))
    for name in CORPUS_FILES:
        assert a.manifest["files"][name] != b.manifest["files"][name]
    assert {e.alias for e in a.entities} != {e.alias for e in b.entities}


def test_manifest_counts_and_hashes(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path / "c", seed=0))
    m = corpus.manifest
    assert m["seed"] == 0 and m["alias_style"] == "synthetic"
    assert m["probe_templates"] == list(PROBE_TEMPLATES)
    assert sum(m["counts"]["entities"].values()) == len(corpus.entities)
    assert m["counts"]["qa"] == len(corpus.qa)
    assert m["counts"]["qa_heldout"] == sum(q.heldout for q in corpus.qa)
    assert m["counts"]["probes"] == len(corpus.probes)
    assert set(m["files"]) == set(CORPUS_FILES)


def test_splits_disjoint_and_equal(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path / "c", seed=1))
    ids = [e.entity_id for e in corpus.entities]
    aliases = [e.alias for e in corpus.entities]
    assert len(set(ids)) == len(ids) and len(set(aliases)) == len(aliases)
    by_split: dict[str, set[str]] = {}
    for e in corpus.entities:
        by_split.setdefault(e.split, set()).add(e.entity_id)
        assert set(e.attributes) == set(ATTRIBUTES)
    assert set(by_split) == {"pretrain", *STAGE_SPLITS, "control"}
    sizes = {len(by_split[s]) for s in STAGE_SPLITS}
    assert sizes == {8}
    assert len(by_split["control"]) == 8
    # every QA and probe belongs to its entity's split
    split_of = {e.entity_id: e.split for e in corpus.entities}
    assert all(q.split == split_of[q.entity_id] for q in corpus.qa)
    assert all(p.split == split_of[p.entity_id] for p in corpus.probes)


def test_heldout_share_and_probe_prompts(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path / "c", seed=2))
    per_entity: dict[str, list[bool]] = {}
    for q in corpus.qa:
        per_entity.setdefault(q.entity_id, []).append(q.heldout)
        assert q.text == f"Q: {q.question}\nA: {q.answer}\n"
    assert {sum(v) for v in per_entity.values()} == {2}
    assert {len(v) for v in per_entity.values()} == {len(ATTRIBUTES) * 2}
    # probes: only labelled splits, every template, the alias exactly at its span, never trained
    trained = {q.question for q in corpus.qa}
    for p in corpus.probes:
        assert p.label == split_label(p.split) and p.label is not None
        a, b = p.alias_char_span
        assert p.prompt[a:b] == p.alias
        assert p.prompt.removeprefix("Q: ").removesuffix("\nA:") not in trained
    n_probed = sum(split_label(e.split) is not None for e in corpus.entities)
    assert len(corpus.probes) == n_probed * len(PROBE_TEMPLATES)


def test_familiarity_pool_is_separate(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path / "c", seed=0, familiarity_entities=6))
    unknown = [e for e in corpus.entities if e.split == "unknown"]
    assert len(unknown) == 6
    assert {q.answer for q in corpus.qa if q.split == "unknown"} == {"unknown"}
    probed = {p.entity_id for p in corpus.probes}
    assert probed.isdisjoint(e.entity_id for e in unknown)


def test_tampered_file_is_a_user_error(tmp_path: Path) -> None:
    out = _write(tmp_path / "c", seed=0)
    qa = out / "qa.jsonl"
    qa.write_text(qa.read_text().replace("1930s", "1940s", 1))
    with pytest.raises(UserError, match="SHA-256"):
        load_corpus(out)
    other = _write(tmp_path / "d", seed=0)
    (other / "probes.jsonl").unlink()
    with pytest.raises(UserError, match="missing"):
        load_corpus(other)
    (other / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest"):
        load_corpus(other)
