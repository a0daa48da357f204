"""The records every page shares: commits, excuses, runs, soak progress, audit events, and how
they are read from rows. Frozen dataclasses (a run: a frozen pydantic model, which the API
serves as it is), so a template or a schema cannot change them.

Excuses of an open candidate are the policy's answer now (:func:`live_excuses`), the one the
next reconcile pass will store, so the dashboard and the API say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from certifier.db import models
from certifier.domain.environment import run_line
from certifier.domain.judgement import Excuse, RunKind
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import (
    WAIVABLE_KINDS,
    Action,
    SoakPolicy,
    apply_waivers,
    decide,
)
from certifier.pipeline import bisection
from certifier.pipeline.toolbox import summaries

ACTIVE_STATES = (CandidateState.GATING.value, CandidateState.SOAKING.value)
FINAL_STATES = tuple(s.value for s in CandidateState if s.is_final)
UNFINISHED_RUN_STATES = ("pending", "running")


@dataclass(frozen=True, slots=True)
class CommitRef:
    """One commit of one component, with what is needed to link it upstream."""

    component: str
    sha: str
    title: str = ""
    author: str = ""
    source: str = "git"
    repo_url: str = ""
    first_seen_at: datetime | None = None
    committed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExcuseView(Excuse):
    """An excuse as a page shows it: the domain's, and whether a person may waive it."""

    @property
    def waivable(self) -> bool:
        """A failed check, a broken limit, a regression or a flaky check: what a person may set
        aside."""
        return self.kind in WAIVABLE_KINDS


@dataclass(frozen=True, slots=True)
class SoakProgress:
    started_at: datetime
    elapsed: timedelta
    duration: timedelta
    passing_runs: int
    min_runs: int
    runs_total: int
    run_in_progress: bool
    next_run_at: datetime | None

    @property
    def fraction(self) -> float:
        total = self.duration.total_seconds()
        return 1.0 if total <= 0 else min(1.0, self.elapsed.total_seconds() / total)

    @property
    def percent(self) -> int:
        return int(self.fraction * 100)

    @property
    def time_left(self) -> timedelta:
        return max(self.duration - self.elapsed, timedelta(0))


class RunRow(BaseModel):
    """A run as every list shows it. One declaration for the pages and the API, which answers
    it as it is (a candidate's ``runs``; ``GET /api/v1/runs/{id}`` extends it): a pydantic model,
    frozen, so neither a template nor a route can change it."""

    model_config = ConfigDict(frozen=True)

    id: int
    kind: str
    attempt: int
    state: str
    verdict: str | None
    testbed: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    excuses: tuple[ExcuseView, ...] = ()

    @property
    def outcome(self) -> str:
        return self.verdict or self.state

    @property
    def label(self) -> str:
        return f"{self.kind} {self.attempt}"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class RunView(RunRow):
    """A run as the pages show it: the row, and what its page and the candidate's add (the
    API's run detail carries these in full, not as the pages' summaries)."""

    state_diff: tuple[dict[str, Any], ...] = ()  # the upgrade suite's, as stored
    environment: str = ""  # the environment check's figures in one line (domain.environment)
    too_busy: bool = False


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BadMark:
    """A person marked the candidate's combination bad: never formed or promoted again."""

    at: datetime
    by: str
    reason: str

    @classmethod
    def of(cls, combo: models.Combination) -> BadMark | None:
        if combo.bad_at is None:
            return None
        return cls(combo.bad_at, combo.bad_by or "", combo.bad_reason or "")


@dataclass(frozen=True, slots=True)
class NamedSeries:
    """What names a series on a page, the history's and a run's alike, and its title."""

    key: str
    suite: str
    metric: str
    labels: Mapping[str, str]
    unit: str
    better: str

    @property
    def title(self) -> str:
        return series_title(self.suite, self.metric, self.labels)


def series_title(suite: str, metric: str, labels: Mapping[str, str]) -> str:
    """A series in words: "ping rtt_avg_ms h1→h2 (net=data)"."""
    rest = dict(labels)
    src = rest.pop("src", None) or rest.pop("source", None)
    dst = rest.pop("dst", None) or rest.pop("destination", None)
    text = f"{suite} {metric}"
    if src and dst:
        text += f" {src}→{dst}"
    if rest:
        text += " (" + ",".join(f"{k}={v}" for k, v in sorted(rest.items())) + ")"
    return text


def ref(commit: models.Commit, component: models.Component) -> CommitRef:
    return CommitRef(component=component.name, sha=commit.sha, title=commit.title,
                     author=commit.author, source=component.source, repo_url=component.url,
                     first_seen_at=commit.first_seen_at, committed_at=commit.committed_at)


def excuse_views(excuses: Iterable[Excuse]) -> tuple[ExcuseView, ...]:
    return tuple(ExcuseView(e.kind, e.subject, e.message, dict(e.data)) for e in excuses)


def run_row(run: models.Run) -> RunRow:
    return RunRow(**_row_fields(run))


def run_view(run: models.Run) -> RunView:
    return RunView(**_row_fields(run),
                   state_diff=tuple(d for d in run.state_diff or () if isinstance(d, dict)),
                   environment=run_line(run.environment),
                   too_busy=run.too_busy)


def _row_fields(run: models.Run) -> dict[str, Any]:
    return {"id": run.id, "kind": run.kind, "attempt": run.attempt, "state": run.state,
            "verdict": run.verdict, "testbed": run.testbed, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at,
            "excuses": excuse_views(run.excuses)}


def items_of(cand: models.Candidate) -> dict[str, models.CombinationItem]:
    return {item.component.name: item for item in cand.combination.items}


def changed_refs(cand: models.Candidate) -> tuple[CommitRef, ...]:
    items = items_of(cand)
    return tuple(ref(items[name].commit, items[name].component)
                 for name in sorted(str(n) for n in cand.changed) if name in items)


def soak_progress(cand: models.Candidate, now: datetime, policy: SoakPolicy) -> SoakProgress | None:
    """How far a soaking candidate is, by the promotion policy's own numbers."""
    if cand.state != CandidateState.SOAKING or cand.soak_started_at is None:
        return None
    soak_runs = [r for r in cand.runs if r.kind == RunKind.SOAK]
    decision = decide(CandidateState.SOAKING, summaries(soak_runs), now, policy,
                      cand.soak_started_at)
    data = decision.data
    elapsed = timedelta(seconds=data.get("elapsed_s", (now - cand.soak_started_at).total_seconds()))
    passing = int(data.get("passing_runs", sum(1 for r in soak_runs if r.verdict == "passed")))
    in_progress = any(r.verdict is None for r in soak_runs)
    last = max(soak_runs, key=lambda r: (r.created_at, r.id), default=None)
    next_at = None
    if not in_progress:
        next_at = now if last is None else max(now, last.created_at + policy.interval)
    return SoakProgress(started_at=cand.soak_started_at, elapsed=max(elapsed, timedelta(0)),
                        duration=policy.duration, passing_runs=passing,
                        min_runs=policy.min_runs, runs_total=len(soak_runs),
                        run_in_progress=in_progress, next_run_at=next_at)


def live_excuses(
    cand: models.Candidate, now: datetime, policy: SoakPolicy,
    waived: frozenset[str] = frozenset(),
) -> tuple[ExcuseView, ...]:
    """What the policy says now for an open candidate; the stored excuses for the others.

    The stored excuses of an active candidate date from the last reconcile pass ("soaking: 2 h of
    7 d" an hour ago); asking the same pure policy again, with the same ``waived`` subjects as
    the scheduler, keeps them in step with the clock.
    """
    state = CandidateState(cand.state)
    if state.is_final or (state is CandidateState.SOAKING and cand.soak_started_at is None):
        return excuse_views(cand.excuses)
    if state is CandidateState.QUEUED and any(e.kind == bisection.WAIT_KIND
                                              for e in cand.excuses):
        return excuse_views(cand.excuses)  # held back while culprit finding runs
    decision = decide(state, apply_waivers(summaries(cand.runs), waived), now, policy,
                      cand.soak_started_at, cand.retried_at)
    if decision.action is Action.START_SOAK:
        # The gate passed but the scheduler left it gating: another candidate holds the soak
        # testbed (scheduler.parallel_gates > 1), and the stored excuse says which.
        return excuse_views(cand.excuses)
    return excuse_views(decision.excuses)


@dataclass(frozen=True, slots=True)
class CandidateSummary:
    """One candidate as lists and answers show it; ``excuses`` as the caller chose them (the
    stored ones in lists, :func:`live_excuses` where one candidate is shown)."""

    id: int
    state: str
    combination_hash: str
    base_version: int | None
    changed: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    gating_started_at: datetime | None
    soak_started_at: datetime | None
    finished_at: datetime | None
    retried_at: datetime | None
    excuses: tuple[ExcuseView, ...]


def candidate_summary(cand: models.Candidate,
                      excuses: tuple[ExcuseView, ...] | None = None) -> CandidateSummary:
    """``cand`` summarised; with its stored excuses unless ``excuses`` are given."""
    return CandidateSummary(
        id=cand.id, state=cand.state, combination_hash=cand.combination_hash,
        base_version=cand.base_version, changed=tuple(str(c) for c in cand.changed),
        created_at=cand.created_at, updated_at=cand.updated_at,
        gating_started_at=cand.gating_started_at, soak_started_at=cand.soak_started_at,
        finished_at=cand.finished_at, retried_at=cand.retried_at,
        excuses=excuse_views(cand.excuses) if excuses is None else excuses)


def audit_view(event: models.AuditEvent) -> AuditView:
    return AuditView(event.id, event.at, event.actor, event.action, event.subject,
                     dict(event.detail or {}))


def commits_between(
    session: Session, component: models.Component, base: models.Commit | None,
    head: models.Commit, limit: int = 20,
) -> tuple[tuple[CommitRef, ...], bool]:
    """Commits reported for ``component`` after ``base`` up to ``head``, newest first.

    Certifier knows the order in which commits were seen, not the git graph: this is the list of
    what arrived on the branch between the two, which is what a reader wants to scan.
    """
    query = select(models.Commit).where(
        models.Commit.component_id == component.id,
        or_(models.Commit.first_seen_at < head.first_seen_at,
            and_(models.Commit.first_seen_at == head.first_seen_at,
                 models.Commit.id <= head.id)))
    if base is not None:
        query = query.where(or_(models.Commit.first_seen_at > base.first_seen_at,
                                and_(models.Commit.first_seen_at == base.first_seen_at,
                                     models.Commit.id > base.id)))
    rows = list(session.scalars(
        query.order_by(models.Commit.first_seen_at.desc(), models.Commit.id.desc())
        .limit(limit + 1)))
    if not rows or rows[0].id != head.id:
        rows = [head]  # the head went back in time (a force-push): show it alone
    return tuple(ref(c, component) for c in rows[:limit]), len(rows) > limit


def base_items(session: Session, version: int | None) -> dict[str, models.CombinationItem]:
    if version is None:
        return {}
    kg = session.get(models.KnownGood, version)
    if kg is None:
        return {}
    items = session.scalars(
        select(models.CombinationItem)
        .where(models.CombinationItem.combination_hash == kg.combination_hash)
        .options(selectinload(models.CombinationItem.component),
                 selectinload(models.CombinationItem.commit)))
    return {i.component.name: i for i in items}


