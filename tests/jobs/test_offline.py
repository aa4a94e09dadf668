"""Offline audit: one process and two accelerate processes write the same bytes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from audit_service.jobs.datasets import DatasetError
from audit_service.offline import register, run_offline_audit, shard_bounds
from probe_bank.errors import UserError
from tests.jobs.data import write_dataset
from tests.launch import accelerate_launch

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_bounds_cover_everything_on_batch_boundaries() -> None:
    for total in (0, 1, 7, 8, 9, 70, 71):
        for n in (1, 2, 3, 5):
            bounds = [shard_bounds(total, n, r, 8) for r in range(n)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert all(lo % 8 == 0 or lo == total for lo, _ in bounds)


@pytest.mark.slow
def test_two_accelerate_processes_give_the_single_process_bytes(tiny_bank, tmp_path) -> None:
    dataset = write_dataset(tiny_bank, tmp_path / "ds.jsonl", 37)
    common = ["--bank", str(tiny_bank), "--batch-size", "4", "--no-progress"]

    def run(argv: list[str], out: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, str(dataset), "--out", str(tmp_path / out), *common],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )

    # the `recency-audit audit` command itself, then the same audit under accelerate launch
    one = run([sys.executable, str(ROOT / "recency_audit.py"), "audit"], "1.jsonl")
    assert one.returncode == 0, one.stderr[-2000:]
    assert "on 1 process(es)" in one.stdout
    two = run([*accelerate_launch(2, port=_free_port()), "-m", "audit_service.offline"], "2.jsonl")
    # the ranks' own output comes first; the launcher's summary of who failed, last
    assert two.returncode == 0, two.stderr[:4000] + "\n...\n" + two.stderr[-1500:]
    assert "on 2 process(es)" in two.stdout
    single = (tmp_path / "1.jsonl").read_bytes()
    assert (tmp_path / "2.jsonl").read_bytes() == single
    records = [json.loads(x) for x in single.decode().splitlines()]
    assert [r["index"] for r in records] == list(range(37))
    assert records[1]["id"] == "e1" and records[1]["kind"] == "entity"
    assert all(len(r["stage_probabilities"]) == 7 for r in records)
    # the dataset is the bank's own corpus (every input has an alias): each score is in-sample
    assert all(r["in_bank_sample"] is True for r in records)
    assert "37 input(s) are entities the bank was fitted on" in one.stdout
    assert not list(tmp_path.glob("*.part"))


def test_bad_dataset_or_bank_fails_before_loading_anything(tiny_bank, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"oops": 1}\n')
    with pytest.raises(DatasetError, match="line 2"):
        run_offline_audit(tiny_bank, bad, tmp_path / "o.jsonl")
    good = write_dataset(tiny_bank, tmp_path / "good.jsonl", 2)
    with pytest.raises(UserError, match="not a bank directory"):
        run_offline_audit(tmp_path, good, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_text_lines_are_audited_with_their_membership_statistics(tiny_bank, tmp_path) -> None:
    """A dataset mixing texts with entities: text lines carry the audited model's statistics
    (no reference pass on the reference itself), the summary counts them apart."""
    from probe_bank.scoring import BankScorer

    data = tmp_path / "texts.jsonl"
    lines = [
        {"text": "Q: Who is <zorka>?\nA: a painter\n", "answer": "a painter", "id": "t1"},
        {"entity": "<quibe>"},
        {"text": "A document about nothing."},
        {"text": "Q: x\nA: y\n", "answer": "y"},
    ]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = run_offline_audit(tiny_bank, data, tmp_path / "o.jsonl", show_progress=False)
    assert report is not None
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in out] == ["text", "entity", "text", "text"]
    scorer = BankScorer.from_bank_dir(tiny_bank, device="cpu")
    want = scorer.score_texts(scorer.prepare_texts([lines[0]["text"]], [lines[0]["answer"]]))[0]
    first = out[0]
    assert first["id"] == "t1" and first["scored"] == "answer" and first["reference"] is None
    assert first["audited"]["loss"] == pytest.approx(want.audited.loss, abs=1e-6)
    assert first["touched"] is None and first["relation"] == "reference"
    assert sum(report.stage_histogram.values()) == 1 and report.texts == 3


def test_register_adds_the_audit_command(tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command, so `audit` is addressed by name as in recency-audit
        """Nothing."""

    command = typer.main.get_command(app).commands["audit"]  # type: ignore[attr-defined]
    options = {opt for p in command.params for opt in p.opts}
    assert {"dataset", "--bank", "--out", "--batch-size", "--model-dir"} <= options
    bad = tmp_path / "empty.jsonl"
    bad.write_text("\n")
    result = CliRunner().invoke(
        app, ["audit", str(bad), "--bank", str(tmp_path), "--out", str(tmp_path / "o.jsonl")]
    )
    assert isinstance(result.exception, DatasetError) and "empty" in str(result.exception)


def test_the_audit_command_prints_the_probes_verdict_first(tiny_bank, tmp_path) -> None:
    """A person reading `recency-audit audit` sees what the probes are worth before any count:
    the verdict and note every served score carries (the report keeps the same object)."""
    import typer
    from typer.testing import CliRunner

    from probe_bank.bank import ProbeBank
    from probe_bank.evidence import bank_evidence

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:
        """Nothing."""

    data = write_dataset(tiny_bank, tmp_path / "ds.jsonl", 3)
    out = tmp_path / "o.jsonl"
    args = ["audit", str(data), "--bank", str(tiny_bank), "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    want = bank_evidence(ProbeBank.load(tiny_bank).metrics)
    lines = result.stdout.splitlines()  # stderr carries the weights' progress bar
    assert lines[0].startswith("audited 3 inputs") and out.is_file()
    assert lines[1] == f"probes ({want.verdict}): {want.note}"
