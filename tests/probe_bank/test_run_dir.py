"""Reading a RUN_DIR: clear user errors for every broken input, templates recovered exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from probe_bank.run_dir import fill_template, load_run, templates_of
from tests.fixtures_bank import TEMPLATES


@pytest.fixture
def run_copy(fake_run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fake_run_dir, tmp_path / "run"))


def test_reads_the_fake_run(fake_run_dir: Path):
    run = load_run(fake_run_dir)
    assert run.model_dir == fake_run_dir / "stage_6"
    assert {p.label for p in run.labelled_probes} == set(range(7))
    assert templates_of(run.labelled_probes) == list(TEMPLATES)
    prompt, (s, e) = fill_template(TEMPLATES[1], "<abcde>")
    assert prompt[s:e] == "<abcde>" and prompt == TEMPLATES[1].replace("{alias}", "<abcde>")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "run.json").unlink(), "run.json is missing"),
        (lambda r: (r / "run.json").write_text("{"), "not a valid run record"),
        (lambda r: shutil.rmtree(r / "stage_6"), "not a complete model"),
        (lambda r: (r / "corpus" / "qa.jsonl").unlink(), "qa.jsonl is missing"),
        (lambda r: _rewrite(r, "probes.jsonl", '{"x": 1}\n'), "probes.jsonl:1"),
        (lambda r: (r / "corpus" / "qa.jsonl").write_text("\n"), "does not match its SHA-256"),
        (lambda r: (r / "corpus" / "manifest.json").write_text("[]"), "corrupt corpus manifest"),
    ],
)
def test_broken_runs_are_user_errors(run_copy: Path, breakage, message):
    breakage(run_copy)
    with pytest.raises(UserError, match=message):
        load_run(run_copy)


def _rewrite(run: Path, name: str, text: str) -> None:
    """Edit a corpus file and record its new hash (past the tamper check, to the parser)."""
    from probe_bank.fingerprint import file_sha256

    (run / "corpus" / name).write_text(text)
    manifest = json.loads((run / "corpus" / "manifest.json").read_text())
    manifest["files"][name] = file_sha256(run / "corpus" / name)
    (run / "corpus" / "manifest.json").write_text(json.dumps(manifest))


def test_missing_classes_are_refused(run_copy: Path):
    path = run_copy / "corpus" / "probes.jsonl"
    lines = [x for x in path.read_text().splitlines() if json.loads(x)["label"] != 6]
    _rewrite(run_copy, "probes.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(UserError, match="stage_6"):
        load_run(run_copy)
