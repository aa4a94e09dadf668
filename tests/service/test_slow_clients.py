"""Slow and idle clients against a real `recency-audit serve` on 127.0.0.1 (issue 13.11)."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.jobs.server import ServiceProcess

N_SLOW = 100


@pytest.fixture(params=[("httptools", "uvloop"), ("httptools", "asyncio"), ("h11", "asyncio")])
def server(request: pytest.FixtureRequest, tiny_bank: Path, tmp_path: Path):
    """A real server with each HTTP parser and event loop (all carry the same read deadline)."""
    parser, loop = request.param
    env = {
        "RECENCY_AUDIT_HTTP_PARSER": parser,
        "RECENCY_AUDIT_EVENT_LOOP": loop,
        "RECENCY_AUDIT_BANK_DIR": str(tiny_bank),
        "RECENCY_AUDIT_HOME": str(tmp_path / "home"),
        "RECENCY_AUDIT_API_KEYS": "",
        "RECENCY_AUDIT_READ_TIMEOUT_S": "1.5",
        "RECENCY_AUDIT_KEEP_ALIVE_S": "1",
    }
    with ServiceProcess(env, tmp_path / "serve.log", cli=True) as service:
        metrics = httpx.get(service.url + "/metrics", timeout=5).text
        assert f'recency_audit_server_info{{event_loop="{loop}"}} 1.0' in metrics
        yield service.port, service.url


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_slow_headers_are_cut_off_and_health_stays_fast(server) -> None:
    port, url = server
    socks = []
    for _ in range(N_SLOW):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    end = time.monotonic() + 4.0
    while time.monotonic() < end:  # one byte per socket every 0.5 s, health checked meanwhile
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(b"a")
        # health keeps answering (within the client's timeout) while the slow clients hold on
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        time.sleep(0.5)
    closed = sum(_closed(s) for s in socks)
    for s in socks:
        s.close()
    assert closed == N_SLOW, f"{N_SLOW - closed} slow connections still open after 4 s"


def test_idle_keep_alive_closes_and_a_normal_request_is_unaffected(server) -> None:
    port, url = server
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(10)  # keep-alive is 1 s: the server must close well before this
    data = b""
    while chunk := s.recv(4096):  # the whole response, then EOF when the idle timer fires
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    s.close()
    with httpx.Client() as c:  # one connection, 2.5 s in all: the deadline is per request
        for _ in range(6):
            assert c.get(url + "/healthz").status_code == 200
            time.sleep(0.5)


def test_the_parser_setting_picks_the_protocol() -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from audit_service.protocol import deadline_protocol

    assert issubclass(deadline_protocol(2.0, "httptools"), HttpToolsProtocol)
    assert issubclass(deadline_protocol(2.0, "auto"), HttpToolsProtocol)  # installed by set-up
    h11 = deadline_protocol(2.0, "h11")
    assert issubclass(h11, H11Protocol) and h11.read_timeout_s == 2.0  # type: ignore[attr-defined]
