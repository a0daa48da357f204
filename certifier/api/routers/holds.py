"""Autoholds: keep a failed run's testbed for a person to inspect (``certifier/pipeline/autohold``).

Arming and releasing need an ``operate`` token (``certifier/api/auth.py``); listing is a read. A
release hands the testbed's lease back at once and asks for a reconcile pass, in which the worker
on the testbed's host tears it down.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from certifier.api.auth import OperatorDep
from certifier.api.deps import ClockDep, SessionDep
from certifier.api.schemas import DB_ID_MAX, ErrorOut, HoldList, HoldOut, HoldRequest
from certifier.domain.durations import DurationError, parse_duration
from certifier.pipeline import autohold
from certifier.pipeline.errors import Invalid

router = APIRouter(prefix="/api/v1/holds", tags=["holds"])

Id = Annotated[int, Path(ge=1, le=DB_ID_MAX)]
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or an unknown, expired or revoked one"},
    403: {"model": ErrorOut, "description": "the token's scope is smaller than operate"},
}


@router.post("", response_model=HoldOut, status_code=status.HTTP_201_CREATED,
             responses={**AUTH, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
def request_hold(body: HoldRequest, session: SessionDep, clock: ClockDep,
                 who: OperatorDep) -> HoldOut:
    """Arm a hold: the next failed run that matches keeps its testbed for ``duration``."""
    try:
        duration = parse_duration(body.duration)
    except DurationError as exc:
        raise Invalid(f"duration: {exc}") from None
    hold = autohold.request(session, clock, duration=duration, actor=who.actor,
                            candidate_id=body.candidate_id, component=body.component,
                            reason=body.reason)
    return HoldOut.of(hold)


@router.get("", response_model=HoldList)
def list_holds(
    session: SessionDep,
    state: autohold.HoldState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> HoldList:
    """Holds, newest first; a holding one lists the commands to enter its testbed."""
    return HoldList(items=[HoldOut.of(h) for h in autohold.list_holds(session, state, limit)])


@router.get("/{hold_id}", response_model=HoldOut, responses={404: {"model": ErrorOut}})
def get_hold(hold_id: Id, session: SessionDep) -> HoldOut:
    return HoldOut.of(autohold.get(session, hold_id))


@router.delete("/{hold_id}", response_model=HoldOut,
               responses={**AUTH, 404: {"model": ErrorOut}})
def release_hold(hold_id: Id, session: SessionDep, clock: ClockDep,
                 who: OperatorDep) -> HoldOut:
    """Release a hold (idempotent): its testbed goes back to the pipeline and is torn down."""
    hold = autohold.release(session, hold_id, clock, who.actor)
    return HoldOut.of(hold)
