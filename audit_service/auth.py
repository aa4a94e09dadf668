"""Bearer API keys: an authentication middleware (401) and per-scope guards (403).

Keys are compared with `hmac.compare_digest` against every configured key (no early exit), so the
time taken does not reveal how much of a key was right or which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp, Guard

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="recency-audit"'}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def match_key(presented: str, keys: Mapping[str, frozenset[str]]) -> frozenset[str] | None:
    """Scopes of the configured key equal to `presented`, or None; constant time in the match."""
    wanted = _digest(presented)
    found: frozenset[str] | None = None
    for key, scopes in keys.items():
        if hmac.compare_digest(wanted, _digest(key)):
            found = scopes
    return found


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Requires `Authorization: Bearer <key>`; puts the key's scopes in `connection.auth`."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Mapping[str, frozenset[str]],
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude)
        self.keys = dict(keys)

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("missing bearer API key", headers=_CHALLENGE)
        scopes = match_key(token.strip(), self.keys)
        if scopes is None:
            raise NotAuthorizedException("invalid API key", headers=_CHALLENGE)
        return AuthenticationResult(user="api-key", auth=scopes)


def presented_scopes(
    connection: ASGIConnection, keys: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """Scopes of the bearer key a request presents, on a route open without one (where the
    middleware did not run): every scope when auth is off, none for a missing or wrong key."""
    if not keys:
        return frozenset({"score", "jobs", "admin"})
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return frozenset()
    return match_key(token.strip(), keys) or frozenset()


def requires_scope(scope: str) -> Guard:
    """Guard: 403 unless the request's key holds `scope` (passes when auth is off)."""

    async def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        # async: Litestar runs a sync guard in a worker thread, a hop on every request
        if not connection.app.state.get("auth_enabled", False):
            return
        scopes = connection.scope.get("auth")
        if not scopes or scope not in scopes:
            raise PermissionDeniedException(f"this API key lacks the '{scope}' scope")

    guard.__name__ = f"requires_scope_{scope}"
    return guard
