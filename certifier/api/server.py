"""The HTTP server: uvicorn, with read timeouts and a request-head size limit of our own.

uvicorn closes idle kept-alive connections (``timeout_keep_alive``) but, with its default
httptools parser, puts no limit on how long a client may take to send a request's head or body
nor on how large the head may be: 200 clients sending one byte a second held 200 connections
for as long as they liked, and 1 MB of headers was read whole (issue #14). :class:`GuardedHttp`
adds, per connection:

- a **head timeout**: a request's line and headers must arrive within ``head_timeout`` of its
  first byte (or of the connection, for the first request); else 408 and the connection closes;
- a **body timeout**: its body must arrive within ``body_timeout`` after the head; else the
  connection closes (the application sees a disconnect);
- a **head size limit**: more than ``head_limit`` bytes of request line and headers is a 431,
  and the connection closes.

The values are in ``certifier/limits.py``. There is no reverse proxy in the shipped compose
file: these limits are the server's own. A proxy in front (nginx, say) should set its own
``client_header_timeout``, ``client_body_timeout`` and ``large_client_header_buffers``.

:func:`serve` runs one process, or ``workers`` processes that share one listening socket
(uvicorn's supervisor: it restarts a worker that dies, and SIGTERM or SIGINT stops them all). Each
worker process builds its own app from the factory it is named by, so each has its own caches;
what they must agree on lives in the database (see ``certifier/web/pagecache.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from certifier.limits import (
    BODY_TIMEOUT_S,
    HEAD_BYTES_MAX,
    HEAD_TIMEOUT_S,
    KEEPALIVE_TIMEOUT_S,
)

# How long a thread may hold the GIL before another that waits gets it (CPython's default: 5 ms).
SWITCH_INTERVAL_S = 0.001

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _raw_error(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 error response in the API's one error shape, closing the connection."""
    body = json.dumps({"detail": detail, "errors": []}).encode()
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the timeouts and the head limit described above."""

    head_timeout = HEAD_TIMEOUT_S
    body_timeout = BODY_TIMEOUT_S
    head_limit = HEAD_BYTES_MAX

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = "head"  # head → body → idle (response, keep-alive) → head …; refused
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "refused":  # lingering after a refusal: discard
            return
        if self._phase == "idle":  # the first byte of the next request on this connection
            self._phase, self._head_bytes = "head", 0
            self._arm(self.head_timeout)
        if self._phase == "head":
            self._head_bytes += len(data)
        super().data_received(data)
        if self._phase == "head" and self._head_bytes > self.head_limit:
            self._refuse(431, f"request line and headers over {self.head_limit} bytes")

    # Parser callbacks (called from within super().data_received)

    def on_headers_complete(self) -> None:
        self._phase = "body"
        self._arm(self.body_timeout)
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size <= self.head_limit:
            super().on_headers_complete()
            return
        # The whole oversized head came in one read: answer through a refusing app, so the
        # request's cycle (and its body, which follows in the parser) is handled as usual.
        app, self.app = self.app, _refusing_app(431, "request line and headers over "
                                                     f"{self.head_limit} bytes")
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = "idle"
        self._disarm()

    # Timers

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._phase == "refused":
            return
        if self._phase == "head" and self._head_bytes:
            self._refuse(408, f"the request head took longer than {self.head_timeout:g} s")
        elif self._phase == "body" and self.cycle is not None and not self.cycle.response_started:
            self._refuse(408, f"the request body took longer than {self.body_timeout:g} s")
        else:  # a connection that never sent a byte, or a response already under way
            self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer and close, lingering: closing a socket with unread input sends a reset, which
        can destroy the answer before the client reads it. So shut down our side, discard what
        the client still sends, and close when it stops or after ``head_timeout``."""
        self._disarm()
        if self.transport.is_closing() or self._phase == "refused":
            return
        self._phase = "refused"
        self.transport.write(_raw_error(status, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._timer = self.loop.call_later(self.head_timeout, self.transport.close)
        else:
            self.transport.close()

    def eof_received(self) -> None:
        if self._phase == "refused":
            self.transport.close()
        super().eof_received()


def _refusing_app(status: int, detail: str) -> ASGIApp:
    async def app(_scope: Scope, _receive: Receive, send: Send) -> None:
        body = json.dumps({"detail": detail, "errors": []}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"connection", b"close"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def config(app: ASGIApp | str, host: str, port: int, log_level: str,
           protocol: type[GuardedHttp] = GuardedHttp, *, workers: int = 1) -> uvicorn.Config:
    """uvicorn's configuration with our limits (the h11 size limit too, should h11 be used).

    ``app`` is the application, or the ``module:function`` that builds it (needed for
    ``workers`` > 1: each process builds its own)."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol,
                          timeout_keep_alive=int(KEEPALIVE_TIMEOUT_S),
                          h11_max_incomplete_event_size=HEAD_BYTES_MAX,
                          workers=workers, factory=isinstance(app, str))


def favour_the_event_loop() -> None:
    """Let the event loop take the GIL back sooner from a page rendering in a worker thread.

    A dashboard render (tens of milliseconds of Python in the threadpool) holds the GIL, and
    the event loop, after each wait for the network, waits up to the switch interval for it:
    every manifest answered meanwhile got up to 5 ms later per step. At 1 ms the manifest's p99
    while browsers watch the dashboard stayed near its p99 alone in benchmarks/dashboard_serving.py
    (1.3x instead of 2x); a render takes a little longer in wall time. Called in each serving
    process: it is an interpreter setting, so the tests' and the workers' are left alone."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def default_workers() -> int:
    """``certifier serve``'s processes when not told: one per core it may use, at most 4.

    One process serves the manifest and the dashboard from one event loop, so a page read flat
    out takes its share from the operators' manifest pulls (docs/benchmarks.md, dashboard
    serving); a second process on a second core keeps them apart.
    """
    return max(1, min(4, len(os.sched_getaffinity(0))))


def serve(app: ASGIApp | str, host: str, port: int, log_level: str, workers: int = 1) -> None:
    settings = config(app, host, port, log_level, workers=workers)
    if workers > 1:
        Multiprocess(settings, sockets=[settings.bind_socket()]).run()
    else:
        uvicorn.Server(settings).run()
