"""Outgoing notifications: events are stored in the delivery log, then POSTed to each target.

Raising an event (:func:`raise_event`, and the helpers the scheduler and the operator actions call)
only inserts rows, in the caller's transaction: one ``notifications`` row per configured target
whose event filter matches. So an event exists exactly when the state change that caused it
committed, and the unique ``(target, dedup_key)`` stores an event raised twice once. After the
commit a ``certifier.deliver_notifications`` task is sent; beat sends one every
``notifications.tick`` as well, which is what retries and what catches a lost message.

Sending (:func:`deliver_due`) never holds a transaction across the network: claim one attempt
(a short transaction that moves ``next_attempt_at`` past the POST's timeout, so a worker killed
mid-POST leaves the row to be retried), POST with no transaction open, record the outcome (a
second short one). The target's URL and secret are read from the configuration at send time;
the log stores only the target's name. The rules (signature, body, backoff) are in
``certifier/domain/notifications.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

import certifier
from certifier.db import models
from certifier.db.session import after_commit, session_scope
from certifier.domain import notifications as rules
from certifier.domain.clock import Clock
from certifier.domain.notifications import DeliveryState, Event
from certifier.pipeline import knowngood
from certifier.pipeline.dispatch import Dispatcher
from certifier.pipeline.errors import NotFound
from certifier.settings import NotificationsConfig, NotificationTargetConfig

log = logging.getLogger(__name__)

# A claimed attempt's row is due again this long after its POST's timeout: only a worker that
# died mid-POST leaves it claimed that long.
LEASE_MARGIN = timedelta(seconds=60)
ERROR_EXCERPT = 300  # characters of a refusing receiver's answer kept in last_error


@dataclass(frozen=True, slots=True)
class Notifier:
    """Where raised events go: the configured targets, and who sends them after the commit."""

    config: NotificationsConfig
    dispatcher: Dispatcher | None = None


def raise_event(session: Session, clock: Clock, config: NotificationsConfig, event: Event,
                subject: str, payload: Mapping[str, Any], dedup_key: str) -> list[int]:
    """Store ``event`` for every target that wants it; the ids of the rows new this time.

    ``INSERT … ON CONFLICT DO NOTHING`` on the unique (target, dedup_key): a duplicate is
    skipped without aborting the caller's transaction, on SQLite as on PostgreSQL. Flushes.
    """
    now = clock.now()
    document = {**payload, "event": event.value, "raised_at": now.isoformat()}
    rows = [{"event": event.value, "subject": subject[:200], "target": target.name,
             "dedup_key": dedup_key[:200], "payload": document,
             "state": DeliveryState.PENDING.value, "attempts": 0, "next_attempt_at": now,
             "last_status": None, "last_error": "", "created_at": now, "delivered_at": None}
            for target in config.targets if event in target.events]
    if not rows:
        return []
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (insert(models.Notification).values(rows)
                 .on_conflict_do_nothing(index_elements=["target", "dedup_key"])
                 .returning(models.Notification.id))
    return list(session.execute(statement).scalars())


def deliver_after_commit(session: Session, dispatcher: Dispatcher | None) -> None:
    """Ask for a delivery pass once this transaction commits.

    A broker error is logged, never raised: the rows are committed, and beat's next tick sends
    them anyway. A promotion must not fail because the broker is down.
    """
    if dispatcher is None:
        return

    def send() -> None:
        try:
            dispatcher.deliver_notifications()
        except Exception as exc:  # any broker error: the next beat tick delivers
            log.warning("could not send the notification task now (beat will): %s", exc)

    after_commit(session, send)


def _candidate_payload(session: Session, cand: models.Candidate, known_good: int | None,
                       summary: str, **extra: Any) -> dict[str, Any]:
    combination = knowngood.combination_of(session, cand.combination_hash)
    return {"summary": summary, "candidate": cand.id, "state": cand.state,
            "combination": dict(combination.pairs), "combination_hash": cand.combination_hash,
            "known_good": known_good, "excuses": [e.as_dict() for e in cand.excuses],
            "link": f"/candidates/{cand.id}", **extra}


def candidate_promoted(session: Session, clock: Clock, notifier: Notifier,
                       cand: models.Candidate, kg: models.KnownGood, actor: str) -> list[int]:
    """``promoted``: ``known_good`` is the new version."""
    if not notifier.config.targets:
        return []
    payload = _candidate_payload(
        session, cand, kg.version, f"candidate {cand.id} promoted to known-good #{kg.version}",
        by=actor)
    new = raise_event(session, clock, notifier.config, Event.PROMOTED, f"candidate {cand.id}",
                      payload, f"promoted:candidate:{cand.id}")
    if new:
        deliver_after_commit(session, notifier.dispatcher)
    return new


def candidate_rejected(session: Session, clock: Clock, notifier: Notifier,
                       cand: models.Candidate) -> list[int]:
    """``rejected``, and ``regressed`` as well when an excuse is a regression found by the
    numbers; ``known_good`` is the version the candidate was judged against.

    The key carries the rejection's time: a candidate re-queued by waivers and rejected again
    is a new event, while the same rejection raised twice is one.
    """
    if not notifier.config.targets:
        return []
    when = (cand.finished_at or clock.now()).isoformat()
    messages = [e.message for e in cand.excuses]
    regressions = [e.message for e in cand.excuses if e.kind == "regression"]
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    new = raise_event(
        session, clock, notifier.config, Event.REJECTED, f"candidate {cand.id}",
        _candidate_payload(session, cand, cand.base_version,
                           f"candidate {cand.id} rejected: {(messages or [''])[0]}{more}"),
        f"rejected:candidate:{cand.id}:{when}")
    if regressions:
        new += raise_event(
            session, clock, notifier.config, Event.REGRESSED, f"candidate {cand.id}",
            _candidate_payload(session, cand, cand.base_version,
                               f"candidate {cand.id} regressed: {'; '.join(regressions)}"),
            f"regressed:candidate:{cand.id}:{when}")
    if new:
        deliver_after_commit(session, notifier.dispatcher)
    return new


def known_good_revoked(session: Session, clock: Clock, notifier: Notifier, kg: models.KnownGood,
                       current: models.KnownGood | None, actor: str, reason: str) -> list[int]:
    """``revoked``: ``known_good`` is the revoked version, ``current`` the one in force now."""
    if not notifier.config.targets:
        return []
    combination = knowngood.combination_of(session, kg.combination_hash)
    now = current.version if current else None
    payload = {"summary": f"known-good #{kg.version} revoked by {actor}: {reason}",
               "known_good": kg.version, "current": now, "candidate": kg.candidate_id,
               "combination": dict(combination.pairs), "combination_hash": kg.combination_hash,
               "by": actor, "reason": reason, "excuses": [], "link": "/known-good"}
    new = raise_event(session, clock, notifier.config, Event.REVOKED, f"known-good {kg.version}",
                      payload, f"revoked:known-good:{kg.version}")
    if new:
        deliver_after_commit(session, notifier.dispatcher)
    return new


# Sending ----------------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    delivered: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Attempt:
    id: int
    event: str
    number: int  # 1 = the first attempt
    target: NotificationTargetConfig
    body: bytes


class _NoSecret(Exception):
    """The target's HMAC key cannot be read; the message says why (never the key)."""


def deliver_due(factory: sessionmaker[Session], clock: Clock, config: NotificationsConfig, *,
                environ: Mapping[str, str] = os.environ, limit: int = 50,
                budget_s: float = 30.0) -> DeliveryReport:
    """POST every due delivery once, oldest due first; what became of each attempt.

    It stops claiming after ``budget_s`` seconds (the rest waits for the next tick), so one slow
    receiver cannot keep a worker from the runs for long.
    """
    report = DeliveryReport()
    with session_scope(factory) as session:
        due = list(session.scalars(
            select(models.Notification.id)
            .where(models.Notification.state == DeliveryState.PENDING,
                   models.Notification.next_attempt_at <= clock.now())
            .order_by(models.Notification.next_attempt_at, models.Notification.id)
            .limit(limit)))
    if not due:
        return report
    deadline = time.monotonic() + budget_s
    policy = config.retry_policy()
    agent = f"Certifier/{getattr(certifier, '__version__', '0')}"
    with httpx.Client(follow_redirects=False, headers={"User-Agent": agent}) as client:
        for delivery_id in due:
            if time.monotonic() > deadline:
                break
            attempt = _claim(factory, delivery_id, clock, config, report)
            if attempt is None:
                continue
            status, error = _post(client, attempt, environ)
            state = _record(factory, attempt, status, error, clock, policy)
            {DeliveryState.DELIVERED: report.delivered, DeliveryState.FAILED: report.failed,
             DeliveryState.PENDING: report.retrying}[state].append(attempt.id)
    return report


def _claim(factory: sessionmaker[Session], delivery_id: int, clock: Clock,
           config: NotificationsConfig, report: DeliveryReport) -> _Attempt | None:
    """Take the next attempt of one due delivery (a conditional update: one worker wins)."""
    with session_scope(factory) as session:
        row = session.get(models.Notification, delivery_id)
        now = clock.now()
        if (row is None or row.state != DeliveryState.PENDING or row.next_attempt_at is None
                or row.next_attempt_at > now):
            return None
        target = config.target(row.target)
        if target is None or row.attempts >= config.max_attempts:
            row.state, row.next_attempt_at = DeliveryState.FAILED, None
            row.last_error = (f"target {row.target!r} is no longer configured" if target is None
                              else row.last_error or "the last attempt never reported back")
            report.failed.append(row.id)
            return None
        taken = session.execute(
            update(models.Notification)
            .where(models.Notification.id == delivery_id,
                   models.Notification.state == DeliveryState.PENDING,
                   models.Notification.attempts == row.attempts)
            .values(attempts=row.attempts + 1,
                    next_attempt_at=now + target.timeout + LEASE_MARGIN)
            .execution_options(synchronize_session=False))
        if cast(CursorResult[Any], taken).rowcount != 1:
            return None
        return _Attempt(row.id, row.event, row.attempts + 1, target,
                        rules.body(row.id, row.payload))


def _secret(target: NotificationTargetConfig, environ: Mapping[str, str]) -> bytes:
    if target.secret is not None:
        return target.secret.get_secret_value().encode("utf-8")
    if target.secret_file is not None:
        try:
            key = target.secret_file.read_bytes().strip()
        except OSError as exc:
            raise _NoSecret(f"cannot read secret_file {target.secret_file}: {exc.strerror}"
                            ) from None
        if not key:
            raise _NoSecret(f"secret_file {target.secret_file} is empty")
        return key
    value = environ.get(target.secret_env or "", "")
    if not value:
        raise _NoSecret(f"the environment variable {target.secret_env} is unset or empty")
    return value.encode("utf-8")


def _post(client: httpx.Client, attempt: _Attempt,
          environ: Mapping[str, str]) -> tuple[int | None, str]:
    """One signed POST; (the HTTP status or None, what went wrong or "")."""
    try:
        secret = _secret(attempt.target, environ)
    except _NoSecret as exc:
        return None, f"not sent: {exc}"
    headers = {"Content-Type": "application/json",
               "X-Certifier-Event": attempt.event,
               "X-Certifier-Delivery": str(attempt.id),
               "X-Certifier-Signature": rules.signature(secret, attempt.body)}
    timeout = attempt.target.timeout.total_seconds()
    try:
        with client.stream("POST", attempt.target.url, content=attempt.body, headers=headers,
                           timeout=timeout) as response:
            if rules.accepted(response.status_code):
                return response.status_code, ""
            return response.status_code, f"HTTP {response.status_code}: {_excerpt(response)}"
    except httpx.TimeoutException:
        return None, f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_EXCERPT]


def _excerpt(response: httpx.Response) -> str:
    """The start of a refusing receiver's answer, as one printable line."""
    data = b""
    for chunk in response.iter_raw():
        data += chunk
        if len(data) >= ERROR_EXCERPT:
            break
    text = data[:ERROR_EXCERPT].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _record(factory: sessionmaker[Session], attempt: _Attempt, status: int | None, error: str,
            clock: Clock, policy: rules.RetryPolicy) -> DeliveryState:
    """Store an attempt's outcome, unless a later attempt has taken the row meanwhile."""
    with session_scope(factory) as session:
        now = clock.now()
        step = rules.after_attempt(policy, attempt.number, status, now)
        session.execute(
            update(models.Notification)
            .where(models.Notification.id == attempt.id,
                   models.Notification.state == DeliveryState.PENDING,
                   models.Notification.attempts == attempt.number)
            .values(state=step.state.value, next_attempt_at=step.next_attempt_at,
                    last_status=status, last_error=error,
                    delivered_at=now if step.state is DeliveryState.DELIVERED else None)
            .execution_options(synchronize_session=False))
    if step.state is DeliveryState.FAILED:
        log.warning("notification %s to %s failed after %s attempts: %s", attempt.id,
                    attempt.target.name, attempt.number, error)
    return step.state


# Reading ----------------------------------------------------------------------------------------


def list_deliveries(session: Session, *, state: DeliveryState | None = None,
                    event: Event | None = None, target: str | None = None,
                    before: int | None = None, limit: int = 100
                    ) -> tuple[list[models.Notification], int | None]:
    """The delivery log, newest first; (a page, the ``before`` of the next page or None)."""
    query = select(models.Notification).order_by(models.Notification.id.desc())
    if state is not None:
        query = query.where(models.Notification.state == state.value)
    if event is not None:
        query = query.where(models.Notification.event == event.value)
    if target is not None:
        query = query.where(models.Notification.target == target)
    if before is not None:
        query = query.where(models.Notification.id < before)
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def get(session: Session, delivery_id: int) -> models.Notification:
    row = session.get(models.Notification, delivery_id)
    if row is None:
        raise NotFound(f"no notification {delivery_id}")
    return row
