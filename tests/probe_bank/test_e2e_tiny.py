"""End to end: the trainer's real `tiny` run -> bank build -> verified load -> scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from probe_bank.bank import ProbeBank
from probe_bank.build import BuildConfig, build_bank, choose_scanned_cell
from probe_bank.records import EntityRecord, read_jsonl
from probe_bank.schemas import ScanRow
from probe_bank.scoring import BankScorer


@pytest.mark.slow
def test_bank_from_tiny_run(tiny_run: Path, tmp_path: Path):
    import torch

    torch.set_num_threads(1)
    bank_dir = build_bank(tiny_run, tmp_path / "bank", BuildConfig(n_boot=50))
    bank = ProbeBank.load(bank_dir)
    metrics = json.loads((bank_dir / "metrics.json").read_text())
    assert metrics["n_entities_per_class"] == [
        sum(1 for e in read_jsonl(tiny_run / "corpus/entities.jsonl", EntityRecord) if e.split == s)
        for s in ["control", *(f"stage_{k}" for k in range(1, 7))]
    ]
    assert (metrics["layer"], metrics["position"]) == (bank.manifest.layer, bank.manifest.position)
    # the served cell is the scan's one-standard-error choice, and the scan says why
    scan = [ScanRow.model_validate(r) for r in json.loads((bank_dir / "scan.json").read_text())]
    for r in scan:
        lo, hi = r.selection_ci95 or (None, None)
        assert lo is not None and hi is not None and r.selection_score is not None
        assert lo <= r.selection_score <= hi
    assert (bank.manifest.layer, bank.manifest.position) == choose_scanned_cell(scan, "one_se")
    assert "one_se" in metrics["selection"]
    assert "one_se" in metrics["selection_adjusted"]["criterion"]
    assert json.loads((bank_dir / "retention.json").read_text()) == json.loads(
        (tiny_run / "retention.json").read_text()
    )
    # the tiny run memorises its last stage and forgets earlier ones (see retention.json), so the
    # the answer-loss baseline must tell stage 1 from stage 6: the baselines see real data
    assert metrics["baselines"]["answer_loss"]["stage1_vs_stage6"]["value"] >= 0.75
    entities = read_jsonl(tiny_run / "corpus/entities.jsonl", EntityRecord)
    aliases = [e.alias for e in entities if e.split in ("stage_6", "control")][:4]
    scorer = BankScorer.from_bank_dir(bank_dir, device="cpu")
    scores = scorer.score_entities(aliases)
    assert len(scores) == 4
    for s in scores:
        assert np.isclose(sum(s.stage_probabilities), 1) and 0 <= s.estimated_stage <= 6


@pytest.mark.slow
def test_pretrained_build_config_fixes_the_cell_in_advance(tiny_run: Path, tmp_path: Path):
    """`--config pretrained`: every second block and the last 8 positions swept, but the headline
    cell is int(0.75 * blocks) at the last token whatever the scan says; a bank read at a
    `last-k` position is served through the same capture path."""
    import torch

    from probe_bank.build import build_config

    torch.set_num_threads(1)
    cfg = build_config("pretrained", n_boot=20, n_permutations=0, baselines=False)
    bank_dir = build_bank(tiny_run, tmp_path / "bank", cfg)
    metrics = json.loads((bank_dir / "metrics.json").read_text())
    sweep = json.loads((bank_dir / "scan.json").read_text())
    n_blocks = 2  # the tiny preset
    assert (metrics["layer"], metrics["position"]) == (int(0.75 * n_blocks), "last")
    assert "pre-registered" in metrics["selection"]
    assert {r["position"] for r in sweep} == set(cfg.positions)
    assert {r["layer"] for r in sweep} == {0, 1}  # stride 2 from block 0, plus the fixed block
    assert all(set(r) >= {"stage1_vs_stage6", "early_vs_late"} for r in sweep)
    from probe_bank.report import write_report  # a bank without nested selection or nulls

    assert write_report(bank_dir, tmp_path / "report").is_file()

    off = build_bank(
        tiny_run,
        tmp_path / "bank-last3",
        build_config(
            "pretrained", cell_position="last-3", n_boot=20, n_permutations=0, baselines=False
        ),
    )
    scorer = BankScorer.from_bank_dir(off, device="cpu")
    assert scorer.bank.manifest.position == "last-3"
    alias = read_jsonl(tiny_run / "corpus/entities.jsonl", EntityRecord)[0].alias
    (score,) = scorer.score_entities([alias])
    assert np.isclose(sum(score.stage_probabilities), 1)
