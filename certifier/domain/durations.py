"""Durations as operators write them: ``7d``, ``6h``, ``30s``, ``1h30m`` or ISO 8601 ``P7D``.

Short forms let a demo soak in seconds with the same code that soaks a week in production.

Every duration read here is at most :data:`MAX_DURATION` (ten years): a clock plus any duration
stays a valid ``datetime``, and its seconds fit the 32-bit columns that store them, on every
backend. A longer one, a non-finite number, or a value that is not text or a number is a
:class:`DurationError`, never an ``OverflowError`` deep in a scheduler tick.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

MAX_DURATION = timedelta(days=3650)
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_SHORT = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)")
_ISO = re.compile(
    r"P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


class DurationError(ValueError):
    """A duration that cannot be read; the message says what forms are accepted."""


def parse_duration(text: object) -> timedelta:
    """Read a duration; plain numbers are seconds. At most :data:`MAX_DURATION`."""
    if isinstance(text, timedelta):
        return _bounded(text.total_seconds(), text)
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise DurationError(f"not a duration: {_shown(text)} (use e.g. 7d, 6h, 30s or P7D)")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"duration must not be negative: {text!r}")
        return _bounded(text, text)
    raw = text.strip()
    iso = _ISO.fullmatch(raw.upper())
    if iso and raw.upper() not in ("P", "PT") and any(iso.groupdict().values()):
        seconds = sum(float(v) * _UNITS[k] for k, v in iso.groupdict().items() if v is not None)
        return _bounded(seconds, text)
    compact = raw.replace(" ", "").lower()
    if compact and _SHORT.sub("", compact) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _SHORT.findall(compact))
        return _bounded(seconds, text)
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return _bounded(float(compact), text)
    raise DurationError(
        f"not a duration: {_shown(text)} (use e.g. 7d, 6h, 30s, 1h30m or ISO 8601 like P7D, "
        "PT6H)"
    )


def _bounded(seconds: float, given: object) -> timedelta:
    """The duration, if it is finite and at most MAX_DURATION (checked before timedelta, which
    overflows far beyond it; an int is compared as it is, as float() overflows on a huge one)."""
    if seconds > MAX_DURATION.total_seconds():
        raise DurationError(f"duration too long: {_shown(given)} (at most "
                            f"{MAX_DURATION.days}d, ten years)")
    if not math.isfinite(seconds):
        raise DurationError(f"not a finite duration: {_shown(given)}")
    return timedelta(seconds=seconds)


def _shown(value: object) -> str:
    """The offending value in a message, cut short: it may be a megabyte of digits."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_duration(delta: timedelta) -> str:
    """A short human form, e.g. ``3 d 4 h`` or ``45 s``, used in excuses."""
    total = round(delta.total_seconds())
    if total < 0:
        return "-" + format_duration(-delta)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    shown = [f"{n} {u}" for n, u in parts if n]
    return " ".join(shown[:2]) if shown else "0 s"
