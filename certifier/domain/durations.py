"""Durations as operators write them: ``7d``, ``6h``, ``30s``, ``1h30m`` or ISO 8601 ``P7D``.

Short forms let a demo soak in seconds with the same code that soaks a week in production.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_SHORT = re.compile(r"(\d+(?:\.\d+)?)(ms|w|d|h|m|s)")
_ISO = re.compile(
    r"P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


class DurationError(ValueError):
    """A duration that cannot be read; the message says what forms are accepted."""


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Read a duration; plain numbers are seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise DurationError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"duration must not be negative: {text!r}")
        return timedelta(seconds=text)
    raw = text.strip()
    iso = _ISO.fullmatch(raw.upper())
    if iso and raw.upper() not in ("P", "PT") and any(iso.groupdict().values()):
        seconds = sum(float(v) * _UNITS[k] for k, v in iso.groupdict().items() if v is not None)
        return timedelta(seconds=seconds)
    compact = raw.replace(" ", "").lower()
    if compact and _SHORT.sub("", compact) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _SHORT.findall(compact))
        return timedelta(seconds=seconds)
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return timedelta(seconds=float(compact))
    raise DurationError(
        f"not a duration: {text!r} (use e.g. 7d, 6h, 30s, 1h30m or ISO 8601 like P7D, PT6H)"
    )


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
