"""API bearer tokens: scopes, hashed storage, and checking a presented token.

Only the SHA-256 of a secret is stored (in ``api_tokens``, or in ``CERTIFIER_API_TOKENS``), so a
database dump or a leaked environment does not hand out working tokens; a secret is printed once,
when ``certifier token create`` makes it. SHA-256 without salt or stretching is enough here
because secrets are 256 random bits, not passwords a person chose.

Scopes nest: ``admin`` ⊇ ``operate`` ⊇ ``read``. Reads of the API are open today; ``read`` exists
so that a token can be handed to a reader the day they are not.

``CERTIFIER_API_TOKENS`` entries are ``name[/scope]:sha256:<hex>`` (the recommended form, printed
by ``certifier token create --print-config``) or ``name[/scope]:<secret>`` (a plain secret of at
least 16 characters, hashed when the settings are read); the scope defaults to ``operate``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.pipeline.errors import Conflict, Invalid, NotFound
from certifier.pipeline.toolbox import write_lock

MIN_SECRET_LENGTH = 16
SECRET_PREFIX = "cft_"  # noqa: S105 - a marker that makes leaked secrets greppable
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}\Z")
_HEX = re.compile(r"^[0-9a-f]{64}\Z")


class Scope(StrEnum):
    READ = "read"
    OPERATE = "operate"
    ADMIN = "admin"

    def includes(self, other: Scope) -> bool:
        return _RANK[self] >= _RANK[other]


_RANK = {Scope.READ: 0, Scope.OPERATE: 1, Scope.ADMIN: 2}


class TokenRefused(Exception):
    """The presented token is unknown, expired or revoked; the message says which."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's name (what the audit log records) and its scope."""

    name: str
    scope: Scope

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


@dataclass(frozen=True, slots=True)
class ConfiguredToken:
    name: str
    scope: Scope
    secret_sha256: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def parse_configured(text: str) -> list[ConfiguredToken]:
    """Tokens from ``CERTIFIER_API_TOKENS``; malformed entries and short secrets are skipped."""
    tokens: list[ConfiguredToken] = []
    for entry in text.split(","):
        head, sep, rest = entry.strip().partition(":")
        name, _, scope_text = head.strip().partition("/")
        rest = rest.strip()
        if not sep or not name or not rest:
            continue
        try:
            scope = Scope(scope_text.strip() or Scope.OPERATE)
        except ValueError:
            continue
        kind, _, digest = rest.partition(":")
        if kind == "sha256" and _HEX.match(digest.lower()):
            tokens.append(ConfiguredToken(name, scope, digest.lower()))
        elif len(rest) >= MIN_SECRET_LENGTH:
            tokens.append(ConfiguredToken(name, scope, hash_secret(rest)))
    return tokens


def authenticate(session: Session, configured: list[ConfiguredToken], presented: str,
                 now: datetime) -> Principal:
    """The principal a presented secret belongs to; :class:`TokenRefused` if none."""
    digest = hash_secret(presented)
    found: Principal | None = None
    for token in configured:  # every entry is compared: the time does not say which matched
        if hmac.compare_digest(token.secret_sha256, digest):
            found = Principal(token.name, token.scope)
    if found is not None:
        return found
    # The lookup is by the digest of a secret, not the secret: timing reveals nothing usable.
    row = session.scalar(select(models.ApiToken).where(models.ApiToken.secret_sha256 == digest))
    if row is None or not hmac.compare_digest(row.secret_sha256, digest):
        raise TokenRefused("unknown API token")
    if row.revoked_at is not None:
        raise TokenRefused(f"API token {row.name!r} was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenRefused(f"API token {row.name!r} expired at {row.expires_at.isoformat()}")
    row.last_used_at = now
    return Principal(row.name, Scope(row.scope))


def create(
    session: Session, clock: Clock, name: str, scope: Scope,
    expires_in: timedelta | None = None, created_by: str = "",
) -> tuple[models.ApiToken, str]:
    """A new token and its secret; the secret is not stored and cannot be shown again."""
    if not _NAME.match(name):
        raise Invalid(f"token name {name!r}: use letters, digits, '_', '.', '@' or '-' "
                      "(at most 63)")
    if session.scalar(select(models.ApiToken.id).where(models.ApiToken.name == name)):
        raise Conflict(f"a token named {name!r} exists already (revoke it, or pick another name)")
    secret = new_secret()
    now = clock.now()
    row = models.ApiToken(name=name, scope=scope.value, secret_sha256=hash_secret(secret),
                          created_at=now, created_by=created_by,
                          expires_at=now + expires_in if expires_in is not None else None)
    session.add(row)
    session.flush()
    return row, secret


def list_tokens(session: Session) -> list[models.ApiToken]:
    return list(session.scalars(select(models.ApiToken).order_by(models.ApiToken.name)))


def revoke(session: Session, clock: Clock, name: str) -> models.ApiToken:
    """Revoke a token by name (idempotent: an already revoked one keeps its first time)."""
    write_lock(session)  # two revocations take turns: the first one's time stands
    row = session.scalar(select(models.ApiToken).where(models.ApiToken.name == name)
                         .with_for_update())
    if row is None:
        raise NotFound(f"no API token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
    return row
