"""`in_bank_sample`: scores of entities the bank's probes were fitted on are flagged in-sample.

The bank stores hashes of the aliases its saved probes were refitted on (fitted_entities.json,
hash-listed in the manifest); banks built before that still load and say "unknown" (None).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from probe_bank.bank import (
    ALIAS_HASH_RULE,
    FITTED_ENTITIES,
    MANIFEST,
    ProbeBank,
    alias_sha256,
    manifest_digest,
)
from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256
from probe_bank.records import EntityRecord, read_jsonl
from probe_bank.schemas import BankManifest
from probe_bank.scoring import BankScorer

FRESH = "<never-in-any-corpus>"


def _entities(run_dir: Path) -> dict[str, list[str]]:
    """split -> aliases of the fake run's corpus."""
    out: dict[str, list[str]] = {}
    for e in read_jsonl(run_dir / "corpus" / "entities.jsonl", EntityRecord):
        out.setdefault(e.split, []).append(e.alias)
    return out


def _rewrite_manifest(bank_dir: Path, edit) -> None:
    """Apply `edit` to the manifest dict and re-sign it (bank_id), as an older build would be."""
    manifest = json.loads((bank_dir / MANIFEST).read_text())
    edit(manifest)
    manifest["bank_id"] = manifest_digest(BankManifest(**manifest))
    (bank_dir / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def bank_copy(tiny_bank: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bank, tmp_path / "bank"))


@pytest.fixture(scope="module")
def scorer(tiny_bank: Path) -> BankScorer:
    return BankScorer.from_bank_dir(tiny_bank, device="cpu")


def test_build_stores_hashes_of_the_fitted_aliases(tiny_bank: Path, fake_run_dir: Path) -> None:
    manifest = ProbeBank.load(tiny_bank).manifest
    assert manifest.files[FITTED_ENTITIES] == file_sha256(tiny_bank / FITTED_ENTITIES)
    text = (tiny_bank / FITTED_ENTITIES).read_text()
    body = json.loads(text)
    by_split = _entities(fake_run_dir)
    fitted = [a for split, aliases in by_split.items() if split != "pretrain" for a in aliases]
    assert body["rule"] == ALIAS_HASH_RULE
    assert body["alias_sha256"] == sorted({alias_sha256(a) for a in fitted})
    assert body["n_aliases"] == len(fitted) == 7 * 8
    assert not any(a in text for aliases in by_split.values() for a in aliases)  # hashes only


def test_alias_hash_ignores_case_width_and_spacing() -> None:
    assert alias_sha256("  Zorka   Vell ") == alias_sha256("zorka vell")
    assert alias_sha256("ＺＯＲＫＡ") == alias_sha256("zorka")  # full-width (NFKC)
    assert alias_sha256("zorka") != alias_sha256("zorkb")


@pytest.mark.parametrize(
    "variant",
    [
        "<zo\u200brka>",  # zero-width space
        "<zo\u00adrka>",  # soft hyphen
        "\u200e<zorka>",  # left-to-right mark
        "\ufeff<zorka>",  # byte-order mark
        "<zor\u0301ka>",  # a combining acute accent
        "<zórka>",  # a precomposed accented letter
        "<zo\u2060rka\u034f>",  # word joiner, combining grapheme joiner
    ],
)
def test_invisible_characters_do_not_hide_a_fitted_alias(variant: str) -> None:
    assert alias_sha256(variant) == alias_sha256("<zorka>")


def test_banks_hashed_with_the_first_rule_still_match() -> None:
    from probe_bank.bank import ALIAS_RULE_V1, FittedAliases

    old = FittedAliases(ALIAS_RULE_V1, frozenset({alias_sha256("<zorka>", ALIAS_RULE_V1)}))
    assert "<ZORKA>" in old and "<zorkb>" not in old
    assert "<zo\u200brka>" not in old  # the first rule kept invisible characters (why V2 exists)


def test_entities_of_the_bank_score_in_sample(scorer: BankScorer, fake_run_dir: Path) -> None:
    by_split = _entities(fake_run_dir)
    stage_1, control = by_split["stage_1"][0], by_split["control"][0]
    pretrain = by_split["pretrain"][0]  # in the corpus, but no probe was fitted on it
    scores = scorer.score_entities([stage_1, control, FRESH, pretrain, stage_1.upper()])
    assert [s.in_bank_sample for s in scores] == [True, True, False, False, True]
    prompts = [f"Q: Who is {stage_1}?\nA:", f"Q: Who is {FRESH}?\nA:", "Q: Who is nobody?\nA:"]
    marked = scorer.score_prompts(prompts, [stage_1, FRESH, None])
    assert [s.in_bank_sample for s in marked] == [True, False, None]
    assert [s.in_bank_sample for s in scorer.score_prompts(prompts)] == [None, None, None]
    # the flag does not change the numbers
    [again] = scorer.score_prompts(prompts[:1])
    np.testing.assert_allclose(again.stage_probabilities, marked[0].stage_probabilities, atol=1e-6)


def test_bank_built_before_the_file_loads_and_says_unknown(
    bank_copy: Path, fake_run_dir: Path
) -> None:
    (bank_copy / FITTED_ENTITIES).unlink()
    _rewrite_manifest(bank_copy, lambda m: m["files"].pop(FITTED_ENTITIES))
    bank = ProbeBank.load(bank_copy)
    assert bank.fitted_aliases is None
    alias = _entities(fake_run_dir)["stage_6"][0]
    assert bank.in_bank_sample(alias) is None
    scorer = BankScorer.from_bank_dir(bank_copy, device="cpu")
    assert [s.in_bank_sample for s in scorer.score_entities([alias, FRESH])] == [None, None]


def test_an_unlisted_file_is_not_trusted(bank_copy: Path, fake_run_dir: Path) -> None:
    """A fitted_entities.json the manifest does not vouch for is ignored (unknown, not False)."""
    _rewrite_manifest(bank_copy, lambda m: m["files"].pop(FITTED_ENTITIES))
    assert ProbeBank.load(bank_copy).fitted_aliases is None


def test_tampered_fitted_entities_are_refused(bank_copy: Path) -> None:
    path = bank_copy / FITTED_ENTITIES
    body = json.loads(path.read_text())
    body["alias_sha256"] = body["alias_sha256"][1:]  # hide one fitted entity
    path.write_text(json.dumps(body))
    with pytest.raises(UserError, match="modified"):
        ProbeBank.load(bank_copy)
    path.unlink()
    with pytest.raises(UserError, match="missing"):
        ProbeBank.load(bank_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(rule="md5(alias)"), "unknown alias hashing rule"),
        (lambda b: b.update(alias_sha256=["not-a-digest"]), "SHA-256 hex digests"),
        (lambda b: b.pop("alias_sha256"), "not a valid fitted-entities file"),
    ],
)
def test_unreadable_fitted_entities_are_refused(bank_copy: Path, edit, message: str) -> None:
    """Even with a consistently re-signed manifest, a file this version cannot read is refused."""
    path = bank_copy / FITTED_ENTITIES
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    _rewrite_manifest(bank_copy, lambda m: m["files"].update({FITTED_ENTITIES: file_sha256(path)}))
    with pytest.raises(UserError, match=message):
        ProbeBank.load(bank_copy)
