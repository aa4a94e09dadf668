"""uvicorn's h11 protocol with a deadline on reading each request (slow and idle clients).

uvicorn bounds idle keep-alive (`timeout_keep_alive`) but not a request that arrives slowly: its
keep-alive timer is cancelled by the first byte, so a client sending headers at one byte per
second holds its connection for as long as it likes (a slowloris). Here every request must be
read whole (headers and body) within `read_timeout_s` of the connection opening or of the
previous response ending; otherwise the connection is closed. The timer is disarmed once the
request is complete, so a slow *model* never trips it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request is not fully read in time."""

    read_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._read_deadline: asyncio.TimerHandle | None = None
        self._arm()

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
        if self.conn.their_state not in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def deadline_protocol(read_timeout_s: float) -> type[DeadlineH11Protocol]:
    """The protocol class with this deadline (uvicorn instantiates one per connection)."""
    attrs: dict[str, Any] = {"read_timeout_s": read_timeout_s}
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), attrs)
