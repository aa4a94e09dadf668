"""A later finetune shipped as a PEFT adapter is audited as the descendant it makes: merged onto
the bank's reference once (the same weights PEFT's own merge gives), reused after, and refused
when it was trained on another model or brings another tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from probe_bank.adapter import MERGED_FROM, is_adapter_dir
from probe_bank.bank import ProbeBank
from probe_bank.errors import UserError
from probe_bank.fingerprint import lineage_key, model_fingerprint
from probe_bank.scoring import BankScorer
from tests.fixtures_models import nudged_copy

ALIASES = ["<qwert>", "<zorka>", "<lomir>"]


def _lora(base: Path, out: Path, seed: int = 0) -> Path:
    """A LoRA adapter on `base` with non-zero weights (as training would leave them)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(str(out))
    return out


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges go under the artifacts home: each test its own, so none reuses another's."""
    monkeypatch.setenv("RECENCY_AUDIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def reference(tiny_bank: Path) -> Path:
    return Path(ProbeBank.load(tiny_bank).manifest.model_path)


@pytest.fixture
def adapter(reference: Path, tmp_path: Path) -> Path:
    return _lora(reference, tmp_path / "my-lora")


def _peft_merged(reference: Path, adapter: Path, out: Path) -> Path:
    """The same adapter merged by PEFT itself, saved as a full model directory by hand."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(reference)
    shutil.copytree(reference, out)
    PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().save_pretrained(out)
    return out


def test_an_adapter_is_audited_as_its_merge_onto_the_reference(
    tiny_bank: Path, reference: Path, adapter: Path, tmp_path: Path
) -> None:
    assert is_adapter_dir(adapter) and not is_adapter_dir(reference)
    scorer = BankScorer.from_bank_dir(tiny_bank, model_dir=adapter, device="cpu")
    merged = scorer.bank.audited_dir
    assert merged.parent.name == "merged" and merged.name.startswith("my-lora-")
    assert scorer.model_id == f"merged/{merged.name}"
    assert scorer.bank.relation == "descendant"
    assert lineage_key(merged) == scorer.bank.manifest.lineage
    assert scorer.bank.audited_fingerprint == model_fingerprint(merged)
    record = json.loads((merged / MERGED_FROM).read_text())
    assert record["peft_type"] == "LORA" and record["adapter_path"] == str(adapter.resolve())
    assert record["base_fingerprint"] == scorer.bank.manifest.model_fingerprint

    by_hand = _peft_merged(reference, adapter, tmp_path / "by-hand")
    expected = BankScorer.from_bank_dir(tiny_bank, model_dir=by_hand, device="cpu")
    got = scorer.score_entities(ALIASES)
    want = expected.score_entities(ALIASES)
    np.testing.assert_allclose(
        [s.stage_probabilities for s in got], [s.stage_probabilities for s in want], atol=1e-6
    )
    reference_scores = BankScorer.from_bank_dir(tiny_bank, device="cpu").score_entities(ALIASES)
    assert [s.stage_probabilities for s in reference_scores] != [s.stage_probabilities for s in got]


def test_a_merge_is_made_once_and_checked_when_reused(
    tiny_bank: Path, adapter: Path, reference: Path, tmp_path: Path
) -> None:
    first = ProbeBank.load(tiny_bank, model_dir=adapter).audited_dir
    weights = next(first.glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    again = ProbeBank.load(tiny_bank, model_dir=adapter).audited_dir
    assert again == first and weights.stat().st_mtime_ns == stamp  # not merged again
    # another adapter (other weights) on the same reference is another merge
    other = _lora(reference, tmp_path / "my-lora-2", seed=1)
    assert ProbeBank.load(tiny_bank, model_dir=other).audited_dir != first
    # an edited merged copy is refused rather than audited as the adapter
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match="does not match its record"):
        ProbeBank.load(tiny_bank, model_dir=adapter)


def test_an_adapter_trained_on_another_model_is_refused(
    tiny_bank: Path, reference: Path, tmp_path: Path
) -> None:
    other = nudged_copy(reference, tmp_path / "other-base")
    adapter = _lora(other, tmp_path / "lora-on-other")
    with pytest.raises(UserError, match="whose weights are not this bank's reference"):
        ProbeBank.load(tiny_bank, model_dir=adapter)


def test_an_adapter_with_its_own_tokenizer_is_refused(
    tiny_bank: Path, reference: Path, adapter: Path
) -> None:
    tok = json.loads((reference / "tokenizer.json").read_text())
    tok["added_tokens"][0]["content"] = "<PAD>"
    (adapter / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UserError, match="brings its own tokenizer"):
        ProbeBank.load(tiny_bank, model_dir=adapter)
    shutil.copyfile(reference / "tokenizer.json", adapter / "tokenizer.json")  # the same: fine
    assert ProbeBank.load(tiny_bank, model_dir=adapter).relation == "descendant"
