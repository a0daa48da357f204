"""The candidate page and the candidates list: what a candidate changed, its runs, series
against the known-good's band, culprit, holds, audit trail and excuses."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain import formation
from certifier.domain.judgement import Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import (
    SoakPolicy,
)
from certifier.pipeline import queries, waivers
from certifier.pipeline.queries import with_combination_and_runs
from certifier.pipeline.read.bisection import BisectionView
from certifier.pipeline.read.bisection import view as bisection_view
from certifier.pipeline.read.records import (
    AuditView,
    BadMark,
    CandidateSummary,
    CommitRef,
    ExcuseView,
    NamedSeries,
    RunView,
    SoakProgress,
    audit_view,
    base_items,
    candidate_summary,
    changed_refs,
    commits_between,
    excuse_views,
    items_of,
    live_excuses,
    ref,
    run_view,
    soak_progress,
)
from certifier.pipeline.runs import CANDIDATE_SIDE


@dataclass(frozen=True, slots=True)
class Change:
    """One component a candidate changed against its base, and the commits in between."""

    component: str
    base: CommitRef | None
    head: CommitRef
    between: tuple[CommitRef, ...]  # newest first, the head included
    more: bool = False  # more commits than shown


@dataclass(frozen=True, slots=True)
class Band:
    """The known-good's samples of one series: n, median, quartiles, extremes."""

    n: int
    median: float
    q1: float
    q3: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Band:
        ordered = sorted(values)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(len(ordered), statistics.median(ordered), q1, q3, ordered[0], ordered[-1])


@dataclass(frozen=True, slots=True)
class Point:
    run_id: int
    run_label: str
    value: float


@dataclass(frozen=True, slots=True)
class SeriesView(NamedSeries):
    points: tuple[Point, ...]
    baseline: Band | None
    flagged: bool = False  # a run's regression or limit excuse names this series

    @property
    def median(self) -> float:
        return statistics.median(p.value for p in self.points)

    @property
    def change_pct(self) -> float | None:
        """Candidate median against the baseline median, in percent (signed, not 'worse')."""
        if self.baseline is None or self.baseline.median == 0:
            return None
        return 100.0 * (self.median - self.baseline.median) / abs(self.baseline.median)


@dataclass(frozen=True, slots=True)
class CandidatePage:
    id: int
    state: str
    base_version: int | None
    combination_hash: str
    created_at: datetime
    updated_at: datetime
    gating_started_at: datetime | None
    soak_started_at: datetime | None
    finished_at: datetime | None
    version: int | None  # the known-good it became, if promoted
    combination: tuple[CommitRef, ...]
    changes: tuple[Change, ...]
    runs: tuple[RunView, ...]
    excuses: tuple[ExcuseView, ...]
    series: tuple[SeriesView, ...]
    baseline_label: str | None
    soak: SoakProgress | None
    culprit: CommitRef | None
    holds: tuple[AuditView, ...]
    events: tuple[AuditView, ...]
    marked_bad: BadMark | None = None
    bisection: BisectionView | None = None  # culprit finding after a rejection

    @property
    def is_active(self) -> bool:
        return CandidateState(self.state).is_active

    @property
    def is_open(self) -> bool:
        return not CandidateState(self.state).is_final

    @property
    def state_run(self) -> RunView | None:
        """The newest run with a state diff across the upgrade, shown on the page."""
        return next((r for r in reversed(self.runs) if r.state_diff), None)

    @property
    def waivers(self) -> tuple[AuditView, ...]:
        return tuple(e for e in self.events if e.action.startswith("waive"))


def _series(
    session: Session, runs: Sequence[models.Run], base_version: int | None
) -> tuple[tuple[SeriesView, ...], str | None]:
    """The candidate's measurement series, each with the base known-good's band (both from
    their own side: the control rows of an A/B run are on the run page)."""
    by_id = {r.id: r for r in runs}
    rows = session.execute(
        select(models.MeasurementRow.run_id, models.MeasurementRow.suite,
               models.MeasurementRow.metric, models.MeasurementRow.series,
               models.MeasurementRow.labels, models.MeasurementRow.value,
               models.MeasurementRow.unit, models.MeasurementRow.better)
        .where(models.MeasurementRow.run_id.in_(list(by_id)), CANDIDATE_SIDE)
        .order_by(models.MeasurementRow.run_id, models.MeasurementRow.id)).all() if by_id else []
    flagged = {e.subject for r in runs for e in r.excuses if e.kind in ("regression", "limit")}
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.series].append(row)
    samples: dict[str, list[float]] = defaultdict(list)
    label = None
    kg = session.get(models.KnownGood, base_version) if base_version is not None else None
    if kg is not None and grouped:
        label = f"known-good #{kg.version}"
        for series, value in session.execute(
            select(models.MeasurementRow.series, models.MeasurementRow.value)
            .join(models.Run, models.Run.id == models.MeasurementRow.run_id)
            .where(models.Run.candidate_id == kg.candidate_id,
                   models.Run.verdict == Verdict.PASSED, CANDIDATE_SIDE,
                   models.MeasurementRow.series.in_(list(grouped)))):
            samples[series].append(value)
    out = []
    for key, group in grouped.items():
        first = group[0]
        points = tuple(Point(r.run_id, f"{by_id[r.run_id].kind} {by_id[r.run_id].attempt}",
                             float(r.value)) for r in group)
        out.append(SeriesView(
            key=key, suite=first.suite, metric=first.metric,
            labels={str(k): str(v) for k, v in (first.labels or {}).items()},
            unit=first.unit, better=first.better, points=points,
            baseline=Band.of(samples[key]) if samples.get(key) else None,
            flagged=key in flagged))
    out.sort(key=lambda s: (s.suite, s.metric, s.key))
    return tuple(out), label


@dataclass(frozen=True, slots=True)
class CandidateDetail:
    """One candidate as the API's answer gives it and the candidate page starts from: its
    excuses are :func:`live_excuses`, the policy's answer now."""

    summary: CandidateSummary
    combination: tuple[CommitRef, ...]  # by component name
    runs: tuple[RunView, ...]
    marked_bad: BadMark | None
    bisection: BisectionView | None


def _detail(session: Session, cand: models.Candidate, now: datetime,
            policy: SoakPolicy) -> CandidateDetail:
    items = items_of(cand)
    excuses = live_excuses(cand, now, policy, waivers.active_subjects(session, cand.id, now))
    return CandidateDetail(
        summary=candidate_summary(cand, excuses),
        combination=tuple(ref(items[n].commit, items[n].component) for n in sorted(items)),
        runs=tuple(run_view(r) for r in cand.runs), marked_bad=BadMark.of(cand.combination),
        bisection=bisection_view(cand.bisection))


def candidate_detail(session: Session, candidate_id: int, now: datetime,
                     policy: SoakPolicy) -> CandidateDetail:
    """One candidate with its combination, runs and excuses now; NotFound if there is none."""
    return _detail(session, queries.candidate_detail(session, candidate_id), now, policy)


def candidate_page(session: Session, candidate_id: int, now: datetime,
                   policy: SoakPolicy) -> CandidatePage:
    """Everything the candidate page shows."""
    cand = queries.candidate_detail(session, candidate_id)
    detail = _detail(session, cand, now, policy)
    items = items_of(cand)
    base = base_items(session, cand.base_version)
    changes = []
    for name in sorted(str(n) for n in cand.changed):
        if name not in items:
            continue
        item = items[name]
        base_item = base.get(name)
        between, more = commits_between(session, item.component,
                                        base_item.commit if base_item else None, item.commit)
        changes.append(Change(name, ref(base_item.commit, base_item.component)
                              if base_item else None, ref(item.commit, item.component),
                              between, more))
    series, label = _series(session, cand.runs, cand.base_version)
    version = session.scalar(select(models.KnownGood.version)
                             .where(models.KnownGood.candidate_id == cand.id))
    culprit = None
    found = detail.bisection
    if cand.state == CandidateState.REJECTED and (found is None or found.culprit is None):
        past = formation.PastCandidate(
            cand.id, CandidateState.REJECTED, {n: i.commit.sha for n, i in items.items()},
            tuple(str(n) for n in cand.changed), cand.base_version)
        for (name, _sha), _by in formation.culprits([past]).items():
            culprit = ref(items[name].commit, items[name].component)
    # Holds and isolation are audited in the pass that formed the candidate (subject: the
    # component, detail: the candidate); everything else names the candidate as its subject.
    formed = and_(models.AuditEvent.action.in_(("hold", "isolate")),
                  models.AuditEvent.at >= cand.created_at - timedelta(seconds=5),
                  models.AuditEvent.at <= cand.created_at + timedelta(minutes=5))
    events = [audit_view(e) for e in session.scalars(
        select(models.AuditEvent)
        .where(or_(models.AuditEvent.subject == f"candidate {cand.id}", formed))
        .order_by(models.AuditEvent.id))]
    holds = tuple(e for e in events if e.action in ("hold", "isolate")
                  and e.detail.get("candidate") == cand.id)
    return CandidatePage(
        id=cand.id, state=cand.state, base_version=cand.base_version,
        combination_hash=cand.combination_hash, created_at=cand.created_at,
        updated_at=cand.updated_at, gating_started_at=cand.gating_started_at,
        soak_started_at=cand.soak_started_at, finished_at=cand.finished_at, version=version,
        combination=detail.combination, changes=tuple(changes), runs=detail.runs,
        excuses=detail.summary.excuses, series=series, baseline_label=label,
        marked_bad=detail.marked_bad, bisection=found,
        soak=soak_progress(cand, now, policy), culprit=culprit, holds=holds,
        events=tuple(e for e in events if e.subject == f"candidate {cand.id}"))


@dataclass(frozen=True, slots=True)
class CandidateRow:
    id: int
    state: str
    base_version: int | None
    created_at: datetime
    finished_at: datetime | None
    changed: tuple[CommitRef, ...]
    summary: str


def candidate_list(session: Session, state: str | None = None, before: int | None = None,
                   limit: int = 50) -> tuple[list[CandidateRow], int | None]:
    """Candidates newest first, one page; and the id to continue from, if there is more."""
    query = select(models.Candidate).order_by(models.Candidate.id.desc()).limit(limit + 1)
    if state:
        query = query.where(models.Candidate.state == state)
    if before is not None:
        query = query.where(models.Candidate.id < before)
    cands = list(session.scalars(query.options(*with_combination_and_runs()[:2])))
    rows = []
    for cand in cands[:limit]:
        excuses = excuse_views(cand.excuses)
        rows.append(CandidateRow(cand.id, cand.state, cand.base_version, cand.created_at,
                                 cand.finished_at, changed_refs(cand),
                                 excuses[0].message if excuses else ""))
    return rows, (cands[limit - 1].id if len(cands) > limit else None)
