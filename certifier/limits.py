"""Input bounds: the one set of limits every entry point applies, and the types that apply them.

The API bodies and paths (``certifier/api``), the dashboard's paths and queries, the webhook
receiver, the config loader (``certifier/settings.py``) and the CLI all take their bounds from
here, and the database columns take their widths from the same constants
(``certifier/db/models.py``), so a value that passes validation always fits where it is stored.
Whatever is out of bounds is refused where it enters, with a message that says the bound: a
422 over HTTP, a ``ConfigError`` naming the key, exit status 2 on the command line. The list
with the reasons is in ``docs/architecture.md`` (Security, Limits).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from certifier.domain.durations import MAX_DURATION, DurationError, parse_duration

# A database id: the 32-bit INTEGER of PostgreSQL's serial columns (SQLite's 64-bit ones hold it
# too). An id beyond it cannot exist, and the driver would overflow binding it.
ID_MAX = 2**31 - 1
# Forge project paths (GitLab ``path_with_namespace``: 20 nested groups of up to 255 characters
# are legitimate, though rare) and repository URLs, which carry such a path.
PROJECT_MAX = 2048
PROJECT_SEGMENTS_MAX = 24
URL_MAX = 4096
BRANCH_MAX = 200
RECIPE_PATH_MAX = 1000  # a recipe folder, as the config file names it (resolved, it is stored)
# Request bodies, JSON nesting and request heads.
BODY_BYTES_MAX = 1024 * 1024
JSON_DEPTH_MAX = 64  # forge payloads nest about 6 deep; Python's parser recurses per level
HEAD_BYTES_MAX = 32 * 1024  # request line and headers together
HEAD_TIMEOUT_S = 10.0  # a request's line and headers must arrive within this, from its first byte
BODY_TIMEOUT_S = 30.0  # and its body within this after the headers (1 MiB: ≥ 35 KB/s)
KEEPALIVE_TIMEOUT_S = 5.0  # an idle kept-alive connection is closed after this
# Commit times: no real commit is older or newer (far dates are broken clocks), and dates near
# year 1 or 9999 overflow as soon as an offset or a duration is applied. Over the API such a
# time is a 422; from a forge or git it is stored as unknown with a note (tracking/sources.py).
COMMIT_TIME_MIN = datetime(1900, 1, 1, tzinfo=UTC)
COMMIT_TIME_MAX = datetime(2200, 1, 1, tzinfo=UTC)

__all__ = ["MAX_DURATION"]  # re-exported: the duration bound lives with the duration parser


def duration(value: Any) -> timedelta:
    """A duration (``7d``, ``PT6H``, seconds) of at most MAX_DURATION, or ``ValueError``."""
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[timedelta, BeforeValidator(duration)]
DbId = Annotated[int, Field(ge=1, le=ID_MAX)]


def commit_time(value: datetime) -> datetime:
    """An aware commit time within [COMMIT_TIME_MIN, COMMIT_TIME_MAX), in UTC; else ValueError."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 at +01:00, year 9999 at -05:00
        utc = None
    if utc is None or not COMMIT_TIME_MIN <= utc < COMMIT_TIME_MAX:
        raise ValueError(f"commit time out of range: {value.isoformat()} (from "
                         f"{COMMIT_TIME_MIN:%Y-%m-%d} to before {COMMIT_TIME_MAX:%Y-%m-%d})")
    return utc


def in_commit_range(value: datetime) -> bool:
    """Whether an aware time is a storable commit time (see :func:`commit_time`)."""
    try:
        commit_time(value)
    except ValueError:
        return False
    return True


CommitTime = Annotated[AwareDatetime, AfterValidator(commit_time)]

# A JSON string literal (escapes included), as an unrolled loop: linear, no backtracking.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep(body: bytes, limit: int = JSON_DEPTH_MAX) -> bool:
    """Whether the arrays and objects of a JSON text nest deeper than ``limit`` (brackets inside
    strings do not count). A body with no more opening brackets than ``limit`` is not scanned."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    structure = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return any(depth > limit for depth in accumulate(_STEP[b] for b in structure))


def load_json(body: bytes) -> Any:
    """Parse a JSON body (UTF-8), refusing one nested deeper than JSON_DEPTH_MAX with
    ``ValueError``: Python's parser recurses once per level and would raise RecursionError."""
    if too_deep(body):
        raise ValueError(f"JSON nested deeper than {JSON_DEPTH_MAX} levels")
    return json.loads(body.decode("utf-8"))
