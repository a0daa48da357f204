"""Polling: every component on its own interval, backing off on errors, waiting out rate limits.

Beat sends :func:`due` every ``tracking.poll_tick``; it claims the components whose
``next_poll_at`` has come (pushing it one interval ahead, so a slow poll is not sent twice) and
the worker runs :func:`poll` for each. A poll compares the upstream head with the head tracking
knows and applies the difference through :mod:`certifier.tracking.events`, exactly as a webhook
does, so a push whose webhook never came is caught within one interval and the same commit seen
both ways stays one commit.

Errors back off exponentially (interval x 2^failures, at most ``poll_max_backoff``); a rate
limit waits for the time the source named (``Retry-After`` or the reset time); a source that
answered with its last request of the window (``RateLimit-Remaining: 0``) is not asked again
before the window resets. No failure is silent: any exception while asking the source or
applying what it said (not only a :class:`SourceError`) counts in ``poll_failures`` and sets
``last_error`` — with a generic message for the unexpected ones, the traceback in the worker's
log — and backs off like any error. Only a database that cannot record it makes the task fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import Clock
from certifier.pipeline.dispatch import Dispatcher, reconcile_after_commit
from certifier.tracking import events
from certifier.tracking.events import UNEXPECTED, SourceFactory, database_down
from certifier.tracking.sources import RateLimited, SourceError, SourceSpec, storable

log = logging.getLogger(__name__)

MIN_LEASE = timedelta(seconds=60)
# However long a stored poll_interval is, a poll is planned at most this far ahead: date
# arithmetic with a huge one (3000000d) overflowed and stopped every component's polling.
MAX_INTERVAL = timedelta(days=365)


def interval_of(component: models.Component, default: int = 300) -> timedelta:
    """The component's poll interval, at most :data:`MAX_INTERVAL`."""
    seconds = component.poll_interval_s or default
    return timedelta(seconds=min(seconds, MAX_INTERVAL.total_seconds()))


@dataclass
class PollResult:
    component: str
    ok: bool
    outcome: str
    new_commits: list[str] = field(default_factory=list)
    next_poll_in: timedelta = timedelta(0)


def due(session: Session, clock: Clock, limit: int = 100) -> list[int]:
    """Claim the components due a poll; their ids. Flushes."""
    now = clock.now()
    rows = session.execute(
        select(models.Component, models.TrackingState)
        .outerjoin(models.TrackingState,
                   models.TrackingState.component_id == models.Component.id)
        .where(models.Component.poll_interval_s.is_not(None),
               models.Component.removed_at.is_(None),
               models.TrackingState.next_poll_at.is_(None)
               | (models.TrackingState.next_poll_at <= now))
        .order_by(models.Component.id).limit(limit)).all()
    claimed = []
    for component, state in rows:
        if state is None:
            state = events.tracking_state(session, component.id)
        interval = interval_of(component, default=0)
        state.next_poll_at = now + max(interval, MIN_LEASE)
        claimed.append(component.id)
    session.flush()
    return claimed


def _backoff(interval: timedelta, failures: int, ceiling: timedelta) -> timedelta:
    return min(interval * (1 << min(failures, 16)), max(ceiling, interval))


def poll(factory: sessionmaker[Session], component_id: int, sources: SourceFactory,
         clock: Clock, dispatcher: Dispatcher, *, limit: int = 200,
         max_backoff: timedelta = timedelta(hours=1)) -> PollResult:
    """Poll one component and apply what changed. Never raises for the source's failures."""
    with session_scope(factory) as session:
        component = session.get(models.Component, component_id)
        if component is None or component.removed_at is not None:
            return PollResult(f"#{component_id}", False, "no such component")
        name = component.name
        spec: SourceSpec = events.spec_of(component)
        known = events.tracking_state(session, component_id, lock=False).head_sha
        interval = interval_of(component)
    wait: timedelta | None = None
    try:
        source = sources(spec)
        obs = events.observe_poll(source, known, limit)
        pause = source.pause_until
    except RateLimited as exc:
        error, wait = str(exc), exc.retry_after
    except SourceError as exc:
        error = str(exc)
    except Exception as exc:  # a bug or odd data must not stop this component's polling silently
        log.exception("poll of %s failed unexpectedly", name)
        error = UNEXPECTED.format(what="asking the source", kind=type(exc).__name__)
    else:
        try:
            return _apply(factory, component_id, name, obs, pause, interval, clock, dispatcher)
        except Exception as exc:  # the rollback left nothing behind; record the failure below
            if database_down(exc):
                raise
            log.exception("applying the poll of %s failed", name)
            error = UNEXPECTED.format(what="recording the poll", kind=type(exc).__name__)
    with session_scope(factory) as session:
        state = events.tracking_state(session, component_id)
        now = clock.now()
        state.poll_failures += 1
        state.last_polled_at, state.last_error = now, storable(error[:2000])
        delay = wait if wait is not None else _backoff(interval, state.poll_failures, max_backoff)
        state.next_poll_at = now + delay
    log.warning("poll of %s failed (%s); next try in %s", name, error, delay)
    return PollResult(name, False, error, [], delay)


def _apply(factory: sessionmaker[Session], component_id: int, name: str,
           obs: events.Observation, pause: datetime | None, interval: timedelta, clock: Clock,
           dispatcher: Dispatcher) -> PollResult:
    with session_scope(factory) as session:
        component = session.get(models.Component, component_id)
        if component is None or component.removed_at is not None:
            return PollResult(name, False, "component removed while polling")
        applied = events.apply(session, component, obs, clock, "poll")
        state = events.tracking_state(session, component_id)
        now = clock.now()
        state.last_polled_at, state.poll_failures, state.last_error = now, 0, ""
        following = now if applied.stale else now + interval
        if pause is not None and pause > following:
            following = pause
        state.next_poll_at = following
        if applied.new_commits or applied.moved or obs.head is None:
            reconcile_after_commit(session, dispatcher)
    return PollResult(name, True, applied.outcome, applied.new_commits, following - now)


