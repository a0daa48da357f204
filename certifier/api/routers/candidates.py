"""Candidates (combination, runs, verdicts, excuses) and runs (checks, measurements, log)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from certifier.api.deps import ClockDep, SessionDep
from certifier.api.schemas import (
    DB_ID_MAX,
    CandidateDetail,
    CandidateList,
    CandidateOut,
    ErrorOut,
    RunDetail,
    json_error,
)
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import queries, runs, waivers

router = APIRouter(prefix="/api/v1", tags=["candidates"])

Id = Annotated[int, Path(ge=1, le=DB_ID_MAX)]


@router.get("/candidates", response_model=CandidateList)
def list_candidates(
    session: SessionDep,
    state: CandidateState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CandidateList:
    """Candidates, newest first."""
    return CandidateList(items=[CandidateOut.of(c)
                                for c in queries.list_candidates(session, state, limit)])


@router.get("/candidates/{candidate_id}", response_model=CandidateDetail,
            responses={404: {"model": ErrorOut}})
def get_candidate(candidate_id: Id, session: SessionDep, clock: ClockDep) -> CandidateDetail:
    return CandidateDetail.detail(queries.candidate_detail(session, candidate_id),
                                  waivers.for_candidate(session, candidate_id), clock.now())


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
