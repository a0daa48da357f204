"""What the HTTP access log may show: request lines without the secrets a query can carry.

Gerrit's webhooks plugin cannot sign, so its shared secret travels as ``?token=`` in the URL
(docs/tracking.md), and uvicorn's access log writes every request line with its query string.
:class:`RedactQuerySecrets` blanks the value of such parameters in each record before it is
formatted, so ``certifier serve`` never writes a secret to its log, whatever the log level.
A parameter's name is compared after percent-decoding, as the app reads it: ``?%74oken=`` is
``token`` to Starlette, so it is blanked too.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

# Query parameters whose value is a credential: ours (``token``) and the usual ones of forges.
SECRET_PARAMS = ("token", "access_token", "private_token", "secret", "password")
_QUERY_PARAM = re.compile(r"([?&])([^=&#\s\"]*)=([^&#\s\"]*)")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced."""

    def blank(match: re.Match[str]) -> str:
        name = unquote_plus(match.group(2)).strip().lower()
        if name in SECRET_PARAMS:
            return f"{match.group(1)}{match.group(2)}={REDACTED}"
        return match.group(0)

    return _QUERY_PARAM.sub(blank, text)


class RedactQuerySecrets(logging.Filter):
    """A filter for ``uvicorn.access`` (or any logger) that redacts secret query parameters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install(logger_name: str = "uvicorn.access") -> None:
    """Attach the filter to ``logger_name`` once (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
        logger.addFilter(RedactQuerySecrets())
