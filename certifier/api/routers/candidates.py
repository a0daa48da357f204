"""Candidates (combination, runs, verdicts, excuses) and runs (checks, measurements, log)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from certifier.api.deps import ClockDep, ContextDep, SessionDep
from certifier.api.schemas import (
    DB_ID_MAX,
    BisectionOut,
    CandidateDetail,
    CandidateList,
    CandidateOut,
    ErrorOut,
    ExcuseOut,
    ExcusesOut,
    RunDetail,
    json_error,
)
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import queries, read, runs, waivers
from certifier.pipeline.errors import Invalid

router = APIRouter(prefix="/api/v1", tags=["candidates"])

Id = Annotated[int, Path(ge=1, le=DB_ID_MAX)]


@router.get("/candidates", response_model=CandidateList)
def list_candidates(
    session: SessionDep,
    state: CandidateState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CandidateList:
    """Candidates, newest first."""
    return CandidateList(items=[CandidateOut.stored(c)
                                for c in queries.list_candidates(session, state, limit)])


@router.get("/candidates/{candidate_id}", response_model=CandidateDetail,
            responses={404: {"model": ErrorOut}})
def get_candidate(candidate_id: Id, session: SessionDep, clock: ClockDep,
                  context: ContextDep) -> CandidateDetail:
    """One candidate; its excuses are the policy's answer now, as on its dashboard page."""
    now = clock.now()
    return CandidateDetail.detail(
        read.candidate_detail(session, candidate_id, now, context.settings.soak_policy()),
        waivers.for_candidate(session, candidate_id), now)


@router.get("/candidates/{candidate_id}/excuses", response_model=ExcusesOut,
            responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
def get_excuses(
    candidate_id: Id,
    session: SessionDep,
    clock: ClockDep,
    context: ContextDep,
    at: Annotated[datetime | None, Query(
        description="ISO 8601 time: the excuses as they stood then (UTC if no offset is given)"
    )] = None,
) -> ExcusesOut:
    """Why the candidate is not (yet) known-good: a structured list, now or as of ``at``."""
    if at is not None:
        try:
            at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        except OverflowError:
            raise Invalid(f"time out of range: {at.isoformat()}") from None
    found = read.excuses_for(session, candidate_id, context.settings.soak_policy(),
                             clock.now(), at)
    return ExcusesOut(candidate=found.candidate_id, state=str(found.state), as_of=found.as_of,
                      excuses=ExcuseOut.many(found.excuses), waived=list(found.waived),
                      bisection=BisectionOut.of(found.bisection))


@router.get("/runs/{run_id}", response_model=RunDetail, responses={404: {"model": ErrorOut}},
            tags=["runs"])
def get_run(run_id: Id, session: SessionDep) -> RunDetail:
    return RunDetail.of(queries.run_detail(session, run_id))


@router.get("/runs/{run_id}/log", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}},
                       404: json_error("no such run")},
            tags=["runs"])
def get_run_log(run_id: Id, session: SessionDep) -> PlainTextResponse:
    """The run's log as plain text: hook output, suite notes, and how to enter a held testbed."""
    return PlainTextResponse(runs.get_run(session, run_id).log)
