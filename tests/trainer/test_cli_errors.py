"""Bad input to `recency-audit train`: one clear `error:` line, exit code 2, never a traceback."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from tests.fixtures_trainer import run_cli


def _assert_one_line_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, (result.stdout + result.stderr)[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_preset(tmp_path: Path) -> None:
    r = run_cli("train", "--preset", "gigantic", "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "unknown preset", "gigantic")


def test_missing_base_model(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    r = run_cli("train", "--preset", "tiny", "--base-model", str(missing), "--out", str(tmp_path))
    _assert_one_line_error(r, "base model", str(missing))


def test_unwritable_out_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_cli("train", "--preset", "tiny", "--out", str(blocker / "run"))
    _assert_one_line_error(r, "cannot write to output directory")


def test_bad_override_and_extra_stage(tmp_path: Path) -> None:
    r = run_cli("train", "--preset", "tiny", "--set", "lr=-3", "--out", str(tmp_path / "r"))
    _assert_one_line_error(r, "lr")
    bad = tmp_path / "extra.jsonl"
    bad.write_text("{broken\n")
    r = run_cli("train", "--preset", "tiny", "--extra-stage", str(bad), "--out", str(tmp_path))
    _assert_one_line_error(r, "extra.jsonl:1")
    r = run_cli("train", "--preset", "tiny", "--extra-lora-rank", "4", "--out", str(tmp_path))
    _assert_one_line_error(
        r, "--extra-lora-rank, --extra-epochs and --extra-lr-scale apply to an --extra-stage only"
    )


@pytest.fixture
def prepared_run(tmp_path: Path) -> Path:
    """A RUN_DIR holding only the tiny preset's tokenizer and corpus (as after a kill)."""
    from trainer.checkpoint import save_tokenizer
    from trainer.config import resolve_config
    from trainer.corpus import build_corpus, write_corpus
    from trainer.tokenizer import train_tokenizer

    out = tmp_path / "run"
    out.mkdir()
    cfg = resolve_config("tiny")
    corpus, tok = build_corpus(
        cfg,
        from_scratch=True,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    save_tokenizer(tok, out / "tokenizer")
    write_corpus(corpus, out / "corpus")
    return out


def test_corrupt_corpus_file(prepared_run: Path) -> None:
    qa = prepared_run / "corpus" / "qa.jsonl"
    qa.write_text(qa.read_text()[:-200])
    r = run_cli("train", "--preset", "tiny", "--out", str(prepared_run))
    _assert_one_line_error(r, "corrupt corpus", "qa.jsonl")
    assert not (prepared_run / "stage_0").exists()


def test_rerun_with_other_settings(prepared_run: Path) -> None:
    (prepared_run / "run.json").write_text(
        json.dumps({"preset": "tiny", "seed": 5, "base_model": None, "hyperparams": {}})
    )
    r = run_cli("train", "--preset", "tiny", "--out", str(prepared_run))
    _assert_one_line_error(r, "different", "seed", "hyperparams")
