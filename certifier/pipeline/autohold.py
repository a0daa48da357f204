"""Autoholds: keep a failed run's testbed for a person to inspect, then let it go.

A person arms a hold for a candidate, for candidates that change a component, or for any
candidate. The runner asks :func:`matching` before tearing a testbed down; when its run failed or
regressed and a hold matches, :func:`catch` moves that hold to ``holding`` *in the transaction
that finishes the run*, and keeps the testbed's lease with the run until the hold expires, so no
other run is given the testbed meanwhile. :func:`release` (a person) and :func:`expire_due` (the
clock) hand the lease back at once and leave the teardown to the worker on the testbed's host
(``workers/janitor.py``), which reports it with :func:`torn_down`. Every change is audited.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.judgement import Verdict
from certifier.pipeline import components
from certifier.pipeline.dispatch import reconcile_after_commit
from certifier.pipeline.errors import Invalid, NotFound
from certifier.pipeline.runs import get_run
from certifier.pipeline.toolbox import audit, write_lock

MAX_DURATION = timedelta(days=7)
HELD_VERDICTS = frozenset({Verdict.FAILED, Verdict.REGRESSED})


class HoldState(StrEnum):
    ARMED = "armed"  # waiting for a failed run to catch
    HOLDING = "holding"  # a testbed is kept
    RELEASING = "releasing"  # released or expired: the worker tears the testbed down
    RELEASED = "released"  # over (torn down, or released before catching anything)


ACTIVE = (HoldState.ARMED, HoldState.HOLDING, HoldState.RELEASING)


def request(session: Session, clock: Clock, *, duration: timedelta, actor: str,
            candidate_id: int | None = None, component: str | None = None,
            reason: str = "") -> models.Autohold:
    """Arm a hold; ``duration`` is how long a caught testbed is kept. Flushes."""
    if not timedelta(seconds=1) <= duration <= MAX_DURATION:
        raise Invalid(f"a hold lasts between 1 s and {MAX_DURATION.days} days, not {duration}")
    if candidate_id is not None and session.get(models.Candidate, candidate_id) is None:
        raise NotFound(f"no candidate {candidate_id}")
    if component is not None:
        components.get_component(session, component)  # NotFound for an unknown name
    hold = models.Autohold(candidate_id=candidate_id, component=component,
                           duration_s=int(duration.total_seconds()), reason=reason[:2000],
                           requested_by=actor[:200], state=HoldState.ARMED,
                           created_at=clock.now(), commands=[])
    session.add(hold)
    session.flush()
    audit(session, clock, actor, "hold.request", f"hold {hold.id}", candidate=candidate_id,
          component=component, duration_s=hold.duration_s, reason=hold.reason)
    return hold


def get(session: Session, hold_id: int, *, lock: bool = False) -> models.Autohold:
    """A hold by id; ``lock``: for a change, waiting for a writer of it that is committing
    (its row locked on PostgreSQL, the write lock taken first on SQLite)."""
    if lock:
        write_lock(session)
    hold = session.get(models.Autohold, hold_id, with_for_update=lock)
    if hold is None:
        raise NotFound(f"no hold {hold_id}")
    return hold


def list_holds(session: Session, state: HoldState | None = None,
               limit: int = 100) -> list[models.Autohold]:
    """Holds, newest first; active ones only when asked for a state."""
    query = select(models.Autohold).order_by(models.Autohold.id.desc()).limit(limit)
    if state is not None:
        query = query.where(models.Autohold.state == state.value)
    return list(session.scalars(query))


def _release_lease(session: Session, run_id: int | None) -> None:
    if run_id is None:
        return
    session.execute(
        update(models.Testbed)
        .where(models.Testbed.leased_by_run_id == run_id)
        .values(leased_by_run_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def release(session: Session, hold_id: int, clock: Clock, actor: str) -> models.Autohold:
    """Let a hold go: an armed one is over, a holding one's testbed is handed back. Idempotent.

    Locked: a run that is catching the hold (its ``catch``, committing) is waited for, then its
    testbed handed back; never an armed hold read beside it and written over its catch, which
    would leave the testbed leased to the run with nobody to tear it down."""
    hold = get(session, hold_id, lock=True)
    reconcile_after_commit(session)  # a pass tears a handed-back testbed down
    now = clock.now()
    if hold.state == HoldState.ARMED:
        hold.state = HoldState.RELEASED
    elif hold.state == HoldState.HOLDING:
        hold.state = HoldState.RELEASING
        _release_lease(session, hold.run_id)
    else:
        return hold
    hold.released_at = now
    hold.released_by = actor[:200]
    audit(session, clock, actor, "hold.release", f"hold {hold.id}", run=hold.run_id,
          testbed=hold.testbed)
    session.flush()
    return hold


def matching(session: Session, run_id: int, verdict: Verdict) -> int | None:
    """The oldest armed hold that wants this run's testbed, if the run failed or regressed."""
    if verdict not in HELD_VERDICTS:
        return None
    run = get_run(session, run_id)
    changed = {str(c) for c in run.candidate.changed}
    for hold in session.scalars(select(models.Autohold).where(
            models.Autohold.state == HoldState.ARMED).order_by(models.Autohold.id)):
        if hold.candidate_id is not None and hold.candidate_id != run.candidate_id:
            continue
        if hold.component is not None and hold.component not in changed:
            continue
        return hold.id
    return None


def catch(session: Session, hold_id: int, run_id: int, clock: Clock, *, testbed: str, tag: str,
          worker: str, commands: list[str]) -> models.Autohold | None:
    """Hold ``run_id``'s testbed under hold ``hold_id``; None if the hold is no longer armed.

    Call it in the transaction that finishes the run (after ``runs.finish``, which releases the
    lease): the lease goes back to the run until the hold expires.
    """
    now = clock.now()
    hold = get(session, hold_id)
    expires = now + timedelta(seconds=hold.duration_s)
    taken = session.execute(
        update(models.Autohold)
        .where(models.Autohold.id == hold_id, models.Autohold.state == HoldState.ARMED)
        .values(state=HoldState.HOLDING, run_id=run_id, testbed=testbed, tag=tag, worker=worker,
                commands=commands, held_at=now, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if not getattr(taken, "rowcount", 0):
        return None
    session.execute(
        update(models.Testbed)
        .where(models.Testbed.name == testbed)
        .values(leased_by_run_id=run_id, lease_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    session.expire(hold)
    audit(session, clock, "runner", "hold.catch", f"hold {hold_id}", run=run_id, testbed=testbed,
          tag=tag, expires_at=expires.isoformat())
    session.flush()
    return hold


def expire_due(session: Session, clock: Clock) -> list[int]:
    """Holds whose time is up start releasing; returns their ids."""
    now = clock.now()
    due = list(session.scalars(select(models.Autohold).where(
        models.Autohold.state == HoldState.HOLDING, models.Autohold.expires_at <= now)))
    for hold in due:
        hold.state = HoldState.RELEASING
        hold.released_at = now
        hold.released_by = "timeout"
        _release_lease(session, hold.run_id)
        audit(session, clock, "scheduler", "hold.expire", f"hold {hold.id}", run=hold.run_id)
    session.flush()
    return [h.id for h in due]


def on_host(hold: models.Autohold, host: str) -> bool:
    worker_host, _, _ = (hold.worker or "").rpartition(":")
    return worker_host == host


def held_tags(session: Session, host: str) -> set[str]:
    """Tags of testbeds kept on ``host``: the janitor must leave them alone."""
    return {h.tag for h in session.scalars(select(models.Autohold).where(
        models.Autohold.state == HoldState.HOLDING)) if h.tag and on_host(h, host)}


def releasing_on(session: Session, host: str) -> list[models.Autohold]:
    """Released or expired holds whose testbed on ``host`` still has to be torn down."""
    return [h for h in session.scalars(select(models.Autohold).where(
        models.Autohold.state == HoldState.RELEASING).order_by(models.Autohold.id))
        if on_host(h, host)]


def torn_down(session: Session, hold_id: int, clock: Clock) -> None:
    hold = get(session, hold_id)
    if hold.state != HoldState.RELEASING:
        return
    hold.state = HoldState.RELEASED
    hold.torn_down_at = clock.now()
    audit(session, clock, "janitor", "hold.teardown", f"hold {hold.id}", run=hold.run_id,
          tag=hold.tag)
    session.flush()
