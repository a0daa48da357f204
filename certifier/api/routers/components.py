"""Components and the commits reported for them.

Reporting a commit is idempotent: the same sha reported twice is one commit, answered 201 the
first time and 200 after, and only a new commit asks the scheduler for a reconcile pass (sent
once the transaction commits, so the pass sees the row).

Registering and removing a component need an ``admin`` token: both change what every future
candidate and manifest contains, like promote and revoke, and registering makes the worker
fetch from a URL of the caller's choice (within the config's ``sources`` policy). Pausing and
resuming need ``operate``: they hold a component at its known-good commit and let it go again,
day-to-day flow control like cancel. Each is audited under the token's name.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.exc import IntegrityError

from certifier.api.auth import AdminDep, OperatorDep
from certifier.api.deps import ClockDep, ContextDep, SessionDep
from certifier.api.schemas import (
    CommitList,
    CommitOut,
    CommitReport,
    CommitReported,
    ComponentAction,
    ComponentList,
    ComponentOut,
    ComponentRequest,
    ErrorOut,
)
from certifier.pipeline import components, queries
from certifier.pipeline.errors import Invalid
from certifier.sourcepolicy import SourceRefused

router = APIRouter(prefix="/api/v1/components", tags=["components"])

Name = Annotated[str, Path(max_length=63, description="component name")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such component"},
}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or an unknown, expired or revoked one"},
    403: {"model": ErrorOut, "description": "the token's scope is too small"},
}


@router.get("", response_model=ComponentList)
def list_components(session: SessionDep) -> ComponentList:
    heads = queries.newest_commits(session)
    return ComponentList(items=[ComponentOut.of(c, heads.get(c.id))
                                for c in components.list_components(session)])


@router.post(
    "",
    response_model=ComponentOut,
    status_code=status.HTTP_201_CREATED,
    responses={**AUTH,
               409: {"model": ErrorOut, "description": "a component with this name exists"},
               422: {"model": ErrorOut, "description": "invalid, or refused by the config's "
                                                      "source URL policy"}},
)
def create_component(body: ComponentRequest, session: SessionDep, clock: ClockDep,
                     context: ContextDep, who: AdminDep
                     ) -> ComponentOut:
    """Register a component (admin scope); its ``recipe`` and ``token_env`` come only from the
    config file, and its URLs must pass the config's ``sources`` policy."""
    try:
        context.settings.config.sources.check_component(body.url, body.api_url)
    except SourceRefused as exc:
        raise Invalid(str(exc)) from None
    component = components.register(session, body, clock, who.actor)
    return ComponentOut.of(component, None)


@router.delete("/{name}", response_model=ComponentOut,
               responses={**AUTH, **NOT_FOUND,
                          409: {"model": ErrorOut, "description": "the current known-good or "
                                                                 "an open candidate has it"}})
def remove_component(
    name: Name, session: SessionDep, clock: ClockDep, who: AdminDep,
    reason: Annotated[str, Query(min_length=1, max_length=2000,
                                 description="why: kept in the audit log")],
) -> ComponentOut:
    """Remove a component (admin scope): no longer listed, tracked or formed into candidates;
    its commits and the history naming it stay. 409 while the current known-good or an open
    candidate includes it (pause it instead)."""
    component = components.remove(session, clock, name, who.actor, reason)
    return ComponentOut.of(component, None)


@router.post("/{name}/pause", response_model=ComponentOut,
             responses={**AUTH, **NOT_FOUND,
                        409: {"model": ErrorOut, "description": "already paused"}})
def pause_component(name: Name, body: ComponentAction, session: SessionDep, clock: ClockDep,
                    who: OperatorDep) -> ComponentOut:
    """Pause a component (operate scope): new candidates keep it at its known-good commit.
    Tracking goes on recording its commits and never lifts this pause."""
    component = components.pause(session, clock, name, who.actor, body.reason)
    return ComponentOut.of(component, queries.newest_commits(session).get(component.id))


@router.post("/{name}/resume", response_model=ComponentOut,
             responses={**AUTH, **NOT_FOUND,
                        409: {"model": ErrorOut, "description": "not paused"}})
def resume_component(name: Name, body: ComponentAction, session: SessionDep, clock: ClockDep,
                     who: OperatorDep) -> ComponentOut:
    """Resume a paused component (operate scope): its head takes part in candidates again."""
    component = components.resume(session, clock, name, who.actor, body.reason)
    return ComponentOut.of(component, queries.newest_commits(session).get(component.id))


@router.get("/{name}", response_model=ComponentOut, responses=NOT_FOUND)
def get_component(name: Name, session: SessionDep) -> ComponentOut:
    component = components.get_component(session, name)
    return ComponentOut.of(component, queries.newest_commits(session).get(component.id))


@router.get("/{name}/commits", response_model=CommitList, responses=NOT_FOUND)
def list_commits(
    name: Name, session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> CommitList:
    commits = components.list_commits(session, name, limit)
    return CommitList(items=[CommitOut.of(c, name) for c in commits])


@router.post(
    "/{name}/commits",
    response_model=CommitReported,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CommitReported, "description": "already known (nothing changed)"},
               **NOT_FOUND},
)
def report_commit(
    name: Name,
    body: CommitReport,
    response: Response,
    session: SessionDep,
    clock: ClockDep,
) -> CommitReported:
    def report() -> tuple[CommitOut, bool]:
        commit, created = components.report_commit(
            session, name, body.sha, clock, title=body.title, author=body.author,
            committed_at=body.committed_at.astimezone(UTC) if body.committed_at else None,
            seen_via="api")
        return CommitOut.of(commit, name), created

    try:
        out, created = report()
    except IntegrityError:
        # A concurrent report of the same sha committed first. Nothing else was written in this
        # transaction, so start a fresh one, which sees the winner's row: ours is a duplicate.
        session.rollback()
        out, created = report()
    if not created:
        response.status_code = status.HTTP_200_OK
    return CommitReported(commit=out, created=created)
