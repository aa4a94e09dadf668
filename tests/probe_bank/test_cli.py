"""The `bank build` and `report` commands, through typer."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from probe_bank.bank import ProbeBank
from probe_bank.cli import register
from probe_bank.errors import UserError
from probe_bank.evidence import bank_evidence
from probe_bank.schemas import BankMetrics


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_bank_build_command(app, fake_run_dir: Path, tmp_path: Path):
    out = tmp_path / "bank"
    args = ["bank", "build", "--run", str(fake_run_dir), "--out", str(out), "--layers", "1"]
    result = CliRunner().invoke(
        app, [*args, "--n-boot", "20", "--no-baselines", "--seed", "3", "--n-permutations", "3"]
    )
    assert result.exit_code == 0, result.output
    bank = ProbeBank.load(out)
    assert bank.manifest.layer == 1 and bank.manifest.seed == 3
    sweep = json.loads((out / "scan.json").read_text())
    assert {r["position"] for r in sweep} == {"last", "alias_mean"}
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, UserError)  # refuses to overwrite a bank


@pytest.mark.parametrize(
    "extra",
    [["--layers", "a,b"], ["--layers", "9"], ["--positions", "middle"], ["--cell-rule", "max"]],
)
def test_bank_build_bad_input(app, fake_run_dir: Path, tmp_path: Path, extra):
    args = ["bank", "build", "--run", str(fake_run_dir), "--out", str(tmp_path / "b"), *extra]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UserError), result.output


def test_missing_run_is_a_user_error(app, tmp_path: Path):
    result = CliRunner().invoke(
        app, ["bank", "build", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]
    )
    assert isinstance(result.exception, UserError)


def test_report_command(app, tiny_bank: Path, fake_run_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    args = ["report", "--bank", str(tiny_bank), "--out", str(out), "--extra-run", str(fake_run_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    for png in ("centroids.png", "pairwise_grid.png", "layer_scan.png", "baselines.png"):
        assert (out / png).stat().st_size > 1000
    assert page.count("data:image/png;base64,") == 4
    metrics = json.loads((tiny_bank / "metrics.json").read_text())
    assert f"{metrics['stage1_vs_stage6']['value']:.3f}" in page
    assert 'src="http' not in page  # self-contained
    served = bank_evidence(BankMetrics.model_validate(metrics))  # what every score carries
    assert f"Verdict: {served.verdict}.</b>\n{html.escape(served.note)}." in page
