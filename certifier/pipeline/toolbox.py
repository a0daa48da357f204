"""The small steps every part of the pipeline takes: audit, move a candidate, summarise runs.

They used to live in the scheduler, so actions, autohold and culprit finding imported the
reconcile loop for them (and the loop imported culprit finding back). Nothing here imports
another pipeline module: the scheduler, the services and tracking all stand on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.judgement import RunKind, Verdict
from certifier.domain.lifecycle import CandidateState, check_transition
from certifier.domain.promotion import RunSummary

PASS_LOCK_KEY = 0x63657274  # "cert"


def write_lock(session: Session) -> None:
    """On SQLite, take the database's write lock now, before the transaction reads anything.

    PostgreSQL locks the rows a person's action reads (``FOR UPDATE``); SQLite ignores that, and
    a read outside the write lock may be stale by the time the action writes: pysqlite begins
    the transaction only at the first write, so a scheduler pass or a finishing run committed
    in between would be written over (with the read inside a transaction, the write would
    fail with "database is locked" instead). Taken first, the lock makes the action wait for a
    writer that is committing, then read what it wrote. No-op elsewhere."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE testbeds SET name = name WHERE 0 = 1"))


def pass_lock(session: Session) -> None:
    """Serialise with the scheduler's passes until the transaction ends: a transaction-scoped
    advisory lock on PostgreSQL, the write lock on SQLite (taken before anything is read: two
    passes that both read first would act twice on one state)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PASS_LOCK_KEY})
    else:
        write_lock(session)


def audit(session: Session, clock: Clock, actor: str, action: str, subject: str, /,
          **detail: object) -> None:
    """Add one audit event (flushed with the caller's transaction)."""
    session.add(models.AuditEvent(at=clock.now(), actor=actor, action=action, subject=subject,
                                  detail=detail))


def move(session: Session, candidate: models.Candidate, target: CandidateState,
         clock: Clock) -> None:
    """Change a candidate's state through the lifecycle's transition table."""
    state = check_transition(candidate.state, target)
    now = clock.now()
    candidate.state = state
    candidate.updated_at = now
    if state is CandidateState.GATING:
        candidate.gating_started_at = now
    elif state is CandidateState.SOAKING:
        candidate.soak_started_at = now
    elif state.is_final:
        candidate.finished_at = now


def summaries(runs: Iterable[models.Run], at: datetime | None = None) -> list[RunSummary]:
    """Runs as the promotion policy reads them: now (``at`` None), or as they stood at ``at``
    (runs created later left out, runs finished later still in progress, without excuses).

    Waivers are the caller's: ``promotion.apply_waivers`` with the subjects in force.
    """
    out = []
    for run in runs:
        if at is not None and run.created_at > at:
            continue
        seen = at is None or (run.finished_at is not None and run.finished_at <= at)
        out.append(RunSummary(
            id=run.id, kind=RunKind(run.kind),
            verdict=Verdict(run.verdict) if seen and run.verdict else None,
            created_at=run.created_at,
            finished_at=run.finished_at if seen else None,
            excuses=run.excuses if seen else ()))
    return out
