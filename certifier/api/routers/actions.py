"""People's controls over the API: cancel, waive, retry, promote and mark bad a candidate, stop
its culprit finding, revoke a known-good, and the audit log they all write to.

Each needs a bearer token of the scope named in its description (``certifier/api/auth.py``);
the services are in ``certifier/pipeline/actions.py``. They register their own after-commit work
(``dispatch.bind``): the scheduler is asked for a pass, so the pipeline acts on the change at
once, and promotions and revocations clear the manifest cache, so the next poll sees the new
known-good.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from certifier.api.auth import AdminDep, OperatorDep
from certifier.api.deps import AppContext, ClockDep, ContextDep, DispatcherDep, SessionDep
from certifier.api.schemas import (
    DB_ID_MAX,
    AuditEventOut,
    AuditList,
    CancelRequest,
    CandidateDetail,
    CandidateOut,
    ErrorOut,
    ManifestSummary,
    MarkBadRequest,
    PromoteAnswer,
    PromoteRequest,
    RetryRequest,
    RevokeAnswer,
    RevokeRequest,
    StopCulpritRequest,
    WaiveAnswer,
    WaiveRequest,
    WaiverOut,
)
from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.durations import DurationError, parse_duration
from certifier.pipeline import actions, notify, read, waivers
from certifier.pipeline.errors import Invalid

router = APIRouter(prefix="/api/v1", tags=["actions"])

Id = Annotated[int, Path(ge=1, le=DB_ID_MAX)]
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or an unknown, expired or revoked one"},
    403: {"model": ErrorOut, "description": "the token's scope is too small"},
    404: {"model": ErrorOut},
    409: {"model": ErrorOut, "description": "the candidate's state does not allow it"},
    422: {"model": ErrorOut},
}


@router.post("/candidates/{candidate_id}/cancel", response_model=CandidateOut, responses=AUTH)
def cancel_candidate(candidate_id: Id, body: CancelRequest, session: SessionDep,
                     clock: ClockDep, who: OperatorDep) -> CandidateOut:
    """Cancel a queued, gating or soaking candidate (operate scope)."""
    cand = actions.cancel(session, clock, candidate_id, who.actor, body.reason)
    return CandidateOut.stored(cand)


@router.post("/candidates/{candidate_id}/retry", response_model=CandidateOut, responses=AUTH)
def retry_candidate(candidate_id: Id, body: RetryRequest, session: SessionDep, clock: ClockDep,
                    context: ContextDep, who: OperatorDep) -> CandidateOut:
    """Retry a gating or soaking candidate whose infra retries ran out (operate scope).

    Its infra-error streak restarts now, so the next pass (asked for after the commit) creates
    its run again with the full retry budget. 409 when there is nothing to retry.
    """
    cand = actions.retry(session, clock, candidate_id, who.actor, body.reason,
                         context.settings.soak_policy())
    return CandidateOut.stored(cand)


@router.post("/candidates/{candidate_id}/culprit/stop", response_model=CandidateOut,
             responses=AUTH)
def stop_culprit_finding(candidate_id: Id, body: StopCulpritRequest, session: SessionDep,
                         clock: ClockDep, who: OperatorDep) -> CandidateOut:
    """Stop the culprit finding that runs for a rejected candidate (operate scope).

    Its pending bisect runs are withdrawn and the search ends ``stopped``; the candidate stays
    rejected, and the next pass (asked for after the commit) lets the train move on as after an
    inconclusive search. 409 when no culprit finding runs for it.
    """
    cand = actions.stop_culprit_finding(session, clock, candidate_id, who.actor, body.reason)
    return CandidateOut.stored(cand)


@router.post("/candidates/{candidate_id}/waive", response_model=WaiveAnswer, responses=AUTH)
def waive(candidate_id: Id, body: WaiveRequest, session: SessionDep, clock: ClockDep,
          who: OperatorDep) -> WaiveAnswer:
    """Set aside one failing check or metric of a candidate (operate scope).

    ``subject`` is a failing excuse's subject. A rejected candidate whose every failure is then
    waived goes back to the queue (``requeued``).
    """
    expires_in = None
    if body.expires_in:
        try:
            expires_in = parse_duration(body.expires_in)
        except DurationError as exc:
            raise Invalid(f"expires_in: {exc}") from None
        if expires_in.total_seconds() <= 0:
            raise Invalid("expires_in must be positive")
    waiver, requeued = actions.waive(session, clock, candidate_id, who.actor, body.subject,
                                     body.reason, expires_in)
    return WaiveAnswer(waiver=WaiverOut.of(waiver, clock.now()),
                       candidate=CandidateOut.stored(session.get_one(models.Candidate,
                                                                 candidate_id)),
                       requeued=requeued)


@router.post("/candidates/{candidate_id}/promote", response_model=PromoteAnswer, responses=AUTH)
def promote(candidate_id: Id, body: PromoteRequest, session: SessionDep, clock: ClockDep,
            context: ContextDep, dispatcher: DispatcherDep, who: AdminDep) -> PromoteAnswer:
    """Promote a soaking candidate now, skipping the rest of its soak (admin scope).

    The same compare-and-swap as the scheduler's: 409 if the known-good moved since the
    candidate was based on it, or if it has unwaived failures and ``force`` is not set.
    """
    kg = actions.promote(session, clock, candidate_id, who.actor, body.reason,
                         context.settings.soak_policy(), force=body.force,
                         notifier=notify.Notifier(context.settings.config.notifications,
                                                  dispatcher))
    return PromoteAnswer(candidate=CandidateOut.stored(kg.candidate),
                         known_good=ManifestSummary.of(kg))


@router.post("/candidates/{candidate_id}/mark-bad", response_model=CandidateDetail,
             responses=AUTH)
def mark_bad(candidate_id: Id, body: MarkBadRequest, session: SessionDep, clock: ClockDep,
             context: ContextDep, who: OperatorDep) -> CandidateDetail:
    """Mark the candidate's combination bad (operate scope): it is never formed or promoted
    again, and an open candidate is cancelled. 409 if it is already marked, or if it is a
    known-good that is not revoked (revoke it first)."""
    actions.mark_bad(session, clock, who.actor, candidate_id, body.reason)
    return _detail(session, clock, context, candidate_id)


@router.delete("/candidates/{candidate_id}/mark-bad", response_model=CandidateDetail,
               responses=AUTH)
def unmark_bad(candidate_id: Id, session: SessionDep, clock: ClockDep, context: ContextDep,
               who: AdminDep,
               reason: Annotated[str, Query(max_length=2000,
                                            description="why: kept in the audit log")] = "",
               ) -> CandidateDetail:
    """Lift the mark (admin scope). A candidate it cancelled stays cancelled; 409 if the
    combination is not marked bad."""
    actions.unmark_bad(session, clock, who.actor, candidate_id, reason)
    return _detail(session, clock, context, candidate_id)


def _detail(session: Session, clock: Clock, context: AppContext,
            candidate_id: int) -> CandidateDetail:
    """The candidate as ``GET /api/v1/candidates/{id}`` gives it."""
    return CandidateDetail.detail(
        read.candidate_detail(session, candidate_id, clock.now(), context.settings.soak_policy()),
        waivers.for_candidate(session, candidate_id), clock.now())


@router.post("/known-good/{version}/revoke", response_model=RevokeAnswer, responses=AUTH,
             tags=["manifests"])
def revoke(version: Id, body: RevokeRequest, session: SessionDep, clock: ClockDep,
           context: ContextDep, dispatcher: DispatcherDep, who: AdminDep) -> RevokeAnswer:
    """Revoke a known-good (admin scope): the manifest falls back to the previous unrevoked one."""
    kg, current = actions.revoke(session, clock, version, who.actor, body.reason,
                                 notify.Notifier(context.settings.config.notifications,
                                                 dispatcher))
    return RevokeAnswer(revoked=ManifestSummary.of(kg),
                        current=ManifestSummary.of(current) if current else None)


@router.get("/audit", response_model=AuditList, tags=["audit"])
def audit_log(
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, le=DB_ID_MAX,
                                        description="events older than this id")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditList:
    """Every manual action and scheduler decision, newest first."""
    rows, next_before = read.audit_log(session, before, limit, action=action)
    return AuditList(items=[AuditEventOut(id=r.id, at=r.at, actor=r.actor, action=r.action,
                                          subject=r.subject, detail=dict(r.detail))
                            for r in rows],
                     next_before=next_before)
