"""Error handling: every error leaves as JSON ``{"detail": ...}``, and no traceback ever does.

Service errors map to HTTP statuses (NotFound 404, Conflict 409, Invalid 422). A unique
constraint that fires because two requests raced becomes a 409 the client can retry; a database
that cannot be reached, drops the connection or leaves no pooled connection free becomes a 503
with ``Retry-After``. Anything unexpected is logged here with its traceback and
answered with a bare 500. Oversized request bodies are refused with 413 before they are read
into memory.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certifier.pipeline.errors import Conflict, Invalid, NotFound, ServiceError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

_SERVICE_STATUS: dict[type[ServiceError], int] = {NotFound: 404, Conflict: 409, Invalid: 422}


def _json_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _json_error(exc.status_code, exc.detail, dict(exc.headers or {}))


def _plain(value: Any) -> Any:
    """Make pydantic's error context JSON-safe: exceptions become their message."""
    if isinstance(value, BaseException):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_plain(dict(e)) for e in exc.errors()]
    try:
        detail = jsonable_encoder(errors)
        json.dumps(detail)
    except (TypeError, ValueError):  # something exotic in an input echo: keep the messages
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors]
    return _json_error(422, detail)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next((s for t, s in _SERVICE_STATUS.items() if isinstance(exc, t)), 400)
    return _json_error(status, str(exc))


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc)
    return _json_error(409, "the request conflicts with a concurrent change; retry it")


async def _operational_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _json_error(503, "the database is unavailable; retry later", {"Retry-After": "5"})


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """A driver error on a connection that just died is the database going away (503); any
    other (bad SQL, bad data) is our bug and stays a 500."""
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:
        return await _operational_error(request, exc)
    return await _unexpected(request, exc)


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    """Every pooled connection is busy (a database that hangs, or overload): also a 503."""
    log.error("no database connection free on %s %s: %s", request.method, request.url.path,
              exc)
    return _json_error(503, "the database is overloaded or not answering; retry later",
                       {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _operational_error)
    app.add_exception_handler(DBAPIError, _driver_error)
    app.add_exception_handler(PoolTimeout, _pool_timeout)
    app.add_exception_handler(Exception, _unexpected)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class RefuseNul:
    """ASGI middleware: a NUL byte anywhere in the path or query is a 422, before any routing.

    No identifier, filter or name of ours can contain one, PostgreSQL text cannot store one
    (psycopg raises DataError), and it must never reach a command line or a file name.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            if b"%00" in query or b"\x00" in query or "\x00" in scope.get("path", ""):
                await _json_error(422, "NUL bytes are not allowed in the path or query")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a JSON 413.

    A declared Content-Length is checked before the application runs; a streamed (chunked) body
    is counted as it is received, and the error raised from ``receive`` reaches the HTTP error
    handler like any other HTTPException.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                await _json_error(400, "invalid Content-Length header")(scope, receive, send)
                return
            if too_large:
                await self._refuse(scope, receive, send)
                return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _json_error(413, f"request body larger than {self.limit} bytes",
                               {"Connection": "close"})
        await response(scope, receive, send)
