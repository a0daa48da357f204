"""Known-good versions and the manifest operators pull.

Promotion is a compare-and-swap: it succeeds only if the known-good has not moved since the
candidate was based on it, and the version's primary key makes a second known-good with the same
number impossible, so two racing promotions can never both win. The check and the new number are
read under a promotion lock: without it, under READ COMMITTED, a promotion could pass the check
against #1 just before a rival committed #2 and then number itself #3 (seen in
tests/faults/test_concurrent_promotion.py).

A combination a person marked bad is never promoted: :func:`promote` refuses it whatever the
caller, so neither the scheduler nor a forced promotion by hand can publish it. Marking bad
(``actions.mark_bad``) takes the same promotion lock before it looks for a known-good of the
combination, so a promotion and a mark-bad racing each other cannot both commit: whichever comes
second sees the first (a ``MarkedBad`` refusal, or "revoke it first").

Lock order on PostgreSQL, everywhere: the passes' lock (``toolbox.pass_lock``, which every
scheduler pass and every person's action takes first, so they take turns), then the candidate's
row (marking bad: then its combination's), then the promotion lock. :func:`promote` locks the
candidate's row itself: a scheduler pass reads its candidates without ``FOR UPDATE``. Both
races are tested in tests/pipeline/test_mark_bad_race.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, selectinload

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.combination import Combination
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline.dispatch import known_good_changed
from certifier.pipeline.errors import Conflict, NotFound
from certifier.pipeline.toolbox import write_lock

_PROMOTION_LOCK_KEY = 0x6B676F6F  # "kgoo"; not the scheduler's key, so a pass may take both


def current(session: Session, at: datetime | None = None) -> models.KnownGood | None:
    """The newest unrevoked known-good (as of ``at``, when given)."""
    query = select(models.KnownGood).order_by(models.KnownGood.version.desc()).limit(1)
    if at is None:
        query = query.where(models.KnownGood.revoked_at.is_(None))
    else:
        query = query.where(
            models.KnownGood.promoted_at <= at,
            (models.KnownGood.revoked_at.is_(None)) | (models.KnownGood.revoked_at > at),
        )
    return session.scalar(query)


def get(session: Session, version: int) -> models.KnownGood:
    kg = session.get(models.KnownGood, version)
    if kg is None:
        raise NotFound(f"no known-good version {version}")
    return kg


def history(session: Session) -> list[models.KnownGood]:
    return list(session.scalars(select(models.KnownGood).order_by(models.KnownGood.version.desc())))


def combination_of(session: Session, combination_hash: str) -> Combination:
    rows = session.execute(
        select(models.Component.name, models.Commit.sha)
        .join(models.CombinationItem, models.CombinationItem.component_id == models.Component.id)
        .join(models.Commit, models.Commit.id == models.CombinationItem.commit_id)
        .where(models.CombinationItem.combination_hash == combination_hash)
    ).all()
    return Combination.of({str(name): str(sha) for name, sha in rows})


@dataclass(frozen=True, slots=True)
class SourceRef:
    """One component commit of a known-good: what the archive keeps (``workers/archive.py``)."""

    name: str
    url: str
    sha: str


def sources(session: Session) -> list[tuple[int, tuple[SourceRef, ...]]]:
    """Every known-good's component commits, newest version first (revoked ones too: they stay
    in the history, and ``?at=`` still serves them)."""
    rows = session.execute(
        select(models.KnownGood.version, models.Component.name, models.Component.url,
               models.Commit.sha)
        .join(models.CombinationItem,
              models.CombinationItem.combination_hash == models.KnownGood.combination_hash)
        .join(models.Component, models.Component.id == models.CombinationItem.component_id)
        .join(models.Commit, models.Commit.id == models.CombinationItem.commit_id)
        .order_by(models.KnownGood.version.desc(), models.Component.name)
    ).all()
    found: dict[int, list[SourceRef]] = {}
    for version, name, url, sha in rows:
        found.setdefault(int(version), []).append(SourceRef(str(name), str(url), str(sha)))
    return [(version, tuple(refs)) for version, refs in found.items()]


class MarkedBad(Conflict):
    """Refused: a person marked the combination bad (see ``actions.mark_bad``)."""


class CandidateEnded(Conflict):
    """Refused: the candidate ended (cancelled, say) after the caller read it."""


def bad_message(combo: models.Combination) -> str:
    when = combo.bad_at.isoformat() if combo.bad_at else "an unknown time"
    return (f"combination {combo.hash[:12]} was marked bad by {combo.bad_by} at {when}: "
            f"{combo.bad_reason}; it is never promoted")


def refuse_bad(session: Session, combination_hash: str) -> None:
    """Raise :class:`MarkedBad` (a 409 over the API) if the combination is marked bad.

    Read from the database, not the session's cache: a scheduler pass loads the combination
    early (formation) and would otherwise miss a mark committed since, even under the lock.
    """
    combo = session.get(models.Combination, combination_hash, populate_existing=True)
    if combo is not None and combo.bad_at is not None:
        raise MarkedBad(bad_message(combo))


def serving(session: Session, combination_hash: str) -> models.KnownGood | None:
    """The unrevoked known-good of this combination, if any: the manifest serves it now, or
    falls back to it when newer ones are revoked."""
    return session.scalar(select(models.KnownGood).where(
        models.KnownGood.combination_hash == combination_hash,
        models.KnownGood.revoked_at.is_(None)).limit(1))


def promote(
    session: Session, candidate: models.Candidate, clock: Clock, reason: str
) -> models.KnownGood:
    """Make ``candidate`` the next known-good version, if its base is still current and its
    combination is not marked bad."""
    _lock_candidate(session, candidate.id)
    lock(session)
    refuse_bad(session, candidate.combination_hash)
    # The caller's copy may be stale: a person may have cancelled the candidate since it was
    # read (marking bad cancels too; that is refused just above, with its reason). Read the
    # state again now that its row is locked (a column read is never cached).
    state = session.scalar(select(models.Candidate.state)
                           .where(models.Candidate.id == candidate.id))
    if state is None or CandidateState(state).is_final:
        raise CandidateEnded(f"candidate {candidate.id} is {state}: it cannot be promoted")
    now = current(session)
    now_version = now.version if now else None
    if candidate.base_version != now_version:
        raise Conflict(
            f"candidate {candidate.id} was formed on known-good #{candidate.base_version} but the "
            f"known-good is now #{now_version}; it must be re-gated against the new base"
        )
    top = session.scalar(select(func.max(models.KnownGood.version))) or 0
    kg = models.KnownGood(
        version=top + 1,
        candidate_id=candidate.id,
        combination_hash=candidate.combination_hash,
        promoted_at=clock.now(),
        reason=reason,
    )
    session.add(kg)
    session.flush()  # a racing promotion fails here on the primary key
    known_good_changed(session)
    return kg


def _lock_candidate(session: Session, candidate_id: int) -> None:
    """Lock the candidate's row before the promotion lock (the module docstring's lock order).

    PostgreSQL only: SQLite has one writer at a time, the promotion lock is its write lock, and
    a read before it in the same transaction would turn a wait for that lock into an error
    ("database is locked") whenever another writer commits meanwhile.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(models.Candidate.id).where(models.Candidate.id == candidate_id)
                        .with_for_update())


def lock(session: Session) -> None:
    """Serialize promotions until the transaction ends, so that reads after it see the last
    winner; ``actions.mark_bad`` takes it too, so it sees a promotion that is committing."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PROMOTION_LOCK_KEY})
    else:  # SQLite: the write lock before reading, as the scheduler does
        write_lock(session)


DEFAULT_VALIDITY = timedelta(days=7)  # manifest.validity


def manifest(session: Session, kg: models.KnownGood, now: datetime,
             validity: timedelta = DEFAULT_VALIDITY) -> dict[str, Any]:
    """The manifest document: what an operator deploys, with its validity (the envelope:
    ``revoked_at``, ``issued_at``, ``expires_at``) inside the bytes that get signed."""
    combo = session.scalar(
        select(models.Combination)
        .where(models.Combination.hash == kg.combination_hash)
        .options(
            selectinload(models.Combination.items).selectinload(models.CombinationItem.component),
            selectinload(models.Combination.items).selectinload(models.CombinationItem.commit),
        )
    )
    assert combo is not None
    components = sorted(
        (
            {
                "name": item.component.name,
                "source": item.component.source,
                "url": item.component.url,
                "branch": item.component.branch,
                "sha": item.commit.sha,
                "title": item.commit.title,
                "committed_at": item.commit.committed_at.isoformat()
                if item.commit.committed_at else None,
                # Upstream lost the commit (a force-push took it off the branch, or a worker
                # found it missing): still deployable from Certifier's archive (workers/archive).
                "gone_upstream": item.commit.gone_at is not None,
                "gone_upstream_at": item.commit.gone_at.isoformat()
                if item.commit.gone_at else None,
            }
            for item in combo.items
        ),
        key=lambda c: str(c["name"]),
    )
    issued_at, expires_at = issue_window(now, validity, kg.promoted_at, kg.revoked_at)
    return {
        "version": kg.version,
        "promoted_at": kg.promoted_at.isoformat(),
        "combination": kg.combination_hash,
        "candidate": kg.candidate_id,
        "revoked_at": kg.revoked_at.isoformat() if kg.revoked_at else None,
        "issued_at": issued_at.isoformat(),
        "expires_at": expires_at.isoformat(),
        "components": components,
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def issue_window(now: datetime, validity: timedelta,
                 *not_before: datetime | None) -> tuple[datetime, datetime]:
    """(issued_at, expires_at) of a manifest signed ``now``.

    ``issued_at`` is the start of the current half-validity period (counted from the epoch, and
    never before the promotion or revocation the document states), so a document is signed again
    every ``validity / 2``: within a period every API process renders the same bytes (one ETag,
    and a poller's 304 stays right), and a copy fetched at any time is valid for at least half of
    ``validity`` — TUF's timestamp role, re-signed on a schedule.
    """
    half = validity / 2
    start = _EPOCH + ((now - _EPOCH) // half) * half
    issued = max([start, *(t for t in not_before if t is not None)])
    return issued, issued + validity


ENVELOPE = ("revoked_at", "issued_at", "expires_at")


def envelope_of(body: bytes) -> dict[str, str | None]:
    """The envelope fields of a served manifest, in any of its formats (JSON, YAML, env lines,
    CSV); a field the bytes do not carry is absent. Raises ``ValueError`` for bytes that are
    no manifest."""
    text = body.decode("utf-8")
    if text.startswith("CERTIFIER_MANIFEST_"):  # env lines
        pairs = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
        return {k: pairs[f"CERTIFIER_MANIFEST_{k.upper()}"] or None for k in ENVELOPE
                if f"CERTIFIER_MANIFEST_{k.upper()}" in pairs}
    if text.startswith("component,"):  # CSV: every row repeats the envelope
        rows = list(csv.DictReader(io.StringIO(text)))
        first = rows[0] if rows else {}
        return {k: first[k] or None for k in ENVELOPE if k in first}
    document = yaml.safe_load(text)  # YAML reads the JSON form too
    if not isinstance(document, dict):
        raise ValueError("not a manifest")
    return {k: None if document[k] is None else str(document[k]) for k in ENVELOPE
            if k in document}


def freshness_problem(envelope: dict[str, str | None], now: datetime) -> str | None:
    """Why a manifest with a good signature must still not be deployed, or None.

    A revoked known-good, an expired signature, or a manifest signed before manifests carried
    their validity (no ``expires_at``: nothing says it is still current).
    """
    if envelope.get("revoked_at"):
        return (f"REVOKED at {envelope['revoked_at']}: this known-good must not be deployed; "
                "fetch the current manifest")
    expires = envelope.get("expires_at")
    if not expires:
        return "carries no expires_at: it cannot be shown to be current; fetch it again"
    try:
        until = _aware(datetime.fromisoformat(expires))
    except ValueError:
        return f"its expires_at is not a time: {expires[:40]!r}"
    if now >= until:
        return (f"EXPIRED at {until.isoformat()} (issued {envelope.get('issued_at')}): "
                "fetch a fresh copy")
    return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def etag(document: dict[str, Any]) -> str:
    body = json.dumps(document, sort_keys=True).encode()
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
