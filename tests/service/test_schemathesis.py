"""Property-based fuzzing of the app's own OpenAPI schema: no input may produce a 500.

Every operation of the schema is driven through schemathesis' hypothesis strategies (valid and
invalid cases). The lazy `schemathesis.pytest.from_fixture` loader is not used: it reads
`request.node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from audit_service.app import create_app
from audit_service.settings import ServiceSettings
from tests.service.conftest import FULL, KEYS


@pytest.fixture(scope="module")
def api_schema(
    tiny_bank: Path, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    home = tmp_path_factory.mktemp("home")
    app = create_app(ServiceSettings(bank_dir=tiny_bank, api_keys=KEYS, max_items=16, home=home))
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    end = time.monotonic() + 120  # schemathesis keeps the app's lifespan running; wait until warm
    while (engine := app.state.engine) is None or not engine.ready:
        assert engine is None or engine.load_error is None, engine.load_error
        assert time.monotonic() < end, "the app never became ready"
        time.sleep(0.05)
    return schema


def test_no_server_errors(api_schema: schemathesis.BaseSchema) -> None:
    from schemathesis.checks import not_a_server_error

    operations = [op.ok() for op in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/score", "/v1/entities/score", "/v1/bank"}
    statuses: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers=FULL, checks=[not_a_server_error])
            statuses.add(response.status_code)

        fuzz()
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)
