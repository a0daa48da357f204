"""The small steps every part of the pipeline takes: audit, move a candidate, summarise runs.

They used to live in the scheduler, so actions, autohold and culprit finding imported the
reconcile loop for them (and the loop imported culprit finding back). Nothing here imports
another pipeline module: the scheduler, the services and tracking all stand on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.judgement import RunKind, Verdict
from certifier.domain.lifecycle import CandidateState, check_transition
from certifier.domain.promotion import RunSummary


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
