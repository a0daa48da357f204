"""Who may change things over the API: bearer tokens with scopes (``certifier/pipeline/tokens``).

Reads stay open. Every mutating endpoint depends on :data:`OperatorDep` or :data:`AdminDep`,
which answer 401 (no token, or an unknown, expired or revoked one — the reason is in the body)
or 403 (a valid token with too small a scope). Tokens come from the ``api_tokens`` table
(``certifier token create``) and from ``CERTIFIER_API_TOKENS``; both hold only hashes of the
secrets. A secret is never logged: the audit log and the answers name the token, not its secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header
from starlette.exceptions import HTTPException

from certifier.api.deps import ClockDep, ContextDep, SessionDep
from certifier.pipeline.tokens import Principal, Scope, TokenRefused, authenticate

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(scope: Scope) -> Callable[..., Principal]:
    """A dependency that lets through a bearer token of at least ``scope``."""

    def check(
        context: ContextDep,
        session: SessionDep,
        clock: ClockDep,
        authorization: Annotated[str | None, Header(description="Bearer <token>")] = None,
    ) -> Principal:
        scheme, _, presented = (authorization or "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise HTTPException(401, f"this action needs a token with the {scope} scope: "
                                     "Authorization: Bearer <token> (see `certifier token "
                                     "create`)", headers=_CHALLENGE)
        try:
            principal = authenticate(session, context.configured_tokens, presented, clock.now())
        except TokenRefused as exc:
            raise HTTPException(401, str(exc), headers=_CHALLENGE) from None
        if not principal.scope.includes(scope):
            raise HTTPException(403, f"token {principal.name!r} has the {principal.scope} "
                                     f"scope; this action needs {scope}")
        return principal

    return check


OperatorDep = Annotated[Principal, Depends(require(Scope.OPERATE))]
AdminDep = Annotated[Principal, Depends(require(Scope.ADMIN))]
