"""Bank persistence: round trip, manifest contents, refusal of tampered files and other models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from probe_bank.bank import MANIFEST, WEIGHTS, ProbeBank, manifest_digest
from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256, model_fingerprint
from probe_bank.schemas import BankManifest, BankMetrics
from probe_bank.scoring import BankScorer, StageScore
from tests.fixtures_models import make_random_model_dir

HEADLINE = ("stage1_vs_stage6", "early_vs_late", "adjacent_mean", "stage_accuracy")
REQUIRED = (
    "pairwise_accuracy",
    *HEADLINE,
    "recency_spearman",
    "centroid_order_spearman",
    "ece",
    "layer",
    "position",
    "baselines",
)


@pytest.fixture
def bank_copy(tiny_bank: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bank, tmp_path / "bank"))


def test_manifest_and_metrics(tiny_bank: Path, fake_run_dir: Path):
    bank = ProbeBank.load(tiny_bank)
    m = bank.manifest
    assert m.model_fingerprint == model_fingerprint(fake_run_dir / "stage_6")
    assert Path(m.model_path) == (fake_run_dir / "stage_6").resolve()
    assert m.classes == list(range(7)) and m.hook == f"blocks.{m.layer}.hook_resid_post"
    assert set(m.files) >= {WEIGHTS, "metrics.json", "scan.json", "centroids.json"}
    assert all(m.files[n] == file_sha256(tiny_bank / n) for n in m.files)
    assert m.templates and all("{alias}" in t for t in m.templates)
    assert bank.metrics is not None
    metrics = bank.metrics.model_dump(mode="json")
    assert set(REQUIRED) <= set(metrics)
    assert np.array(metrics["pairwise_accuracy"], dtype=float).shape == (6, 6)
    for key in HEADLINE:
        entry = metrics[key]
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi and entry["n_entities"] > 0
    assert {
        "answer_loss",
        "entropy",
        "norm",
        "max_logit",
        "min_k",
        "zlib_ratio",
        "combined",
    } <= set(metrics["baselines"])
    assert "stage1_vs_stage6" in metrics["baselines"]["balanced_norm"]


def test_a_bank_written_before_the_baselines_rename_reads_them(tiny_bank: Path):
    """Older metrics.json files name the scalar baselines "controls"; they load as baselines."""
    metrics = json.loads((tiny_bank / "metrics.json").read_text())
    old = {("controls" if k == "baselines" else k): v for k, v in metrics.items()}
    assert "baselines" not in old and old["controls"]
    parsed = BankMetrics.model_validate(old)
    assert parsed.baselines == BankMetrics.model_validate(metrics).baselines
    assert set(parsed.baselines) == set(metrics["baselines"])
    zlib = parsed.baselines["zlib_ratio"].stage1_vs_stage6  # typed, checked on load
    assert zlib.value == metrics["baselines"]["zlib_ratio"]["stage1_vs_stage6"]["value"]
    assert "controls" not in parsed.model_dump()


def test_round_trip_predictions_are_stable(tiny_bank: Path):
    a, b = ProbeBank.load(tiny_bank), ProbeBank.load(tiny_bank)
    x = np.random.default_rng(0).normal(size=(3, a.manifest.d_model))
    sa, sb = a.predict(x), b.predict(x)
    assert [s.model_dump() for s in sa] == [s.model_dump() for s in sb]
    for s in sa:
        assert abs(sum(s.stage_probabilities) - 1) < 1e-6
        assert s.estimated_stage == int(np.argmax(s.stage_probabilities))
        assert 0 <= s.p_late <= 1


def test_tampered_weights_are_refused(bank_copy: Path):
    tensors = load_file(str(bank_copy / WEIGHTS))
    tensors["late.coef"] = tensors["late.coef"] * -1
    save_file(tensors, str(bank_copy / WEIGHTS))
    with pytest.raises(UserError, match="modified"):
        ProbeBank.load(bank_copy)


def test_tampered_metrics_and_missing_file_are_refused(bank_copy: Path):
    metrics = json.loads((bank_copy / "metrics.json").read_text())
    metrics["stage_accuracy"]["value"] = 0.99
    (bank_copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match="modified"):
        ProbeBank.load(bank_copy)
    (bank_copy / "metrics.json").unlink()
    with pytest.raises(UserError, match="missing"):
        ProbeBank.load(bank_copy)


def test_manifest_escaping_the_bank_dir_is_refused(bank_copy: Path):
    manifest = json.loads((bank_copy / MANIFEST).read_text())
    manifest["files"]["../secret"] = "0" * 64
    manifest["bank_id"] = manifest_digest(BankManifest(**manifest))  # a consistent forgery
    (bank_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="missing"):
        ProbeBank.load(bank_copy)


def test_a_model_of_another_lineage_is_refused(tiny_bank: Path, tmp_path: Path):
    other = make_random_model_dir(tmp_path / "other", seed=1, width=32)  # another architecture
    with pytest.raises(UserError, match="not of this bank's lineage"):
        ProbeBank.load(tiny_bank, model_dir=other)
    with pytest.raises(UserError, match="not a probe bank"):
        ProbeBank.load(tmp_path)


def test_scorer_scores_prompts_and_entities(tiny_bank: Path):
    scorer = BankScorer.from_bank_dir(tiny_bank, device="cpu")
    assert scorer.bank_id.startswith("bank-") and scorer.max_tokens > 0
    pairs = scorer.entity_prompts("<qwert>")
    assert len(pairs) == len(scorer.bank.manifest.templates)
    assert all("<qwert>" in p and a == "<qwert>" for p, a in pairs)
    per_prompt = scorer.score_prompts([p for p, _ in pairs], [a for _, a in pairs])
    assert all(isinstance(s, StageScore) for s in per_prompt)
    assert all(s.bank_id == scorer.bank_id and s.model_id == scorer.model_id for s in per_prompt)
    prepared = scorer.prepare([p for p, _ in pairs], [a for _, a in pairs])
    assert [s.n_tokens for s in per_prompt] == [len(it.input_ids) for it in prepared]
    assert scorer.forward(prepared) == per_prompt  # the pipeline is the two steps
    [entity] = scorer.score_entities(["<qwert>"])
    mean = np.mean([s.stage_probabilities for s in per_prompt], axis=0)
    np.testing.assert_allclose(entity.stage_probabilities, mean / mean.sum(), atol=1e-9)
    assert scorer.score_prompts([]) == []
    with pytest.raises(UserError):
        scorer.score_prompts(["Q: Who is x?\nA:"], ["<absent>"])


def test_alias_mean_bank_needs_aliases(fake_run_dir: Path, tmp_path: Path):
    from probe_bank.build import BuildConfig, build_bank

    cfg = BuildConfig(layers=[0], positions=["alias_mean"], n_boot=10, baselines=False)
    bank_dir = build_bank(fake_run_dir, tmp_path / "bank", cfg)
    scorer = BankScorer.from_bank_dir(bank_dir, device="cpu")
    assert scorer.bank.manifest.position == "alias_mean"
    prompt = "Q: Who is <qwert>?\nA:"
    with pytest.raises(UserError, match="alias"):
        scorer.score_prompts([prompt])
    [one] = scorer.score_prompts([prompt], ["<qwert>"])
    [two] = scorer.score_prompts([prompt, "Q: Where is <ab>?\nA:"], ["<qwert>", "<ab>"])[:1]
    np.testing.assert_allclose(one.stage_probabilities, two.stage_probabilities, atol=1e-6)
    assert len(scorer.score_entities(["<qwert>", "<ab>"])) == 2


def test_edited_manifest_is_refused(bank_copy: Path):
    manifest = json.loads((bank_copy / MANIFEST).read_text())
    manifest["layer"] = 1 - manifest["layer"]
    (bank_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="manifest.json was modified"):
        ProbeBank.load(bank_copy)
