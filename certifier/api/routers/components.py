"""Components and the commits reported for them.

Reporting a commit is idempotent: the same sha reported twice is one commit, answered 201 the
first time and 200 after, and only a new commit asks the scheduler for a reconcile pass (sent
once the transaction commits, so the pass sees the row).
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.exc import IntegrityError

from certifier.api.deps import ClockDep, DispatcherDep, SessionDep
from certifier.api.schemas import (
    CommitList,
    CommitOut,
    CommitReport,
    CommitReported,
    ComponentList,
    ComponentOut,
    ComponentRequest,
    ErrorOut,
)
from certifier.pipeline import components, queries
from certifier.pipeline.dispatch import reconcile_after_commit

router = APIRouter(prefix="/api/v1/components", tags=["components"])

Name = Annotated[str, Path(max_length=63, description="component name")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such component"},
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
    responses={409: {"model": ErrorOut, "description": "a component with this name exists"}},
)
def create_component(body: ComponentRequest, session: SessionDep, clock: ClockDep
                     ) -> ComponentOut:
    """Register a component; its ``recipe`` and ``token_env`` come only from the config file."""
    component = components.create_component(session, body, clock)
    return ComponentOut.of(component, None)


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
    dispatcher: DispatcherDep,
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
    if created:
        reconcile_after_commit(session, dispatcher)
    else:
        response.status_code = status.HTTP_200_OK
    return CommitReported(commit=out, created=created)
