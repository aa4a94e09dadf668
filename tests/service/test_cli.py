"""`recency-audit serve` refuses bad input with one clear line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from audit_service.cli import register
from probe_bank.errors import UserError


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # keep `serve` a sub-command
        pass

    return app


def test_serve_without_a_bank_says_how_to_build_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["serve", "--bank", str(tmp_path / "missing")])
    assert isinstance(result.exception, UserError)
    assert "recency-audit bank build" in str(result.exception)


def test_serve_with_bad_settings_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECENCY_AUDIT_MAX_BATCH_SIZE", "lots")
    result = CliRunner().invoke(_app(), ["serve"])
    assert isinstance(result.exception, UserError)
    assert "max_batch_size" in str(result.exception)
