"""Live updates: one poller per app watches the pipeline's state, ``/events`` streams the changes.

The pipeline's state lives in the database, written by workers, beat and other API replicas, so
there is nothing in this process to subscribe to. Instead one :class:`StateWatcher` per app asks
the database for a small digest (:func:`certifier.pipeline.read.state_version`) every second,
while at least one browser listens and never otherwise: a thousand open dashboards cost one
query a second, not a thousand. Each change wakes every stream, which sends a ``changed`` event
carrying the new version; the page's script fetches the page again and swaps what differs.

The digest also carries the minute of the app's clock, because ages and soak progress move with
time even when no row does.

A stream ends by itself after :data:`STREAM_SECONDS` and the browser reconnects (``retry``):
uvicorn's graceful shutdown waits for open responses, so an endless stream would hold a
``certifier serve`` that is asked to stop. The first event of every stream is the current
version, so nothing is missed across a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from certifier.api.deps import AppContext
from certifier.db.session import session_scope
from certifier.pipeline import read

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
STREAM_SECONDS = 14.0  # below `certifier up`'s 15 s stop grace
KEEPALIVE_SECONDS = 10.0
RETRY_MS = 1500


def page_version(context: AppContext) -> str:
    """The version a page rendered now would carry (see :func:`versioned`)."""
    with session_scope(context.session_factory) as session:
        return versioned(read.state_version(session), context)


def versioned(digest: str, context: AppContext) -> str:
    minute = int(context.clock.now().timestamp() // 60)
    return f"{digest}-{minute:x}"


class StateWatcher:
    """Polls the database while anyone listens; wakes every listener when the version changes."""

    def __init__(self, poll_seconds: float = POLL_SECONDS) -> None:
        self.poll_seconds = poll_seconds
        self.version: str | None = None
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests build several): start afresh
            self._loop, self._task, self._changed = loop, None, asyncio.Event()
            self.version = None

    async def _poll(self, probe: Callable[[], str]) -> None:
        failing = False
        while self._listeners > 0:
            try:
                version = await run_in_threadpool(probe)
            except SQLAlchemyError as exc:
                if not failing:
                    log.warning("live updates: the database does not answer: %s", exc)
                failing = True
            else:
                failing = False
                if version != self.version:
                    self.version = version
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
            await asyncio.sleep(self.poll_seconds)
        self._task = None

    @asynccontextmanager
    async def listening(self, probe: Callable[[], str]) -> AsyncIterator[StateWatcher]:
        self._bind()
        self._listeners += 1
        if self._task is None:
            self._task = asyncio.create_task(self._poll(probe))
        try:
            yield self
        finally:
            self._listeners -= 1

    async def next_version(self, seen: str | None, wait: float) -> str | None:
        """The current version once it differs from ``seen``; None after ``wait`` seconds."""
        if self.version is not None and self.version != seen:
            return self.version
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), wait)
        except TimeoutError:
            return None
        return self.version if self.version != seen else None


def _event(version: str) -> bytes:
    return (f"event: changed\nid: {version}\n"
            f"data: {json.dumps({'version': version})}\n\n").encode()


async def stream(watcher: StateWatcher, context: AppContext,
                 seconds: float = STREAM_SECONDS) -> AsyncIterator[bytes]:
    """The body of one ``/events`` response."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    async with watcher.listening(lambda: page_version(context)):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        seen: str | None = None
        while (left := deadline - loop.time()) > 0:
            version = await watcher.next_version(seen, min(left, KEEPALIVE_SECONDS))
            if version is None:
                yield b": keep-alive\n\n"
                continue
            seen = version
            yield _event(version)
