"""The OpenAPI document says what the server does (issue 13.14): auth answers on every guarded
operation, open routes marked open, /metrics as text, request bodies closed."""

from __future__ import annotations

from tests.service.conftest import FULL


def _schema(client_for) -> dict:
    return client_for().get("/schema/openapi.json").json()


def test_guarded_operations_document_401_and_403(client_for) -> None:
    paths = _schema(client_for)["paths"]
    guarded = [
        (p, m, op) for p, ops in paths.items() for m, op in ops.items() if p.startswith("/v1/")
    ]
    assert len([1 for p, _, _ in guarded if p.startswith("/v1/jobs")]) == 6
    for path, method, op in guarded:
        assert {"401", "403"} <= set(op["responses"]), (method, path)
        assert "security" not in op  # the global bearer requirement applies
    submit = paths["/v1/jobs"]["post"]["responses"]
    assert {"400", "413", "415", "422", "503"} <= set(submit)


def test_open_routes_are_marked_open_and_metrics_is_text(client_for) -> None:
    schema = _schema(client_for)
    assert schema["security"] == [{"bearer": []}]
    for path in ("/healthz", "/readyz", "/metrics", "/dashboard/data"):
        assert schema["paths"][path]["get"]["security"] == [{}], path
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) and all(t.startswith("text/plain") for t in metrics)
    client = client_for()
    served = client.get("/metrics", headers=FULL).headers["content-type"]
    assert served.split(";")[0] == "text/plain" and served.count("charset") == 1


def test_request_bodies_refuse_unknown_keys_in_the_schema_too(client_for) -> None:
    components = _schema(client_for)["components"]["schemas"]
    for name in ("ScoreRequest", "EntityScoreRequest"):
        assert components[name]["additionalProperties"] is False, name
    r = client_for().post("/v1/score", json={"prompts": ["x"], "extra": 1}, headers=FULL)
    assert r.status_code == 400


def test_the_schema_states_this_servers_item_limit_and_the_alias_rule(client_for) -> None:
    """What the server refuses for a schema-valid body is a rule the schema cannot state: the
    live MAX_ITEMS and the non-blank alias are stated."""
    client = client_for(max_items=3)
    components = client.get("/schema/openapi.json").json()["components"]["schemas"]
    entities = components["EntityScoreRequest"]["properties"]["entities"]
    assert entities["maxItems"] == 3 and entities["items"]["pattern"] == r"\S"
    prompts = components["ScoreRequest"]["properties"]["prompts"]
    aliases = components["ScoreRequest"]["properties"]["aliases"]["oneOf"][0]
    assert prompts["maxItems"] == 3 and aliases["maxItems"] == 3
    assert aliases["items"]["oneOf"][0]["pattern"] == r"\S"
    blank = client.post("/v1/entities/score", json={"entities": ["\u000b "]}, headers=FULL)
    assert blank.status_code == 400  # refused by the schema's rule, before any model work
    four = client.post("/v1/entities/score", json={"entities": list("abcd")}, headers=FULL)
    assert four.status_code == 422 and "the limit is 3" in four.json()["detail"]
