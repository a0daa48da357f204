"""Read-only queries for the API and the dashboard: what the pages show, loaded in few round trips.

The services in this package change state; these functions only read it. Each one eager-loads
exactly what its caller renders, so a page costs a handful of queries, not one per row.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from certifier.db import models
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline.errors import NotFound


def ping(session: Session) -> None:
    """Raise if the database does not answer a trivial query."""
    session.execute(text("SELECT 1"))


def newest_commits(session: Session) -> dict[int, models.Commit]:
    """Every component's newest reported commit, paused components included, by component id.

    Newest means the same as :func:`certifier.pipeline.components.heads`: latest first-seen
    time, then highest id.
    """
    ranked = select(
        models.Commit.id,
        func.row_number()
        .over(
            partition_by=models.Commit.component_id,
            order_by=(models.Commit.first_seen_at.desc(), models.Commit.id.desc()),
        )
        .label("rank"),
    ).subquery()
    newest = session.scalars(
        select(models.Commit)
        .join(ranked, ranked.c.id == models.Commit.id)
        .where(ranked.c.rank == 1)
    )
    return {commit.component_id: commit for commit in newest}


def list_candidates(
    session: Session, state: CandidateState | None = None, limit: int = 100
) -> list[models.Candidate]:
    """Candidates, newest first, optionally in one state."""
    query = select(models.Candidate).order_by(models.Candidate.id.desc()).limit(limit)
    if state is not None:
        query = query.where(models.Candidate.state == state.value)
    return list(session.scalars(query))


def with_combination_and_runs() -> tuple[LoaderOption, ...]:
    items = selectinload(models.Candidate.combination).selectinload(models.Combination.items)
    return (
        items.selectinload(models.CombinationItem.component),
        items.selectinload(models.CombinationItem.commit),
        selectinload(models.Candidate.runs),
    )


def candidate_detail(session: Session, candidate_id: int) -> models.Candidate:
    """One candidate with its combination (components and commits) and its runs."""
    candidate = session.scalar(
        select(models.Candidate)
        .where(models.Candidate.id == candidate_id)
        .options(*with_combination_and_runs())
    )
    if candidate is None:
        raise NotFound(f"no candidate {candidate_id}")
    return candidate


def recent_candidates(session: Session, limit: int = 30) -> list[models.Candidate]:
    """The newest candidates with combinations and runs, for the dashboard."""
    return list(
        session.scalars(
            select(models.Candidate)
            .order_by(models.Candidate.id.desc())
            .limit(limit)
            .options(*with_combination_and_runs())
        )
    )


def run_detail(session: Session, run_id: int) -> models.Run:
    """One run with its checks and measurements."""
    run = session.scalar(
        select(models.Run)
        .where(models.Run.id == run_id)
        .options(selectinload(models.Run.checks), selectinload(models.Run.measurements))
    )
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


def list_testbeds(session: Session) -> list[models.Testbed]:
    return list(session.scalars(select(models.Testbed).order_by(models.Testbed.name)))
