"""uvicorn's HTTP protocols with a deadline on reading each request (slow and idle clients).

uvicorn bounds idle keep-alive (`timeout_keep_alive`) but not a request that arrives slowly: its
keep-alive timer is cancelled by the first byte, so a client sending headers at one byte per
second holds its connection for as long as it likes (a slowloris). Here every request must be
read whole (headers and body) within `read_timeout_s` of the connection opening or of the
previous response ending; otherwise the connection is closed. The timer is disarmed once the
request is complete, so a slow *model* never trips it.

Two parsers carry the same deadline: httptools (C, the default when installed: the pure-Python
h11 parser was a quarter of the event loop's time under load) and h11 (the fallback).
"""

from __future__ import annotations

import asyncio
from typing import Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

Parser = Literal["auto", "httptools", "h11"]


class _ReadDeadline:
    """The deadline, mixed into a uvicorn protocol: armed when a connection opens and after each
    response, disarmed once the request is read whole (`_request_read`), and on expiry the
    connection closes unless the request was read."""

    read_timeout_s: float = 10.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _request_read(self) -> bool:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._read_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._expired)

    def _disarm(self) -> None:
        handle = getattr(self, "_read_deadline", None)
        if handle is not None:
            handle.cancel()
        self._read_deadline = None

    def _expired(self) -> None:
        self._read_deadline = None
        if not self._request_read():
            self.transport.close()


class DeadlineH11Protocol(_ReadDeadline, H11Protocol):
    """H11Protocol that closes a connection whose request is not fully read in time."""

    def _request_read(self) -> bool:
        return self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_read():
            self._disarm()


def _httptools_class() -> type[asyncio.Protocol]:
    """The same deadline on uvicorn's httptools protocol (imported here, so that this module
    loads without httptools)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class DeadlineHttpToolsProtocol(_ReadDeadline, HttpToolsProtocol):
        _message_complete = False

        def _request_read(self) -> bool:
            return self._message_complete

        def on_message_begin(self) -> None:
            # per request, not per arm: a pipelined request read whole before the previous
            # response ended stays read when the deadline is re-armed
            super().on_message_begin()
            self._message_complete = False

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._message_complete = True
            self._disarm()

    return DeadlineHttpToolsProtocol


def has_httptools() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def deadline_protocol(read_timeout_s: float, parser: Parser = "auto") -> type[asyncio.Protocol]:
    """The protocol class with this deadline (uvicorn instantiates one per connection):
    httptools when installed (or asked for), else h11."""
    use_httptools = parser == "httptools" or (parser == "auto" and has_httptools())
    base: type[asyncio.Protocol] = _httptools_class() if use_httptools else DeadlineH11Protocol
    name = "DeadlineHttpToolsProtocol" if use_httptools else "DeadlineH11Protocol"
    return type(name, (base,), {"read_timeout_s": read_timeout_s})
