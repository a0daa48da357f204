"""Webhook deliveries: stored before they are acknowledged, processed by a worker, swept if lost.

:func:`receive` runs in the request: it verifies the signature, parses the JSON, deduplicates,
classifies (not tracked, tag, untracked branch: ignored with the reason at once) and stores the
delivery; the router commits and only then answers 2xx and sends the processing task. A
refused delivery stores nothing but a counter (``webhook_rejections``). :func:`process` runs in
the worker; :func:`sweep` (beat) sends again every stored delivery still pending after
``redispatch_after``, so a broker outage or a lost task delays a push but never loses it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, selectinload, sessionmaker

from certifier.db import models
from certifier.db.session import after_commit, session_scope
from certifier.domain.clock import Clock
from certifier.limits import load_json
from certifier.pipeline.dispatch import Dispatcher, reconcile_after_commit
from certifier.settings import TrackingConfig
from certifier.tracking import events, webhooks
from certifier.tracking.events import SourceFactory
from certifier.tracking.sources import SourceError, storable
from certifier.tracking.webhooks import Forge, Ignored, RefUpdate

log = logging.getLogger(__name__)

PENDING, PROCESSED = "pending", "processed"
MAX_ATTEMPTS = 10


def send_after_commit(session: Session, send: Callable[[], None], what: str) -> None:
    """Send a task once the transaction commits; a broker failure is logged, never raised.

    The row is committed by then, so the sweep (or the next poll) sends it again later: a
    webhook must never be answered 500 because the broker is down.
    """

    def guarded() -> None:
        try:
            send()
        except Exception as exc:  # any broker error: the sweep resends it
            log.warning("could not send %s now (will be swept): %s", what, exc)

    after_commit(session, guarded)


def dispatch_delivery(session: Session, dispatcher: Dispatcher, delivery_id: int) -> None:
    send_after_commit(session, lambda: dispatcher.process_delivery(delivery_id),
                      f"delivery {delivery_id}")


@dataclass
class Receipt:
    """The answer to one delivery: status code and JSON body; ``dispatch``: send the task."""

    status: int
    body: dict[str, Any]
    delivery_id: int | None = None
    dispatch: bool = False


def forge_components(session: Session, forge: str) -> list[models.Component]:
    """The components tracked on this forge (one query: secrets and matching both need it)."""
    return list(session.scalars(select(models.Component).where(
        models.Component.source == forge, models.Component.removed_at.is_(None))
        .order_by(models.Component.id)))


def secret_names(forge: Forge, config: TrackingConfig, tracked: list[models.Component]
                 ) -> list[str]:
    """The environment variables whose values authenticate this forge's webhooks."""
    return [str(getattr(config, f"{forge}_secret_env"))] + [
        c.webhook_secret_env for c in tracked if c.webhook_secret_env]


def count_rejection(session: Session, forge: str, reason: str, clock: Clock) -> None:
    """One more refused delivery for (forge, reason): an upsert, safe under concurrency."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    row = models.WebhookRejection
    now = clock.now()
    statement = insert(row).values(source=forge, reason=reason, count=1, last_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=["source", "reason"], set_={"count": row.count + 1, "last_at": now})
    session.execute(statement)


def matching(tracked: list[models.Component], project: str | None) -> list[models.Component]:
    """The components among ``tracked`` whose project path is ``project``."""
    if project is None:
        return []
    return [c for c in tracked if events.project_path(c) == project]


def receive(session: Session, forge: Forge, headers: Mapping[str, str], body: bytes,
            query_token: str | None, clock: Clock, config: TrackingConfig,
            environ: Mapping[str, str]) -> Receipt:
    """Verify, parse, deduplicate, classify and store one delivery; flushes.

    Three round trips in the common case — the forge's components, one ``INSERT … ON CONFLICT
    DO NOTHING RETURNING id`` (the unique key deduplicates, even between racing requests), and
    the commit — because a webhook endpoint lives on how fast it stores.
    """
    tracked = forge_components(session, forge)
    secrets = [environ.get(name, "") for name in secret_names(forge, config, tracked)]
    if not webhooks.verify(forge, headers, body, query_token, secrets):
        reason = "no_secret" if not any(secrets) else "bad_signature"
        count_rejection(session, forge, reason, clock)
        detail = (f"no {forge} webhook secret is configured" if reason == "no_secret"
                  else "missing or invalid webhook signature")
        return Receipt(401, {"detail": detail})
    try:
        payload = load_json(body)  # refuses nesting that would exhaust the parser's recursion
        if not isinstance(payload, dict):
            raise ValueError("the payload is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        count_rejection(session, forge, "malformed", clock)
        return Receipt(400, {"detail": f"malformed JSON payload: {exc}"[:300]})
    key = webhooks.dedup_key(forge, headers, body)
    event = webhooks.event_name(forge, headers, payload)
    parsed = webhooks.parse(forge, event, payload)
    now = clock.now()
    row: dict[str, Any] = {
        "source": forge, "event": event, "dedup_key": key, "received_at": now,
        "state": PROCESSED, "outcome": "", "component_id": None, "dispatched_at": None,
        "headers": {k: headers[k][:300] for k in webhooks.KEPT_HEADERS if k in headers},
        "body": body.decode("utf-8"), "attempts": 0, "replays": 0}
    if isinstance(parsed, Ignored):
        row.update(project=parsed.project, ref=parsed.ref, outcome=f"ignored: {parsed.reason}")
    else:
        row.update(project=parsed.project, ref=f"refs/heads/{parsed.branch}")
        same_project = matching(tracked, parsed.project)
        on_branch = [c for c in same_project if c.branch == parsed.branch]
        if not same_project:
            row["outcome"] = "ignored: not tracked"
        elif not on_branch:
            row.update(outcome=f"ignored: untracked branch {parsed.branch}",
                       component_id=same_project[0].id)
        else:
            row.update(state=PENDING, component_id=on_branch[0].id, dispatched_at=now)
    # A payload's event name, or the project and ref of an ignored push, may hold a NUL byte.
    row.update({k: storable(v) for k, v in row.items() if isinstance(v, str)})
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    delivery_id = session.execute(
        insert(models.Delivery).values(**row)
        .on_conflict_do_nothing(index_elements=["source", "dedup_key"])
        .returning(models.Delivery.id)).scalar_one_or_none()
    if delivery_id is None:  # stored before (or just now, by a racing request): a replay
        duplicate = _duplicate(session, forge, key, clock)
        assert duplicate is not None
        return duplicate
    status = "accepted" if row["state"] == PENDING else str(row["outcome"])
    return Receipt(202, {"status": status, "delivery": delivery_id}, delivery_id,
                   row["state"] == PENDING)


def _duplicate(session: Session, forge: str, key: str, clock: Clock) -> Receipt | None:
    # One atomic UPDATE: a read-modify-write of ``replays`` would lose the counts of
    # concurrent replays on PostgreSQL (each reads the same value and writes it plus one).
    row = models.Delivery
    found = session.execute(
        update(row).where(row.source == forge, row.dedup_key == key)
        .values(replays=row.replays + 1, last_replay_at=clock.now())
        .returning(row.id).execution_options(synchronize_session=False)).scalar_one_or_none()
    if found is None:
        return None
    return Receipt(200, {"status": "duplicate", "delivery": found}, found)


@dataclass
class _Target:
    component_id: int
    spec: Any
    known: str | None


@dataclass
class Processed:
    outcome: str
    new_commits: list[str] = field(default_factory=list)


def process(factory: sessionmaker[Session], delivery_id: int, sources: SourceFactory | None,
            clock: Clock, dispatcher: Dispatcher, limit: int = 200) -> Processed:
    """Apply one stored delivery (idempotent: a processed delivery is left alone).

    Three short transactions: claim an attempt, look at the source (no transaction open while
    the network is slow), apply. A reconcile pass is asked for if anything moved.
    """
    with session_scope(factory) as session:
        # Locked, so two copies of one task (a redelivery racing the sweep) count their attempts
        # one after the other; applying is idempotent, so the second copy changes nothing.
        delivery = session.get(models.Delivery, delivery_id, with_for_update=True)
        if delivery is None:
            return Processed("no such delivery")
        if delivery.state == PROCESSED:
            return Processed(delivery.outcome)
        delivery.attempts += 1
        if delivery.attempts > MAX_ATTEMPTS:
            delivery.state, delivery.processed_at = PROCESSED, clock.now()
            delivery.outcome = f"failed: gave up after {MAX_ATTEMPTS} attempts"
            return Processed(delivery.outcome)
        forge = cast(Forge, delivery.source)
        parsed = webhooks.parse(forge, delivery.event, json.loads(delivery.body))
        targets: list[_Target] = []
        if isinstance(parsed, RefUpdate):
            for component in matching(forge_components(session, forge), parsed.project):
                if component.branch == parsed.branch:
                    state = events.tracking_state(session, component.id, lock=False)
                    targets.append(_Target(component.id, events.spec_of(component),
                                           state.head_sha))
    if not isinstance(parsed, RefUpdate) or not targets:
        reason = parsed.reason if isinstance(parsed, Ignored) else "not tracked"
        return _finish(factory, delivery_id, clock, f"ignored: {reason}", [], dispatcher)
    try:
        return _apply(factory, delivery_id, parsed, targets, sources, clock, dispatcher, limit)
    except Exception as exc:
        if events.database_down(exc):
            raise
        log.exception("processing delivery %s failed", delivery_id)
        error = events.UNEXPECTED.format(what=f"processing delivery {delivery_id}",
                                         kind=type(exc).__name__)
        return _failed(factory, delivery_id, [t.component_id for t in targets], clock, error)


def _failed(factory: sessionmaker[Session], delivery_id: int, component_ids: list[int],
            clock: Clock, error: str) -> Processed:
    """Record a processing failure on the delivery (pending, so the sweep tries it again, up
    to MAX_ATTEMPTS) and as its components' ``last_error``."""
    with session_scope(factory) as session:
        delivery = session.get(models.Delivery, delivery_id)
        if delivery is not None and delivery.state != PROCESSED:
            delivery.outcome = f"error (attempt {delivery.attempts}): {error}"[:500]
            if delivery.attempts >= MAX_ATTEMPTS:
                delivery.state, delivery.processed_at = PROCESSED, clock.now()
                delivery.outcome = f"failed: {error}"[:500]
        for component_id in component_ids:
            events.tracking_state(session, component_id).last_error = \
                f"webhook delivery {delivery_id}: {error}"
    return Processed(f"error: {error}")


def _apply(factory: sessionmaker[Session], delivery_id: int, parsed: RefUpdate,
           targets: list[_Target], sources: SourceFactory | None, clock: Clock,
           dispatcher: Dispatcher, limit: int) -> Processed:
    observations = []
    for target in targets:
        source = None
        if sources is not None:
            try:
                source = sources(target.spec)
            except SourceError as exc:
                log.warning("no source for %s: %s", target.spec.name, exc)
        observations.append((target, events.observe_push(parsed, target.known, source, limit)))
    outcomes, new = [], []
    with session_scope(factory) as session:
        for target, obs in observations:
            row = session.get(models.Component, target.component_id)
            if row is None:
                continue
            applied = events.apply(session, row, obs, clock, "webhook")
            new += applied.new_commits
            outcomes.append(applied.outcome if len(targets) == 1
                            else f"{row.name}: {applied.outcome}")
    return _finish(factory, delivery_id, clock, "; ".join(outcomes) or "not tracked", new,
                   dispatcher)


def _finish(factory: sessionmaker[Session], delivery_id: int, clock: Clock, outcome: str,
            new: list[str], dispatcher: Dispatcher) -> Processed:
    with session_scope(factory) as session:
        delivery = session.get(models.Delivery, delivery_id)
        if delivery is not None and delivery.state != PROCESSED:
            delivery.state, delivery.processed_at = PROCESSED, clock.now()
            delivery.outcome = storable(outcome[:500])
        # Always ask: a moved head (even to a known commit) may call for a new candidate.
        reconcile_after_commit(session, dispatcher)
    return Processed(outcome, new)


def sweep(session: Session, clock: Clock, redispatch_after: timedelta, dispatcher: Dispatcher,
          limit: int = 500) -> list[int]:
    """Send again the deliveries stored but still pending after ``redispatch_after``."""
    cutoff = clock.now() - redispatch_after
    waiting: ColumnElement[bool] = models.Delivery.dispatched_at.is_(None) \
        | (models.Delivery.dispatched_at < cutoff)
    found = list(session.scalars(select(models.Delivery).where(
        models.Delivery.state == PENDING, waiting).order_by(models.Delivery.id).limit(limit)))
    for delivery in found:
        delivery.dispatched_at = clock.now()
        dispatch_delivery(session, dispatcher, delivery.id)
    session.flush()
    return [d.id for d in found]


def list_deliveries(session: Session, source: str | None = None, state: str | None = None,
                    limit: int = 100, before: int | None = None) -> list[models.Delivery]:
    """The newest deliveries first (GitLab's "recent events"), optionally filtered."""
    query = (select(models.Delivery).order_by(models.Delivery.id.desc()).limit(limit)
             .options(selectinload(models.Delivery.component)))
    if source is not None:
        query = query.where(models.Delivery.source == source)
    if state is not None:
        query = query.where(models.Delivery.state == state)
    if before is not None:
        query = query.where(models.Delivery.id < before)
    return list(session.scalars(query))


def rejections(session: Session) -> list[models.WebhookRejection]:
    return list(session.scalars(select(models.WebhookRejection).order_by(
        models.WebhookRejection.source, models.WebhookRejection.reason)))
