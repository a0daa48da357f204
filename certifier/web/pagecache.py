"""Rendered dashboard pages, kept until the pipeline changes: N viewers cost one render per change.

A dashboard page costs tens of milliseconds of CPU to render (several queries, the promotion
policy, Jinja2), and every viewer's ``live.js`` fetches the page again at the same moment, when
``/events`` says the pipeline moved. :class:`PageCache` is an ASGI middleware that answers a
dashboard ``GET`` from memory before any routing, as long as the page is still true:

- **Never older than the newest event.** Every cached page is tagged with the pipeline's version
  (:func:`certifier.web.events.page_version`: the digest that ``/events`` streams, plus the
  minute of the app's clock). Each request reads the version again, from the database, so a
  change made by any process — a worker, beat, another ``--workers`` process of the API — is
  seen by the next ``GET``. Reads are coalesced (:class:`VersionProbe`): one probe in flight at a
  time, and a request only accepts a probe that *started after it arrived*, so concurrent
  viewers share one query and none is answered from a read older than itself.
- **Honest about time.** Ages ("5 min ago") and soak progress ("2 of 7 days") move without any
  row moving: a page is also re-rendered once it is :data:`MAX_AGE_S` old by the app's clock
  (while that render runs, other requests still get the old page, not a queue).
- **One render per change.** Concurrent misses for one page wait for a single render.

The version is read *before* the page renders, so a page is tagged with a version no newer than
its data: a change that lands during a render makes the next request render again, never keeps a
stale page. Only complete HTML answers with status 200 or 404 from the dashboard's own paths are
kept, keyed by scheme, ``Host`` (the overview shows the manifest's URL), path and query, at most
:data:`MAX_BYTES` in all, least recently used first out. When the version cannot be read (the
database is down) the request goes to the route, uncached, which answers as it always did.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certifier.api.deps import AppContext
from certifier.web import events

MAX_AGE_S = 2.0
MAX_BYTES = 32 * 1024 * 1024
PAGES = re.compile(r"^/(?:candidates(?:/[^/]+)?|runs/[^/]+|components(?:/[^/]+)?"
                   r"|known-good(?:/diff)?|audit|deliveries)?$")
CACHED_STATUS = frozenset({200, 404})

Key = tuple[str, bytes, str, bytes]


class VersionProbe:
    """Reads the pipeline's version for many concurrent requests with few queries.

    At most one read runs at a time. A caller that arrives while one runs waits for the next,
    which starts as soon as the running one ends and serves everyone who arrived meanwhile: each
    caller gets a version read wholly after it called.
    """

    def __init__(self, probe: Callable[[], str]) -> None:
        self._probe = probe
        self._running: asyncio.Task[str] | None = None
        self._queued: asyncio.Task[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reads = 0  # how many times the database was asked (for tests and benchmarks)

    async def current(self) -> str:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests build several): start afresh
            self._loop, self._running, self._queued = loop, None, None
        if self._running is None:
            self._running = task = loop.create_task(self._read(None))
        else:
            if self._queued is None:
                self._queued = loop.create_task(self._read(self._running))
            task = self._queued
        return await asyncio.shield(task)

    async def _read(self, after: asyncio.Task[str] | None) -> str:
        me = asyncio.current_task()
        if after is not None:
            await asyncio.wait([after])
            self._running, self._queued = me, None
        try:
            self.reads += 1
            return await run_in_threadpool(self._probe)
        finally:
            if self._running is me:
                self._running = None


@dataclass(frozen=True, slots=True)
class Page:
    version: str
    rendered_at: datetime
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class PageCache:
    """ASGI middleware: serve dashboard pages from memory while their version is current."""

    def __init__(self, app: ASGIApp, context: AppContext, max_age: float = MAX_AGE_S,
                 max_bytes: int = MAX_BYTES) -> None:
        self.app = app
        self.context = context
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.probe = VersionProbe(lambda: events.page_version(context))
        self.renders = 0  # pages rendered into the cache (for tests and benchmarks)
        self._pages: OrderedDict[Key, Page] = OrderedDict()
        self._bytes = 0
        self._rendering: dict[Key, asyncio.Future[None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not PAGES.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        try:
            version = await self.probe.current()
        except SQLAlchemyError:  # the route answers (503) as it would without the cache
            await self.app(scope, receive, send)
            return
        # The route stamps the page with this version (read before its data) instead of
        # reading it again: the cached page's tag and its certifier-state meta are one value.
        scope.setdefault("state", {})["page_version"] = version
        key = _key(scope)
        while True:
            rendering = self._rendering.get(key)
            page = self._fresh(key, version, rendering is not None)
            if page is not None:
                break
            if rendering is None:
                await self._render(key, version, scope, receive, send)
                return
            await asyncio.wait([rendering])  # one render per page at a time: wait for it
        await _send(page, send)

    def _fresh(self, key: Key, version: str, rendering: bool) -> Page | None:
        """The page if it shows ``version`` and is young enough. While it is being rendered
        again only because of its age, it may serve up to twice ``max_age``: requests do not
        queue behind the render, and the text is at most one render's time older."""
        page = self._pages.get(key)
        if page is None or page.version != version:
            return None
        age = (self.context.clock.now() - page.rendered_at).total_seconds()
        if not 0 <= age < (2 * self.max_age if rendering else self.max_age):
            return None
        self._pages.move_to_end(key)
        return page

    async def _render(self, key: Key, version: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """Pass the request to the route, sending its answer on and keeping a copy of it;
        requests for the same page wait meanwhile."""
        done = asyncio.get_running_loop().create_future()
        self._rendering[key] = done
        try:
            await self._pass(key, version, scope, receive, send)
        finally:
            del self._rendering[key]
            done.set_result(None)

    async def _pass(self, key: Key, version: str, scope: Scope, receive: Receive,
                    send: Send) -> None:
        rendered_at = self.context.clock.now()
        start: Message | None = None
        chunks: list[bytes] = []
        complete = False

        async def keep(message: Message) -> None:
            nonlocal start, complete
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, keep)
        if start is None or not complete or start["status"] not in CACHED_STATUS:
            return
        headers = tuple((bytes(k), bytes(v)) for k, v in start.get("headers", ()))
        if not any(k.lower() == b"content-type" and v.startswith(b"text/html")
                   for k, v in headers):
            return
        self._store(key, Page(version, rendered_at, start["status"], headers, b"".join(chunks)))

    def _store(self, key: Key, page: Page) -> None:
        self.renders += 1
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        if len(page.body) > self.max_bytes:
            return
        self._pages[key] = page
        self._bytes += len(page.body)
        while self._bytes > self.max_bytes:
            _, dropped = self._pages.popitem(last=False)
            self._bytes -= len(dropped.body)

    def clear(self) -> None:
        self._pages.clear()
        self._bytes = 0


def _key(scope: Scope) -> Key:
    host = next((v for k, v in scope["headers"] if k == b"host"), b"")
    return scope.get("scheme", "http"), host, scope["path"], scope.get("query_string", b"")


async def _send(page: Page, send: Send) -> None:
    await send({"type": "http.response.start", "status": page.status,
                "headers": list(page.headers)})
    await send({"type": "http.response.body", "body": page.body})

