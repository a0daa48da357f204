"""The current manifest, rendered once and served from memory for a short time.

Operators' deploy scripts poll ``GET /api/v1/manifest`` often and from many hosts; it is the one
hot read of the service. Rendering it costs a few database queries and a threadpool hop, so the
API keeps each format's rendered bytes and ETag for ``ttl`` seconds (one second by default).
A promotion or revocation made through this process clears the cache at once; one made by a
worker process is seen within ``ttl``. A poller can never see a mix of two versions: each entry is
one document, rendered whole, with the ETag of exactly those bytes.

:func:`answer` is the one writer of a manifest answer (status, headers, body): the fast path
below and the routes (``routers/manifests.py``) both send what it says, so a ``304`` or a ``200``
carries the same headers whichever of them answered. :data:`FORMATS` is the one list of formats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class Representation:
    """One format of one manifest document, ready to send."""

    body: bytes
    media_type: str
    etag: str
    signature: str | None = None  # base64 Ed25519 signature of exactly ``body``
    valid_until: float | None = None  # the document's expires_at (a timestamp)


# None stands for "no known-good yet", which is cached like a document.
Entry = Representation | None


class ManifestCache:
    def __init__(self, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Entry]] = {}
        self._refresh = asyncio.Lock()

    def get(self, fmt: str) -> tuple[bool, Entry]:
        """(found, entry): ``found`` is False when the format is absent or expired, or when the
        signed document itself has expired (an expired signature is never served)."""
        hit = self._entries.get(fmt)
        now = self._clock()
        if hit is None or hit[0] <= now:
            return False, None
        entry = hit[1]
        if entry is not None and entry.valid_until is not None and entry.valid_until <= now:
            return False, None
        return True, entry

    def put(self, fmt: str, entry: Entry) -> None:
        if self.ttl > 0:
            self._entries[fmt] = (self._clock() + self.ttl, entry)

    def clear(self) -> None:
        self._entries.clear()

    async def get_or_render(self, fmt: str, render: Callable[[], Awaitable[Entry]]) -> Entry:
        """The cached entry, or one rendered now; concurrent misses render only once."""
        found, entry = self.get(fmt)
        if found:
            return entry
        async with self._refresh:
            found, entry = self.get(fmt)  # another request may have rendered it meanwhile
            if not found:
                entry = await render()
                self.put(fmt, entry)
        return entry


MANIFEST_PATH = "/api/v1/manifest"
SIGNATURE_HEADER = "X-Manifest-Signature"
ManifestFormat = Literal["json", "yaml", "env", "csv"]
FORMATS: frozenset[str] = frozenset(get_args(ManifestFormat))


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison: ``W/`` prefixes are ignored (RFC 9110 13.1.2)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


class ManifestFastPath:
    """ASGI middleware: answer ``GET /api/v1/manifest`` from the cache before any routing.

    Only a cache hit for a plain request (no query, or just ``format=``) is answered here, with
    the same headers and 304 handling as the route; everything else — a miss, ``?at=``, an unknown
    format, no known-good — goes on to the FastAPI route, which validates, renders and fills the
    cache. Routing and dependency resolution cost several times what uvicorn itself does for this
    tiny answer, and deploy scripts on every host poll it.
    """

    def __init__(self, app: ASGIApp, cache: ManifestCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == MANIFEST_PATH:
            fmt = _plain_format(scope["query_string"])
            found, entry = self.cache.get(fmt) if fmt else (False, None)
            if found and entry is not None:
                await _send(entry, scope, send)
                return
        await self.app(scope, receive, send)


def _plain_format(query: bytes) -> str | None:
    if not query:
        return "json"
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    if len(pairs) == 1 and pairs[0][0] == "format" and pairs[0][1] in FORMATS:
        return pairs[0][1]
    return None


Headers = list[tuple[bytes, bytes]]


def answer(entry: Representation, if_none_match: str | None) -> tuple[int, Headers, bytes]:
    """Status, headers and body of the answer with ``entry``: ``304`` without a body when
    ``If-None-Match`` matches its ETag, else ``200``. Both carry the ETag, ``no-cache`` and the
    signature of the bytes (a client that revalidates keeps the signature it is told about)."""
    headers = [(b"etag", entry.etag.encode()), (b"cache-control", b"no-cache")]
    if entry.signature:
        headers.append((SIGNATURE_HEADER.lower().encode(), entry.signature.encode()))
    if etag_matches(if_none_match, entry.etag):
        return 304, headers, b""
    headers += [(b"content-type", entry.media_type.encode()),
                (b"content-length", str(len(entry.body)).encode())]
    return 200, headers, entry.body


async def _send(entry: Representation, scope: Scope, send: Send) -> None:
    header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"),
                  None)
    status, headers, body = answer(entry, header)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
