"""Why a candidate is not (yet) known-good: now, or as of any past time.

Now, the answer is the policy's for an open candidate, asked again with the clock as it is
(:func:`records.live_excuses`: what the candidate page shows, and what the next reconcile pass
will store), and the stored answer for a final one. For a past time it is worked out again,
the way britney's excuses or Greenwave's ``when`` would be: the candidate's state then (from
its timestamps), its runs as they stood then (a run that finished later was still in
progress), the waivers in force then, and the same pure policy
(:func:`certifier.domain.promotion.decide`) the scheduler runs. A final state is the stored
answer from the moment it was reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import SoakPolicy, apply_waivers, decide
from certifier.pipeline import queries
from certifier.pipeline.errors import NotFound
from certifier.pipeline.read.bisection import BisectionView
from certifier.pipeline.read.bisection import view as bisection_view
from certifier.pipeline.read.records import ExcuseView, excuse_views, live_excuses
from certifier.pipeline.toolbox import summaries


@dataclass(frozen=True, slots=True)
class Excuses:
    candidate_id: int
    state: CandidateState
    as_of: datetime | None  # None: now
    excuses: tuple[ExcuseView, ...]
    waived: tuple[str, ...]  # excuse subjects set aside by waivers in force
    bisection: BisectionView | None  # culprit finding, as it stands now


def _state_at(cand: models.Candidate, at: datetime) -> CandidateState:
    """The state at ``at`` from the candidate's timestamps.

    A candidate put back in the queue (a waiver on a rejection) keeps its old
    ``soak_started_at``; a soak start older than the newest gating start is such a leftover.
    Its earlier life is not recorded apart from the audit log, so a time before the re-queue is
    answered as of its current life.
    """
    if cand.finished_at is not None and at >= cand.finished_at:
        return CandidateState(cand.state)
    soaked = cand.soak_started_at
    if soaked is not None and cand.gating_started_at is not None \
            and soaked < cand.gating_started_at:
        soaked = None
    if soaked is not None and at >= soaked:
        return CandidateState.SOAKING
    if cand.gating_started_at is not None and at >= cand.gating_started_at:
        return CandidateState.GATING
    return CandidateState.QUEUED


def _waived_at(session: Session, candidate_id: int, at: datetime) -> frozenset[str]:
    return frozenset(session.scalars(select(models.Waiver.subject).where(
        models.Waiver.candidate_id == candidate_id, models.Waiver.created_at <= at,
        or_(models.Waiver.expires_at.is_(None), models.Waiver.expires_at > at))))


def for_candidate(session: Session, candidate_id: int, policy: SoakPolicy, now: datetime,
                  at: datetime | None = None) -> Excuses:
    """The candidate's excuses now (``at`` None) or as they were at ``at``."""
    cand = queries.candidate_detail(session, candidate_id)
    culprit_finding = bisection_view(cand.bisection)
    if at is None or at >= now:
        waived_now = _waived_at(session, candidate_id, now)
        return Excuses(cand.id, CandidateState(cand.state), None,
                       live_excuses(cand, now, policy, waived_now),
                       tuple(sorted(waived_now)), culprit_finding)
    if at < cand.created_at:
        raise NotFound(f"candidate {candidate_id} did not exist yet at {at.isoformat()} "
                       f"(formed {cand.created_at.isoformat()})")
    state = _state_at(cand, at)
    waived = _waived_at(session, candidate_id, at)
    if state.is_final:
        return Excuses(cand.id, state, at, excuse_views(cand.excuses), tuple(sorted(waived)),
                       culprit_finding)
    soak_started = cand.soak_started_at if state is CandidateState.SOAKING else None
    retried = cand.retried_at if cand.retried_at is not None and cand.retried_at <= at else None
    decision = decide(state, apply_waivers(summaries(cand.runs, at), waived), at, policy,
                      soak_started, retried)
    return Excuses(cand.id, state, at, excuse_views(decision.excuses), tuple(sorted(waived)),
                   culprit_finding)
