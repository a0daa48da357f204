"""Who may change things over the API: bearer tokens from ``CERTIFIER_API_TOKENS``.

This is the first, deliberately small form of the design's scoped tokens (``read``, ``operate``,
``admin``, which come with the verdicts work): every configured token may ``operate`` — today
that means arming and releasing autoholds, which keep root-owned namespaces alive and hold a
testbed's lease. Reads stay open, as the rest of the API is. With no token configured the
operate endpoints refuse every call (fail closed) and say how to enable them; the ``certifier
hold`` CLI on the server works without a token, as the database's owner.

``CERTIFIER_API_TOKENS`` is ``name:secret[,name:secret…]``; the name is what the audit log
records as the actor, never the secret. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header
from starlette.exceptions import HTTPException

from certifier.api.deps import ContextDep

MIN_SECRET_LENGTH = 16


def parse_tokens(text: str) -> dict[str, str]:
    """``{secret: name}`` from ``name:secret,…``; entries without a usable secret are skipped."""
    tokens: dict[str, str] = {}
    for entry in text.split(","):
        name, sep, secret = entry.strip().partition(":")
        if sep and name.strip() and len(secret.strip()) >= MIN_SECRET_LENGTH:
            tokens[secret.strip()] = name.strip()
    return tokens


def require_operate(
    context: ContextDep,
    authorization: Annotated[str | None, Header(description="Bearer <token>")] = None,
) -> str:
    """The caller's name if it holds an ``operate`` token; 401/403 otherwise."""
    tokens = parse_tokens(context.settings.api_tokens)
    if not tokens:
        raise HTTPException(403, "operator actions over the API are disabled: no API tokens are "
                                 "configured (set CERTIFIER_API_TOKENS=name:secret, or use "
                                 "`certifier hold` on the server)")
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise HTTPException(401, "this action needs an operate token: "
                                 "Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    presented = presented.strip()
    for secret, name in tokens.items():
        if hmac.compare_digest(secret.encode(), presented.encode()):
            return f"token:{name}"
    raise HTTPException(401, "unknown API token", headers={"WWW-Authenticate": "Bearer"})


OperatorDep = Annotated[str, Depends(require_operate)]
