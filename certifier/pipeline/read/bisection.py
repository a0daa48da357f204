"""A candidate's culprit finding as the candidate page and the API show it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.bisection_state import Record


@dataclass(frozen=True, slots=True)
class StepView:
    run_id: int
    phase: str  # swap | bisect
    component: str
    sha: str
    purpose: str
    combination: Mapping[str, str]
    verdict: str | None  # None: not finished
    withdrawn: bool  # taken back before it started (culprit finding stopped)


@dataclass(frozen=True, slots=True)
class CulpritView:
    component: str
    sha: str
    last_good: str
    evidence: tuple[int, ...]
    explanation: str
    together: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BisectionView:
    """A candidate's culprit finding, for the dashboard and the API."""

    status: str  # running | found | inconclusive | stopped
    started_at: datetime | None
    finished_at: datetime | None
    known_good: int | None
    failed_run: int | None
    commits: Mapping[str, int]  # changed component → commits in its range
    steps: tuple[StepView, ...]
    reason: str | None  # why it was inconclusive or stopped
    culprit: CulpritView | None


def view(state: Record | None) -> BisectionView | None:
    """A candidate's culprit finding for display."""
    if state is None:
        return None
    steps = tuple(StepView(s.run, s.phase, s.component, s.sha, s.purpose, s.combination,
                           s.verdict, s.withdrawn) for s in state.steps)
    found = state.result
    culprit = None if found is None else CulpritView(
        found.component, found.sha, found.last_good, found.evidence, found.explanation,
        found.together)
    return BisectionView(
        status=state.status, started_at=state.started_at, finished_at=state.finished_at,
        known_good=state.known_good, failed_run=state.failed_run,
        commits={name: len(commits) for name, commits in state.ranges.items()},
        steps=steps, reason=state.reason, culprit=culprit)


def stored(session: Session, candidate_id: int) -> BisectionView | None:
    """The culprit finding of a candidate (None: none ran, or no such candidate)."""
    cand = session.get(models.Candidate, candidate_id)
    return view(cand.bisection) if cand is not None else None
