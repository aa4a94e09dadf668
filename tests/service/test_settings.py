"""Settings: env prefix and the API key format."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from audit_service.auth import match_key
from audit_service.settings import SCOPES, ServiceSettings, parse_api_keys


def test_keys_with_and_without_scopes() -> None:
    keys = parse_api_keys(" alice , bob:score+jobs, ops:admin,,")
    assert keys == {"alice": SCOPES, "bob": frozenset({"score", "jobs"}), "ops": SCOPES}


def test_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown API key scope"):
        parse_api_keys("k:score+root")


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("RECENCY_AUDIT_API_KEYS", "k1,k2:jobs")
    monkeypatch.setenv("RECENCY_AUDIT_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("RECENCY_AUDIT_HOME", str(tmp_path))
    s = ServiceSettings()
    assert s.api_keys["k2"] == frozenset({"jobs"}) and s.auth_enabled
    assert s.max_batch_size == 7
    assert s.resolved_bank_dir == tmp_path / "banks" / "default"
    assert "k1" not in repr(s)  # keys never leak into logs


def test_bad_numbers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECENCY_AUDIT_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError):
        ServiceSettings()


def test_match_key_returns_scopes_only_for_exact_key() -> None:
    keys = parse_api_keys("secret-one:score,secret-two")
    assert match_key("secret-one", keys) == frozenset({"score"})
    assert match_key("secret-two", keys) == SCOPES
    assert match_key("secret-on", keys) is None
    assert match_key("", keys) is None
