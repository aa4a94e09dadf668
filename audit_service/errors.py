"""The service's refusals and the exception handlers that turn them into JSON errors.

Every error body has the shape of litestar's own (`status_code`, `detail`, optional `extra`), so a
client parses one format whatever refused its request.
"""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_504_GATEWAY_TIMEOUT,
)
from litestar.types import ExceptionHandlersMap

from audit_service.engine import DeadlineExceeded, NotReady, QueueFull
from audit_service.jobs.manager import StorageBusy
from probe_bank.errors import UserError

log = logging.getLogger(__name__)


class TooManyItems(UserError):
    """More prompts or entities in one request than MAX_ITEMS (HTTP 422)."""


def error_response(
    status_code: int, detail: str, headers: dict[str, str] | None = None
) -> Response[dict[str, object]]:
    return Response(
        {"status_code": status_code, "detail": detail}, status_code=status_code, headers=headers
    )


def _user_error(_: Request, exc: UserError) -> Response[dict[str, object]]:
    return error_response(HTTP_422_UNPROCESSABLE_ENTITY, str(exc))


def _not_utf8(_: Request, exc: UnicodeError) -> Response[dict[str, object]]:
    reason = getattr(exc, "reason", "undecodable bytes")
    return error_response(HTTP_400_BAD_REQUEST, f"the request body is not valid UTF-8: {reason}")


def _too_deep(_: Request, exc: RecursionError) -> Response[dict[str, object]]:
    return error_response(HTTP_400_BAD_REQUEST, "the request JSON is nested too deeply")


def _queue_full(_: Request, exc: QueueFull) -> Response[dict[str, object]]:
    return error_response(
        HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after)}
    )


def _deadline(_: Request, exc: DeadlineExceeded) -> Response[dict[str, object]]:
    return error_response(HTTP_504_GATEWAY_TIMEOUT, str(exc))


def _not_ready(_: Request, exc: NotReady) -> Response[dict[str, object]]:
    return error_response(HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"})


def _storage_busy(_: Request, exc: StorageBusy) -> Response[dict[str, object]]:
    return error_response(
        HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": str(exc.retry_after)}
    )


def _internal(request: Request, exc: Exception) -> Response[dict[str, object]]:
    """Last resort: log the traceback, answer a JSON 500 without internals."""
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        body: dict[str, object] = {"status_code": exc.status_code, "detail": exc.detail}
        if exc.extra:
            body["extra"] = exc.extra
        return Response(body, status_code=exc.status_code, headers=headers)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    UnicodeError: _not_utf8,
    RecursionError: _too_deep,
    UserError: _user_error,
    QueueFull: _queue_full,
    DeadlineExceeded: _deadline,
    NotReady: _not_ready,
    StorageBusy: _storage_busy,
    Exception: _internal,
}
