"""HTTP controllers: live scoring, the served bank, health and metrics."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from audit_service.auth import requires_scope
from audit_service.engine import NotReady, ScoringEngine
from audit_service.errors import TooManyItems
from audit_service.schemas import (
    BankInfo,
    EntityScoreRequest,
    ErrorBody,
    Health,
    ScoreRequest,
    ScoreResponse,
    TextScoreRequest,
    TextScoreResponse,
)
from audit_service.settings import ServiceSettings
from audit_service.telemetry import Telemetry
from probe_bank.schemas import StageScore

#: Security of the routes open without a key by default (OPEN_HEALTH, OPEN_METRICS): the empty
#: requirement overrides the global bearer one in the OpenAPI document.
OPEN: list[dict[str, list[str]]] = [{}]


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the refusals a handler can answer (all share ErrorBody)."""
    what = {
        400: "malformed body or schema violation",
        401: "missing or invalid API key",
        403: "the key lacks the needed scope",
        413: "body over MAX_BODY_BYTES",
        415: "the body is not JSON (Content-Type must be application/json)",
        422: "over MAX_ITEMS or the token limit, or an alias not in its prompt",
        429: "queue full; see Retry-After",
        503: "model and bank still loading",
        504: "deadline passed before scoring",
    }
    return {c: ResponseSpec(ErrorBody, description=what[c]) for c in codes}


TEXT_NOTE = (
    "membership statistics of the audited model (and, on a descendant, against the bank's "
    "reference: loss_drop, in units of never-trained anchor texts as loss_drop_anchor_z); they "
    "say whether a text was learned or touched by a later finetune, not when"
)
SCORING_ERRORS = _errors(400, 401, 403, 413, 415, 422, 429, 503, 504)


async def json_body_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """415 unless the body is declared JSON: a cross-site form or `text/plain` POST is a
    "simple request" that browsers send without a CORS preflight, so refusing it keeps a page
    on another origin from scoring through a user's browser while auth is off."""
    media = connection.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type must be application/json, got {media or 'none'!r}",
        )


def _check_items(n: int, settings: ServiceSettings, what: str) -> None:
    if n > settings.max_items:
        raise TooManyItems(f"{n} {what} in one request; the limit is {settings.max_items}")


def _response(results: list[StageScore], engine: ScoringEngine) -> ScoreResponse:
    return ScoreResponse(results=results, evidence=engine.evidence)


class ScoringController(Controller):
    """Live scoring of prompts and entities through the shared batching engine."""

    path = "/v1"
    tags = ["scoring"]
    guards = [requires_scope("score")]

    @post(
        "/score",
        status_code=HTTP_200_OK,
        summary="Estimate the training stage of prompts",
        responses=SCORING_ERRORS,
        guards=[json_body_only],
    )
    async def score(
        self, data: ScoreRequest, engine: ScoringEngine, settings: ServiceSettings
    ) -> ScoreResponse:
        _check_items(len(data.prompts), settings, "prompts")
        results = await engine.score_prompts(data.prompts, data.aliases, priority="live")
        return _response(results, engine)

    @post(
        "/entities/score",
        status_code=HTTP_200_OK,
        summary="Estimate the training stage of entities via the bank's probe templates",
        responses=SCORING_ERRORS,
        guards=[json_body_only],
    )
    async def score_entities(
        self, data: EntityScoreRequest, engine: ScoringEngine, settings: ServiceSettings
    ) -> ScoreResponse:
        _check_items(len(data.entities), settings, "entities")
        results = await engine.score_entities(data.entities, priority="live")
        return _response(results, engine)

    @post(
        "/texts/score",
        status_code=HTTP_200_OK,
        summary="Membership evidence for texts: loss, Min-K%, Min-K%++, zlib; on a descendant "
        "the loss drop against the bank's reference",
        responses=_errors(400, 401, 403, 413, 415, 422, 503, 504),
        guards=[json_body_only],
    )
    async def score_texts(
        self, data: TextScoreRequest, engine: ScoringEngine, settings: ServiceSettings
    ) -> TextScoreResponse:
        _check_items(len(data.texts), settings, "texts")
        results = await engine.score_texts(data.texts, data.answers, priority="live")
        metrics = engine.scorer.bank.metrics if engine.scorer is not None else None
        measured = (metrics.model_extra or {}).get("texts") if metrics is not None else None
        return TextScoreResponse(results=results, evidence=measured, note=TEXT_NOTE)

    @get(
        "/bank",
        summary="The served bank's manifest and headline metrics",
        responses=_errors(401, 403, 503),
    )
    async def bank(self, engine: ScoringEngine) -> BankInfo:
        scorer = engine.scorer
        if scorer is None or not engine.ready:
            raise NotReady("the model and bank are still loading; retry shortly")
        bank = scorer.bank  # as verified at load: never a re-read of the files
        return BankInfo(
            bank_id=scorer.bank_id,
            model_id=scorer.model_id,
            relation=bank.relation,
            manifest=bank.manifest.model_dump(mode="json"),
            metrics=bank.metrics.model_dump(mode="json") if bank.metrics is not None else {},
            evidence=engine.evidence,
            after_thresholds=scorer.after_thresholds(),
        )


async def _metrics_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """/metrics is open when OPEN_METRICS, else it needs the admin scope."""
    settings: ServiceSettings = connection.app.state.settings
    if settings.open_metrics or not settings.auth_enabled:
        return
    if "admin" not in (connection.scope.get("auth") or ()):
        raise PermissionDeniedException("this API key lacks the 'admin' scope")


class OpsController(Controller):
    """Liveness, readiness and Prometheus metrics."""

    path = "/"
    tags = ["operations"]

    @get("/healthz", summary="Alive (the process answers)", security=OPEN)
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        summary="Ready: model and bank loaded and warmed up (503 until then)",
        responses={503: ResponseSpec(Health, description="loading or failed to load")},
        security=OPEN,
    )
    async def readyz(self, request: Request) -> Response[Health]:
        engine: ScoringEngine | None = request.app.state.get("engine")
        if engine is not None and engine.ready:
            return Response(Health(status="ready"))
        if engine is not None and engine.load_error is not None:
            health = Health(status="failed", detail=engine.load_error)
        else:
            health = Health(status="loading", detail="the model and bank are loading")
        return Response(health, status_code=HTTP_503_SERVICE_UNAVAILABLE)

    @get(
        "/metrics",
        guards=[_metrics_guard],
        summary="Prometheus metrics (text exposition format)",
        media_type=Telemetry.content_type,
        responses=_errors(401, 403),
        security=OPEN,
    )
    async def metrics(self, metrics: Telemetry) -> Response[bytes]:
        return Response(
            metrics.render(),
            media_type=Telemetry.content_type,
            headers={"Cache-Control": "no-store"},
        )
