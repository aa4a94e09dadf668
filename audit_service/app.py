"""`create_app`: the litestar application of the audit service.

The lifespan starts the scoring engine, which loads the bank and model on its worker thread and
warms up in the background: the server accepts connections at once, `/readyz` answers 503 until
the engine is warm, and live scoring answers 503 meanwhile. Batch jobs are started and stopped in
the same lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from pydantic import BaseModel

from audit_service.auth import ApiKeyMiddleware
from audit_service.controllers import OpsController, ScoringController
from audit_service.dashboard import DashboardController
from audit_service.engine import Scorer, ScorerFactory, ScoringEngine
from audit_service.errors import EXCEPTION_HANDLERS
from audit_service.jobs import JobManager, JobsController
from audit_service.settings import ServiceSettings
from audit_service.telemetry import Telemetry

log = logging.getLogger(__name__)

OPENAPI_PATH = "/schema"


def default_scorer_factory(settings: ServiceSettings) -> Scorer:
    """Load BANK_DIR (verified) and its model; the naive benchmark baseline when configured."""
    from probe_bank.scoring import BankScorer

    scorer = BankScorer.from_bank_dir(
        settings.resolved_bank_dir,
        model_dir=settings.model_dir,
        expected_bank_id=settings.expected_bank_id,
        home=settings.home,
    )
    if settings.naive_baseline:
        from audit_service.baseline import NaiveScorer

        return NaiveScorer(scorer)
    return scorer


class RequestMetricsMiddleware:
    """Counts requests to known routes by route template and status (401s included), and times
    them; requests that match no route are counted by `count_unmatched`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = cast("HTTPScope", scope)["method"]
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            metrics: Telemetry = scope["litestar_app"].state.metrics
            route = scope.get("path_template") or "unmatched"
            metrics.observe_request(method, route, status, time.perf_counter() - start)


async def count_unmatched(message: Message, scope: Scope) -> None:
    """`before_send` hook: 404/405 answers never reach route middleware; count them here."""
    if message["type"] == "http.response.start" and not scope.get("path_template"):
        metrics: Telemetry = scope["litestar_app"].state.metrics
        method = cast("HTTPScope", scope)["method"]
        metrics.requests.labels(method, "unmatched", str(message["status"])).inc()


def _open_paths(settings: ServiceSettings) -> list[str]:
    """Paths served without a key: the OpenAPI docs, and health/metrics when configured open."""
    paths = [f"^{OPENAPI_PATH}"]
    if settings.open_health:
        paths += ["^/healthz$", "^/readyz$"]
    if settings.open_metrics:  # the dashboard page shows the metrics; a browser sends no bearer
        paths += ["^/metrics$", "^/dashboard"]
    return paths


def _engine(state: State) -> ScoringEngine:
    engine: ScoringEngine = state.engine
    return engine


def _telemetry(state: State) -> Telemetry:
    telemetry: Telemetry = state.metrics
    return telemetry


def _settings(state: State) -> ServiceSettings:
    settings: ServiceSettings = state.settings
    return settings


def _job_manager(state: State) -> JobManager:
    manager: JobManager = state.job_manager
    return manager


def create_app(
    settings: ServiceSettings | None = None, *, scorer_factory: ScorerFactory | None = None
) -> Litestar:
    """Build the app; `scorer_factory(settings)` (run on the worker thread) replaces the bank
    loader in tests and the benchmark."""
    settings = settings if settings is not None else ServiceSettings()
    metrics = Telemetry()
    factory = scorer_factory if scorer_factory is not None else default_scorer_factory

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # uvloop | asyncio
        metrics.server_info.labels(loop).set(1)
        engine = ScoringEngine(settings, metrics, factory)
        app.state.engine = engine
        await engine.start()
        manager: JobManager = app.state.job_manager
        try:
            await manager.start(engine, settings, metrics)
            yield
        finally:
            await manager.stop()
            await engine.stop()

    # the jobs controller is guarded by the `jobs` scope itself
    handlers: list[Any] = [ScoringController, OpsController, JobsController, DashboardController]

    middleware: list[Any] = [RequestMetricsMiddleware]
    if settings.auth_enabled:
        middleware.append(
            DefineMiddleware(
                ApiKeyMiddleware, keys=settings.api_keys, exclude=_open_paths(settings)
            )
        )
    else:
        log.warning("RECENCY_AUDIT_API_KEYS is empty: the API is open to anyone who can reach it")

    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        dependencies={
            "engine": Provide(_engine, sync_to_thread=False),
            "metrics": Provide(_telemetry, sync_to_thread=False),
            "settings": Provide(_settings, sync_to_thread=False),
            "job_manager": Provide(_job_manager, sync_to_thread=False),
        },
        state=State(
            {
                "settings": settings,
                "metrics": metrics,
                "engine": None,
                "auth_enabled": settings.auth_enabled,
                "job_manager": JobManager(settings.jobs),
            }
        ),
        middleware=middleware,
        before_send=[count_unmatched],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="recency-audit",
            version="0.1.0",
            description="Estimate whether and how recently a language model was finetuned on an "
            "entity, from linear probes on its activations.",
            path=OPENAPI_PATH,
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}] if settings.auth_enabled else None,
        ),
        debug=False,
    )
    _closed_bodies(app, settings.max_items)
    return app


def _closed_bodies(app: Litestar, max_items: int) -> None:
    """Request bodies refuse unknown keys (pydantic `extra="forbid"`), hold at most this
    server's MAX_ITEMS inputs, and aliases need a non-space character; say so in the OpenAPI
    document (litestar's pydantic plugin leaves bodies open, drops the item pattern, and the
    models carry only the schema-wide item bound)."""
    from audit_service.schemas import (
        ALIAS_PATTERN,
        EntityScoreRequest,
        ScoreRequest,
        TextScoreRequest,
    )

    schemas = (app.openapi_schema.components.schemas or {}) if app.openapi_schema.components else {}
    lists: list[tuple[type[BaseModel], tuple[str, ...]]] = [
        (ScoreRequest, ("prompts", "aliases")),
        (EntityScoreRequest, ("entities",)),
        (TextScoreRequest, ("texts", "answers")),
    ]
    for model, names in lists:
        schema = schemas.get(model.__name__)
        if schema is None:
            continue
        if model.model_config.get("extra") == "forbid":
            schema.additional_properties = False
        for name in names:
            for array in _typed((schema.properties or {}).get(name), OpenAPIType.ARRAY):
                array.max_items = max_items
                if name in ("aliases", "entities"):
                    for item in _typed(array.items, OpenAPIType.STRING):
                        item.pattern = ALIAS_PATTERN


def _typed(schema: object, kind: OpenAPIType) -> list[Schema]:
    """The schemas of type `kind` in a schema: itself, or the arms of a nullable oneOf."""
    if not isinstance(schema, Schema):
        return []
    if schema.type == kind:
        return [schema]
    return [x for arm in schema.one_of or [] for x in _typed(arm, kind)]
