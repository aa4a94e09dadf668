"""The HTTP API around a fake scorer: endpoints, auth, limits, back-pressure, error bodies."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.service.conftest import FULL, wait_ready
from tests.service.fakes import FakeScorer, fake_score


def test_score_returns_one_result_per_prompt(client_for) -> None:
    client = client_for()
    r = client.post("/v1/score", json={"prompts": ["who is zorka", "hi"]}, headers=FULL)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    want = fake_score("who is zorka").model_dump()
    assert {k: results[0][k] for k in want} == want
    assert results[0]["model_id"] == "fake-model" and results[0]["bank_id"] == "fake-bank"
    assert sum(results[1]["stage_probabilities"]) == pytest.approx(1.0)


def test_entities_are_scored_through_templates(client_for) -> None:
    scorer = FakeScorer()
    client = client_for(scorer)
    r = client.post("/v1/entities/score", json={"entities": ["<zorka>", "<quibe>"]}, headers=FULL)
    assert r.status_code == 200, r.text
    per_entity = sum(len(p.split()) for p, _ in scorer.entity_prompts("<zorka>"))
    assert [x["n_tokens"] for x in r.json()["results"]] == [per_entity, per_entity]
    assert sorted(scorer.seen) == sorted(
        p for a in ("<zorka>", "<quibe>") for p, _ in scorer.entity_prompts(a)
    )


def test_bank_health_and_metrics(client_for) -> None:
    client = client_for()
    bank = client.get("/v1/bank", headers=FULL).json()
    assert bank["bank_id"] == "fake-bank" and bank["manifest"]["layer"] == 1
    assert "stage1_vs_stage6" in bank["metrics"]
    assert client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/v1/score", json={"prompts": ["one", "two"]}, headers=FULL)
    text = client.get("/metrics").text
    assert 'recency_audit_requests_total{method="POST",route="/v1/score",status="200"} 1.0' in text
    assert (
        'recency_audit_items_scored_total{bank="fake-bank",model="fake-model",priority="live"} 2.0'
        in text
    )
    for name in (
        "queue_seconds",
        "inference_seconds",
        "batch_size",
        "batch_tokens",
        "request_seconds",
        "recency_score",
    ):
        assert f"recency_audit_{name}_count" in text
    assert "recency_audit_queue_depth" in text and "recency_audit_estimated_stage_total" in text


def test_openapi_schema_is_served(client_for) -> None:
    schema = client_for().get("/schema/openapi.json").json()
    assert {"/v1/score", "/v1/entities/score", "/v1/bank", "/readyz"} <= set(schema["paths"])
    flag = schema["components"]["schemas"]["StageScore"]["properties"]["in_bank_sample"]
    assert "in-sample" in flag["description"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic full-key"}, 401),
        ({"Authorization": "Bearer jobs-key"}, 403),
        ({"Authorization": "Bearer score-key"}, 200),
        (FULL, 200),
    ],
)
def test_auth(client_for, headers: dict[str, str], status: int) -> None:
    client = client_for()
    r = client.post("/v1/score", json={"prompts": ["x"]}, headers=headers)
    assert r.status_code == status
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    if status >= 400:
        assert r.json()["status_code"] == status


def test_health_and_metrics_can_be_closed(client_for) -> None:
    client = client_for(open_health=False, open_metrics=False)
    assert client.get("/healthz").status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer score-key"}).status_code == 403
    assert client.get("/metrics", headers=FULL).status_code == 200
    assert client.get("/readyz", headers={"Authorization": "Bearer jobs-key"}).status_code == 200


def test_without_keys_the_api_is_open(client_for) -> None:
    client = client_for(api_keys="")
    assert client.post("/v1/score", json={"prompts": ["x"]}).status_code == 200


def test_readyz_is_503_until_warm() -> None:
    release = threading.Event()

    def slow_factory(_: Any) -> FakeScorer:
        release.wait(30)
        return FakeScorer()

    from audit_service.app import create_app
    from audit_service.settings import ServiceSettings

    app = create_app(ServiceSettings(warmup=True), scorer_factory=slow_factory)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert client.post("/v1/score", json={"prompts": ["x"]}).status_code == 503
        assert client.get("/healthz").status_code == 200
        release.set()
        wait_ready(client)
        assert client.post("/v1/score", json={"prompts": ["x"]}).status_code == 200


def test_failed_load_shows_on_readyz() -> None:
    def broken(_: Any) -> FakeScorer:
        raise RuntimeError("manifest hash mismatch")

    from audit_service.app import create_app

    with TestClient(create_app(scorer_factory=broken)) as client:
        for _ in range(500):
            r = client.get("/readyz")
            if r.json()["status"] == "failed":
                break
            time.sleep(0.01)
        assert r.status_code == 503 and "hash mismatch" in r.json()["detail"]


BAD_BODIES: list[tuple[str, bytes, int]] = [
    ("not json", b"{prompts: [", 400),
    ("not utf-8", b'{"prompts": ["caf\xe9"]}', 400),
    ("lone surrogate", b'{"prompts": ["\\ud800"]}', 400),
    ("wrong type", b'{"prompts": "just one"}', 400),
    ("wrong item type", b'{"prompts": [1, 2]}', 400),
    ("empty list", b'{"prompts": []}', 400),
    ("empty prompt", b'{"prompts": [""]}', 400),
    ("missing field", b"{}", 400),
    ("unknown field", b'{"prompts": ["x"], "temperature": 1}', 400),
    ("json null", b"null", 400),
    ("json array", b'["x"]', 400),
    ("nested too deeply", b'{"prompts":' + b"[" * 1900 + b"]" * 1900 + b"}", 400),
    ("too many items", b'{"prompts": [' + b",".join([b'"x"'] * 9) + b"]}", 422),
    ("too many tokens", b'{"prompts": ["' + b"w " * 40 + b'"]}', 422),
    ("aliases length", b'{"prompts": ["a", "b"], "aliases": ["a"]}', 422),
    ("alias not in prompt", b'{"prompts": ["who is x"], "aliases": ["zorka"]}', 422),
    ("oversized body", b'{"prompts": ["' + b"x" * 5000 + b'"]}', 413),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_BODIES, ids=[c for c, _, _ in BAD_BODIES])
def test_bad_input_is_a_clear_4xx(client_for, case: str, body: bytes, status: int) -> None:
    client = client_for(max_items=8, max_body_bytes=4000)
    headers = {**FULL, "Content-Type": "application/json"}
    r = client.post("/v1/score", content=body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["status_code"] == status and err["detail"]


def test_bad_entities_are_4xx(client_for) -> None:
    client = client_for(max_items=2)
    for body, status in [
        ({"entities": []}, 400),
        ({"entities": [""]}, 400),
        ({"entities": ["a", "b", "c"]}, 422),
        ({"entities": "a"}, 400),
    ]:
        assert client.post("/v1/entities/score", json=body, headers=FULL).status_code == status


def test_unknown_route_and_method_are_4xx(client_for) -> None:
    client = client_for()
    assert client.get("/v1/nothing", headers=FULL).status_code == 404
    assert client.get("/v1/score", headers=FULL).status_code == 405
    text = client.get("/metrics").text
    assert 'recency_audit_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text


def _until(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_full_queue_is_429_with_retry_after(client_for) -> None:
    gate = threading.Event()
    scorer = FakeScorer(gate=gate)
    client = client_for(scorer, queue_size=2, max_batch_size=1)
    engine = client.app.state.engine

    def call(prompts: list[str]) -> int:
        return client.post("/v1/score", json={"prompts": prompts}, headers=FULL).status_code

    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(call, ["in flight"])
        _until(lambda: scorer.calls == 1)
        queued = pool.submit(call, ["queued 1", "queued 2"])
        _until(lambda: engine.queue_depth() == 2)
        r = client.post("/v1/score", json={"prompts": ["rejected"]}, headers=FULL)
        gate.set()
        assert (in_flight.result(), queued.result()) == (200, 200)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "queue is full" in r.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_not_declared_json_is_415(client_for, content_type: str | None) -> None:
    """A cross-site "simple request" (no CORS preflight) cannot score through a browser."""
    client = client_for()
    headers = {**FULL, **({"Content-Type": content_type} if content_type else {})}
    for path, body in (
        ("/v1/score", b'{"prompts": ["x"]}'),
        ("/v1/entities/score", b'{"entities": ["x"]}'),
    ):
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == 415, (path, content_type, r.text)
        assert "application/json" in r.json()["detail"]
    ok = {**FULL, "Content-Type": "application/json; charset=utf-8"}
    assert client.post("/v1/score", content=b'{"prompts": ["x"]}', headers=ok).status_code == 200


def test_metrics_content_type_names_its_charset_once(client_for) -> None:
    r = client_for().get("/metrics", headers=FULL)
    kind = r.headers["content-type"]
    assert kind.startswith("text/plain; version=") and kind.count("charset=") == 1, kind


def test_a_request_larger_than_the_queue_is_refused_up_front(client_for) -> None:
    """Admitted work is bounded by QUEUE_SIZE even when the queue is empty."""
    scorer = FakeScorer()
    client = client_for(scorer, queue_size=4, max_items=64)
    r = client.post("/v1/score", json={"prompts": [f"p{i}" for i in range(5)]}, headers=FULL)
    assert r.status_code == 422 and "QUEUE_SIZE" in r.json()["detail"]
    assert scorer.calls == 0
    r = client.post("/v1/entities/score", json={"entities": ["a", "b", "c"]}, headers=FULL)
    assert r.status_code == 422  # 3 entities x 2 templates = 6 prompts > 4
    assert client.post("/v1/score", json={"prompts": ["a"] * 4}, headers=FULL).status_code == 200


def test_past_deadline_is_504(client_for) -> None:
    client = client_for(FakeScorer(delay=0.5), request_timeout_s=0.1)
    r = client.post("/v1/score", json={"prompts": ["slow"]}, headers=FULL)
    assert r.status_code == 504
    assert "deadline" in r.json()["detail"]


def test_every_guard_is_async_so_no_request_hops_to_a_thread_to_be_authorized() -> None:
    """Litestar runs a sync guard in a worker thread: one hop per guard per request."""
    import inspect

    from tests.service.conftest import fake_app

    app = fake_app()
    guards = {
        guard
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for layer in handler.ownership_layers
        for guard in (layer.guards or [])
    }
    assert len(guards) >= 3  # the scope guards, the JSON-body guard, the metrics guard
    assert all(inspect.iscoroutinefunction(g) for g in guards), [
        g.__name__ for g in guards if not inspect.iscoroutinefunction(g)
    ]
