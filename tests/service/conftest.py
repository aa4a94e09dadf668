"""Service test helpers: apps around a fake scorer, with or without keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from audit_service.app import create_app
from audit_service.settings import ServiceSettings
from tests.service.fakes import FakeScorer

KEYS = "full-key,score-key:score,jobs-key:jobs"
FULL = {"Authorization": "Bearer full-key"}


def fake_app(scorer: FakeScorer | None = None, **settings: Any) -> Litestar:
    """An app serving `scorer` (a fresh FakeScorer by default) with `settings` overrides."""
    scorer = scorer if scorer is not None else FakeScorer()
    base: dict[str, Any] = {"api_keys": KEYS, "max_wait_ms": 1.0, "warmup": False}
    return create_app(ServiceSettings(**{**base, **settings}), scorer_factory=lambda _: scorer)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    """Poll /readyz (the engine loads in the background)."""
    import time

    end = time.monotonic() + timeout
    while client.get("/readyz", headers=FULL).status_code != 200:
        assert time.monotonic() < end, "service never became ready"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job state and data of every test app go under a temporary HOME, never ./artifacts."""
    monkeypatch.setenv("RECENCY_AUDIT_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """Factory: a started TestClient (ready) around `fake_app(**kw)`; all closed at teardown."""
    clients: list[TestClient] = []

    def make(scorer: FakeScorer | None = None, **kw: Any) -> TestClient:
        client = TestClient(fake_app(scorer, **kw), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
