"""The server's own limits (certifier/api/server.py), over real sockets to a real uvicorn: a
slow-loris client is dropped, an oversized request head is refused, normal requests still work.

Before the guard, a client sending one byte a second held its connection for as long as it liked
and 1 MB of headers was read whole (issue #14). The limits are shortened here (1 s, 4 KiB) so
the tests are quick; a client that would need far longer than the limit (30 s) is the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from certifier.api import server

SLOW = 30.0  # how long the slow clients below would need to finish


class Quick(server.GuardedHttp):
    head_timeout = 1.0
    body_timeout = 1.0
    head_limit = 4096


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, answers 200 with its length."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def port() -> Iterator[int]:
    config = server.config(echo, "127.0.0.1", 0, "warning", protocol=Quick)
    instance = uvicorn.Server(config)
    instance.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=lambda: asyncio.run(instance.serve()), daemon=True)
    thread.start()
    for _ in range(500):
        if instance.started:
            break
        time.sleep(0.01)
    assert instance.started, "uvicorn did not start"
    yield instance.servers[0].sockets[0].getsockname()[1]
    instance.should_exit = True
    thread.join(timeout=10)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SLOW)


def _trickle(sock: socket.socket, data: bytes, pause: float = 0.1) -> tuple[int, bytes]:
    """Send ``data`` a byte at a time; (bytes sent before the server answered or hung up, what
    it answered)."""
    sock.setblocking(False)
    deadline = time.monotonic() + SLOW
    for sent, byte in enumerate(data):
        try:
            answer = sock.recv(65536)
        except BlockingIOError:
            answer = None
        except ConnectionResetError:
            return sent, b""
        if answer is not None:  # an answer, or b"": the server closed the connection
            return sent, answer
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent, b""
        if time.monotonic() > deadline:
            break
        time.sleep(pause)
    return len(data), b""


def _read_all(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_slow_loris_head_at_ten_bytes_a_second_is_dropped_with_a_408(port: int) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 300 + b"\r\n\r\n"
    with _connect(port) as sock:
        sent, answer = _trickle(sock, head)
        answer += _read_all(sock)
    assert sent < len(head) // 2  # it would have needed 30 s; the server stopped it
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"detail"' in answer


def test_a_slow_body_is_dropped(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n")
        sent, answer = _trickle(sock, b"b" * 300)
        answer += _read_all(sock)
    assert sent < 150
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    with _connect(port) as sock:
        assert _read_all(sock) == b""


def test_a_one_megabyte_header_is_refused_with_a_431(port: int) -> None:
    with _connect(port) as sock:
        # refused while still sending is fine: the answer is already on its way
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1024 * 1024 +
                         b"\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_head_over_the_limit_in_one_read_is_refused_with_a_431(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def _response(sock: socket.socket) -> bytes:
    """One whole response (its body is a decimal length, so it ends in a digit)."""
    data = b""
    while not (b"\r\n\r\n" in data and data[-1:].isdigit()):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_ordinary_requests_on_one_kept_alive_connection_still_work(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        first = _response(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Fits: " + b"a" * 3000 + b"\r\n\r\n")
        second = _response(sock)
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"5")
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"0")
