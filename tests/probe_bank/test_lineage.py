"""Lineage, not identity: a bank audits its reference and models finetuned from it (descendants),
and refuses any model of another architecture config or tokenizer with one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from probe_bank.bank import MANIFEST, ProbeBank, manifest_digest
from probe_bank.errors import UserError
from probe_bank.fingerprint import lineage_key, model_fingerprint, model_identity
from probe_bank.schemas import BankManifest
from probe_bank.scoring import BankScorer
from tests.fixtures_models import nudged_copy


@pytest.fixture
def descendant(tiny_bank: Path, tmp_path: Path) -> Path:
    """The reference with its weights nudged, as a further finetune would leave them."""
    return nudged_copy(Path(ProbeBank.load(tiny_bank).manifest.model_path), tmp_path / "descendant")


def _copy(tiny_bank: Path, tmp_path: Path, edit) -> Path:
    out = Path(shutil.copytree(ProbeBank.load(tiny_bank).manifest.model_path, tmp_path / "edited"))
    edit(out)
    return out


def test_the_reference_and_a_descendant(tiny_bank: Path, descendant: Path) -> None:
    bank = ProbeBank.load(tiny_bank)
    assert bank.relation == "reference"
    assert bank.manifest.lineage == lineage_key(bank.manifest.model_path)
    assert bank.manifest.model_identity == model_identity(bank.manifest.model_path)
    assert model_fingerprint(descendant) != bank.manifest.model_fingerprint
    assert lineage_key(descendant) == bank.manifest.lineage
    scorer = BankScorer.from_bank_dir(tiny_bank, model_dir=descendant, device="cpu")
    assert scorer.bank.relation == "descendant"
    assert scorer.model_id.endswith("/descendant")
    # the weights a job records as what scored it: the audited model's, not the reference's
    assert scorer.bank.audited_fingerprint == model_fingerprint(descendant)
    assert bank.audited_fingerprint == bank.manifest.model_fingerprint
    [score] = scorer.score_entities(["<qwert>"])
    assert score.relation == "descendant" and score.model_id == scorer.model_id
    [ref_score] = BankScorer.from_bank_dir(tiny_bank, device="cpu").score_entities(["<qwert>"])
    assert ref_score.relation == "reference"
    assert ref_score.stage_probabilities != score.stage_probabilities  # other weights, other acts


def _set_config(key: str, value: object, file: str = "config.json"):
    def edit(model_dir: Path) -> None:
        config = json.loads((model_dir / file).read_text())
        config[key] = value
        (model_dir / file).write_text(json.dumps(config))

    return edit


def _edit_tokenizer(model_dir: Path) -> None:
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<PAD>"
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))


@pytest.mark.parametrize(
    "edit",
    [_set_config("rms_norm_eps", 0.5), _set_config("num_attention_heads", 2), _edit_tokenizer],
    ids=["rms_norm_eps", "heads", "tokenizer"],
)
def test_same_weights_with_another_config_or_tokenizer_are_refused(
    tiny_bank: Path, tmp_path: Path, edit
) -> None:
    """The weights alone do not make the model: an edited config or tokenizer is refused."""
    edited = _copy(tiny_bank, tmp_path, edit)
    assert model_fingerprint(edited) == ProbeBank.load(tiny_bank).manifest.model_fingerprint
    with pytest.raises(UserError, match="not of this bank's lineage"):
        ProbeBank.load(tiny_bank, model_dir=edited)


def test_bookkeeping_config_keys_do_not_change_lineage(tiny_bank: Path, tmp_path: Path) -> None:
    edited = _copy(tiny_bank, tmp_path, _set_config("transformers_version", "0.0.0"))
    assert ProbeBank.load(tiny_bank, model_dir=edited).relation == "reference"


def test_loader_flags_in_tokenizer_config_do_not_change_lineage(
    tiny_bank: Path, tmp_path: Path
) -> None:
    """transformers >= 5 saves `from_pretrained`'s hub flags into tokenizer_config.json: a model
    finetuned without HF_HUB_OFFLINE is still of the lineage; a real tokenizer setting is not."""
    flipped = _copy(
        tiny_bank, tmp_path, _set_config("local_files_only", False, "tokenizer_config.json")
    )
    assert ProbeBank.load(tiny_bank, model_dir=flipped).relation == "reference"
    padded = Path(
        shutil.copytree(ProbeBank.load(tiny_bank).manifest.model_path, tmp_path / "padded-left")
    )
    _set_config("padding_side", "left", "tokenizer_config.json")(padded)
    with pytest.raises(UserError, match="not of this bank's lineage"):
        ProbeBank.load(tiny_bank, model_dir=padded)


def test_a_bank_with_a_v1_lineage_key_still_audits_descendants(
    tiny_bank: Path, tmp_path: Path, descendant: Path
) -> None:
    """Banks built before lineage v2 keep auditing their reference and its descendants."""
    bank = Path(shutil.copytree(tiny_bank, tmp_path / "v1-bank"))
    manifest = json.loads((bank / MANIFEST).read_text())
    manifest["lineage"] = lineage_key(manifest["model_path"], version=1)
    assert manifest["lineage"] != lineage_key(manifest["model_path"])
    manifest["bank_id"] = manifest_digest(BankManifest(**manifest))
    (bank / MANIFEST).write_text(json.dumps(manifest))
    assert ProbeBank.load(bank).relation == "reference"
    assert ProbeBank.load(bank, model_dir=descendant).relation == "descendant"


def test_a_bank_without_lineage_audits_only_its_reference(
    tiny_bank: Path, tmp_path: Path, descendant: Path
) -> None:
    """Banks built before lineage records keep their id and load as before."""
    bank = Path(shutil.copytree(tiny_bank, tmp_path / "old-bank"))
    manifest = json.loads((bank / MANIFEST).read_text())
    del manifest["lineage"], manifest["model_identity"]
    manifest["bank_id"] = manifest_digest(BankManifest(**manifest))
    (bank / MANIFEST).write_text(json.dumps(manifest))
    assert ProbeBank.load(bank).relation == "reference"
    with pytest.raises(UserError, match="predates lineage"):
        ProbeBank.load(bank, model_dir=descendant)
