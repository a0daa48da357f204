"""Error handling: every error leaves as JSON of one shape, and no traceback ever does.

The shape (``ErrorOut`` in the OpenAPI document) is ``{"detail": "<one sentence>", "errors":
[{"loc": [...], "msg": "...", "type": "..."}]}``: ``errors`` lists the fields of a validation
error (422) and is empty for every other error, so a client reads ``detail`` whatever went
wrong. Inputs are never echoed back in ``errors`` (pydantic's ``input`` and ``ctx`` are dropped).
A 405 lists in ``Allow`` every method the path has, not only those of the first route matched.

Service errors map to HTTP statuses (NotFound 404, Conflict 409, Invalid 422). A unique
constraint that fires because two requests raced becomes a 409 the client can retry; a database
that cannot be reached, drops the connection or leaves no pooled connection free becomes a 503
with ``Retry-After``. Anything unexpected is logged here with its traceback and
answered with a bare 500. Oversized request bodies are refused with 413 before they are read
into memory.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certifier.limits import BODY_BYTES_MAX, JSON_DEPTH_MAX, too_deep
from certifier.pipeline.errors import Conflict, Invalid, NotFound, ServiceError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = BODY_BYTES_MAX
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_DETAIL_MAX = 1000

_SERVICE_STATUS: dict[type[ServiceError], int] = {NotFound: 404, Conflict: 409, Invalid: 422}


def error_body(detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The one error shape (see the module docstring)."""
    return {"detail": detail, "errors": errors or []}


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(detail), status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    return _json_error(exc.status_code, str(exc.detail), headers)


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route answers on this path (Starlette's own 405 names only the methods
    of the first route whose path matched)."""
    found = []
    for method in _METHODS:
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            found.append(method)
    return found


def _field_error(error: Any) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
    msg = str(error.get("msg", "")).removeprefix("Value error, ")
    return {"loc": loc, "msg": msg, "type": str(error.get("type", ""))}


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(e) for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    if len(detail) > _DETAIL_MAX:
        detail = detail[:_DETAIL_MAX - 1] + "…"
    return JSONResponse(error_body(detail or "invalid request", errors), status_code=422)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next((s for t, s in _SERVICE_STATUS.items() if isinstance(exc, t)), 400)
    return _json_error(status, str(exc))


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc)
    return _json_error(409, "the request conflicts with a concurrent change; retry it")


def lock_wait_ended(exc: Exception) -> bool:
    """Whether a database error is a lock wait that ran out (PostgreSQL's ``lock_timeout``,
    SQLSTATE 55P03; SQLite's ``busy_timeout``): the database is up, another change is busy."""
    orig = getattr(exc, "orig", None)
    return (getattr(orig, "sqlstate", None) == "55P03"
            or "database is locked" in str(orig or exc))


async def _operational_error(request: Request, exc: Exception) -> JSONResponse:
    if lock_wait_ended(exc):
        log.warning("lock wait ran out on %s %s: %s", request.method, request.url.path, exc)
        return _json_error(503, "the database is busy with another change that holds what "
                                "this request needs; retry shortly", {"Retry-After": "5"})
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


class JsonDepthLimit:
    """ASGI middleware: a JSON request body nested deeper than JSON_DEPTH_MAX is a 422.

    Python's JSON parser recurses once per level; a 1 MiB body of ``[`` would end in a
    RecursionError. The body is read here (it is at most MAX_BODY_BYTES: BodySizeLimit sits
    outside) and handed on unchanged. Webhooks are left to their receiver, which checks the
    signature first and the depth after it (``certifier.limits.load_json``).
    """

    def __init__(self, app: ASGIApp, skip_prefix: str = "/api/v1/webhooks/") -> None:
        self.app = app
        self.skip_prefix = skip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
                or scope["path"].startswith(self.skip_prefix) or not _json_typed(scope)):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if too_deep(body):
            await _json_error(422, f"the JSON body is nested deeper than {JSON_DEPTH_MAX} "
                                   "levels")(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body,
                                        "more_body": False}], receive), send)


def _json_typed(scope: Scope) -> bool:
    """FastAPI parses a body as JSON when its type says JSON, or when no type is given."""
    kind = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    return not kind or kind == "application/json" or kind.endswith("+json")


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive that hands out ``messages`` first, then waits on ``then`` (a disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
