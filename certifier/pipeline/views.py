"""Read-only views of the pipeline for people: the dashboard's pages and ``certifier status``.

Each function answers one page in a handful of queries and returns plain, frozen dataclasses, so
the HTML templates and the terminal renderer hold no database logic and cannot lazy-load rows one
by one. Nothing here writes. Time is passed in (``now``), and the soak progress comes from the
same pure :func:`certifier.domain.promotion.decide` the scheduler uses, so the dashboard says what
the next reconcile pass will say, not a paraphrase of it.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from certifier.db import models
from certifier.domain import formation
from certifier.domain.environment import judged_figures, summary_line
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import (
    WAIVABLE_KINDS,
    Action,
    SoakPolicy,
    apply_waivers,
    decide,
)
from certifier.pipeline import bisection, knowngood, waivers
from certifier.pipeline.errors import NotFound
from certifier.pipeline.runs import CANDIDATE_SIDE
from certifier.pipeline.toolbox import summaries

DEFAULT_STALE_AFTER = timedelta(days=3)
ACTIVE_STATES = (CandidateState.GATING.value, CandidateState.SOAKING.value)
FINAL_STATES = tuple(s.value for s in CandidateState if s.is_final)
UNFINISHED_RUN_STATES = ("pending", "running")


def stale_after(settings: Any) -> timedelta:
    """``dashboard.stale_after`` from the config when it has one, else three days."""
    configured = getattr(getattr(getattr(settings, "config", None), "dashboard", None),
                         "stale_after", None)
    return configured if isinstance(configured, timedelta) else DEFAULT_STALE_AFTER


# Plain records ------------------------------------------------------------------------------


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
class ExcuseView:
    kind: str
    subject: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

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


@dataclass(frozen=True, slots=True)
class RunView:
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
    state_diff: tuple[dict[str, Any], ...] = ()  # the upgrade suite's, as stored
    environment: str = ""  # the environment check's figures in one line (domain.environment)
    too_busy: bool = False

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


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A candidate on the pipeline board (queued, gating or soaking)."""

    id: int
    state: str
    base_version: int | None
    created_at: datetime
    updated_at: datetime
    changed: tuple[CommitRef, ...]
    excuses: tuple[ExcuseView, ...]
    current_run: RunView | None
    runs_total: int
    soak: SoakProgress | None = None


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """A candidate that reached a final state, and why in one line."""

    id: int
    state: str
    finished_at: datetime | None
    changed: tuple[CommitRef, ...]
    reason: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class TestbedEntry:
    name: str
    driver: str
    role: str
    run_id: int | None = None
    candidate_id: int | None = None
    run_label: str = ""
    run_started_at: datetime | None = None
    lease_expires_at: datetime | None = None
    lease_expired: bool = False


@dataclass(frozen=True, slots=True)
class KnownGoodView:
    version: int
    promoted_at: datetime
    revoked_at: datetime | None
    candidate_id: int
    combination_hash: str
    reason: str
    age: timedelta
    components: tuple[CommitRef, ...]


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    known_good: KnownGoodView | None
    stale_after: timedelta
    queued: tuple[BoardEntry, ...]
    gating: tuple[BoardEntry, ...]
    soaking: tuple[BoardEntry, ...]
    decisions: tuple[DecisionEntry, ...]
    testbeds: tuple[TestbedEntry, ...]
    counts: Mapping[str, int]

    @property
    def stale(self) -> bool:
        """LKGR-style: nothing promoted for longer than the configured age (or never)."""
        return self.known_good is None or self.known_good.age > self.stale_after


# Helpers --------------------------------------------------------------------------------------


def _ref(commit: models.Commit, component: models.Component) -> CommitRef:
    return CommitRef(component=component.name, sha=commit.sha, title=commit.title,
                     author=commit.author, source=component.source, repo_url=component.url,
                     first_seen_at=commit.first_seen_at, committed_at=commit.committed_at)


def _excuses(raw: Iterable[Any]) -> tuple[ExcuseView, ...]:
    return tuple(
        ExcuseView(str(e.get("kind", "")), str(e.get("subject", "")), str(e.get("message", "")),
                   dict(e.get("data") or {}))
        for e in raw if isinstance(e, dict)
    )


def _from_domain(excuses: Iterable[Excuse]) -> tuple[ExcuseView, ...]:
    return tuple(ExcuseView(e.kind, e.subject, e.message, dict(e.data)) for e in excuses)


def _run_view(run: models.Run) -> RunView:
    return RunView(id=run.id, kind=run.kind, attempt=run.attempt, state=run.state,
                   verdict=run.verdict, testbed=run.testbed, created_at=run.created_at,
                   started_at=run.started_at, finished_at=run.finished_at,
                   excuses=_excuses(run.excuses),
                   state_diff=tuple(d for d in run.state_diff or () if isinstance(d, dict)),
                   environment=summary_line(judged_figures(run.environment)),
                   too_busy=run.too_busy)


def _items(cand: models.Candidate) -> dict[str, models.CombinationItem]:
    return {item.component.name: item for item in cand.combination.items}


def _changed(cand: models.Candidate) -> tuple[CommitRef, ...]:
    items = _items(cand)
    return tuple(_ref(items[name].commit, items[name].component)
                 for name in sorted(str(n) for n in cand.changed) if name in items)


def _with_combination_and_runs() -> tuple[LoaderOption, ...]:
    items = selectinload(models.Candidate.combination).selectinload(models.Combination.items)
    return (
        items.selectinload(models.CombinationItem.component),
        items.selectinload(models.CombinationItem.commit),
        selectinload(models.Candidate.runs),
    )


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
        return _excuses(cand.excuses)
    if state is CandidateState.QUEUED and any(isinstance(e, dict) and e.get("kind")
                                              == bisection.WAIT_KIND for e in cand.excuses):
        return _excuses(cand.excuses)  # held back while culprit finding runs
    decision = decide(state, apply_waivers(summaries(cand.runs), waived), now, policy,
                      cand.soak_started_at, cand.retried_at)
    if decision.action is Action.START_SOAK:
        # The gate passed but the scheduler left it gating: another candidate holds the soak
        # testbed (scheduler.parallel_gates > 1), and the stored excuse says which.
        return _excuses(cand.excuses)
    return _from_domain(decision.excuses)


def _board_entry(cand: models.Candidate, now: datetime, policy: SoakPolicy,
                 waived: frozenset[str] = frozenset()) -> BoardEntry:
    current = next((r for r in reversed(cand.runs) if r.state != "finished"), None)
    return BoardEntry(
        id=cand.id, state=cand.state, base_version=cand.base_version,
        created_at=cand.created_at, updated_at=cand.updated_at, changed=_changed(cand),
        excuses=live_excuses(cand, now, policy, waived),
        current_run=_run_view(current) if current is not None else None,
        runs_total=len(cand.runs), soak=soak_progress(cand, now, policy))


def _known_good_view(session: Session, kg: models.KnownGood, now: datetime) -> KnownGoodView:
    combo = session.scalar(
        select(models.Combination).where(models.Combination.hash == kg.combination_hash)
        .options(selectinload(models.Combination.items)
                 .selectinload(models.CombinationItem.component),
                 selectinload(models.Combination.items)
                 .selectinload(models.CombinationItem.commit)))
    items = sorted(combo.items, key=lambda i: i.component.name) if combo else []
    return KnownGoodView(
        version=kg.version, promoted_at=kg.promoted_at, revoked_at=kg.revoked_at,
        candidate_id=kg.candidate_id, combination_hash=kg.combination_hash, reason=kg.reason,
        age=max(now - kg.promoted_at, timedelta(0)),
        components=tuple(_ref(i.commit, i.component) for i in items))


# The overview ---------------------------------------------------------------------------------


def overview(
    session: Session, now: datetime, policy: SoakPolicy, stale: timedelta = DEFAULT_STALE_AFTER,
    *, decisions: int = 10, queued_limit: int = 20,
) -> Overview:
    """The front page: known-good, the board, recent decisions, testbeds."""
    kg = knowngood.current(session)
    board = list(session.scalars(
        select(models.Candidate)
        .where(models.Candidate.state.in_(ACTIVE_STATES))
        .order_by(models.Candidate.id).options(*_with_combination_and_runs())))
    queued = list(session.scalars(
        select(models.Candidate).where(models.Candidate.state == CandidateState.QUEUED)
        .order_by(models.Candidate.id).limit(queued_limit)
        .options(*_with_combination_and_runs())))
    waived = {c.id: waivers.active_subjects(session, c.id, now) for c in board}
    entries = [_board_entry(c, now, policy, waived.get(c.id, frozenset()))
               for c in [*board, *queued]]
    counts = {str(state): int(n) for state, n in session.execute(
        select(models.Candidate.state, func.count()).group_by(models.Candidate.state))}
    return Overview(
        now=now,
        known_good=_known_good_view(session, kg, now) if kg is not None else None,
        stale_after=stale,
        queued=tuple(e for e in entries if e.state == CandidateState.QUEUED),
        gating=tuple(e for e in entries if e.state == CandidateState.GATING),
        soaking=tuple(e for e in entries if e.state == CandidateState.SOAKING),
        decisions=tuple(recent_decisions(session, decisions)),
        testbeds=tuple(testbeds(session, now)),
        counts=counts,
    )


def recent_decisions(session: Session, limit: int = 10) -> list[DecisionEntry]:
    """The newest final candidates (promoted, rejected, superseded, cancelled)."""
    cands = list(session.scalars(
        select(models.Candidate).where(models.Candidate.state.in_(FINAL_STATES))
        .order_by(models.Candidate.finished_at.desc().nulls_last(), models.Candidate.id.desc())
        .limit(limit)
        .options(*_with_combination_and_runs()[:2])))
    versions = dict(session.execute(
        select(models.KnownGood.candidate_id, models.KnownGood.version)
        .where(models.KnownGood.candidate_id.in_([c.id for c in cands])))
        .all()) if cands else {}
    out = []
    for cand in cands:
        excuses = _excuses(cand.excuses)
        version = versions.get(cand.id)
        if cand.state == CandidateState.PROMOTED and version is not None:
            reason = f"promoted to known-good #{version}"
        else:
            reason = excuses[0].message if excuses else cand.state
            if len(excuses) > 1:
                reason += f" (and {len(excuses) - 1} more)"
        out.append(DecisionEntry(id=cand.id, state=cand.state, finished_at=cand.finished_at,
                                 changed=_changed(cand), reason=reason, version=version))
    return out


def testbeds(session: Session, now: datetime) -> list[TestbedEntry]:
    """Every testbed and the run that holds its lease, if any."""
    rows = session.execute(
        select(models.Testbed, models.Run)
        .outerjoin(models.Run, models.Run.id == models.Testbed.leased_by_run_id)
        .order_by(models.Testbed.name)).all()
    out = []
    for bed, run in rows:
        if bed.leased_by_run_id is None:
            out.append(TestbedEntry(bed.name, bed.driver, bed.role))
            continue
        expired = bed.lease_expires_at is not None and bed.lease_expires_at < now
        out.append(TestbedEntry(
            bed.name, bed.driver, bed.role, run_id=bed.leased_by_run_id,
            candidate_id=run.candidate_id if run else None,
            run_label=f"{run.kind} {run.attempt}" if run else "",
            run_started_at=run.started_at if run else None,
            lease_expires_at=bed.lease_expires_at, lease_expired=expired))
    return out


def state_version(session: Session) -> str:
    """A short digest of everything the pages show that can change; cheap enough to poll.

    Candidates move (``updated_at``), runs appear and finish (the unfinished ones are few and
    indexed by state), known-goods are promoted or revoked, commits, audit events and webhook
    deliveries arrive, leases change hands. Each part is an indexed max or a tiny table.
    """
    scalars = session.execute(select(
        select(func.max(models.Candidate.updated_at)).scalar_subquery(),
        select(func.max(models.Candidate.id)).scalar_subquery(),
        select(func.max(models.Run.id)).scalar_subquery(),
        select(func.max(models.KnownGood.version)).scalar_subquery(),
        select(func.count(models.KnownGood.revoked_at)).scalar_subquery(),
        select(func.max(models.Commit.id)).scalar_subquery(),
        select(func.max(models.AuditEvent.id)).scalar_subquery(),
        select(func.max(models.Delivery.id)).scalar_subquery(),
        select(func.count()).select_from(models.Delivery)
        .where(models.Delivery.state == "pending").scalar_subquery(),
    )).one()
    unfinished = session.execute(
        select(models.Run.id, models.Run.state).where(
            models.Run.state.in_(UNFINISHED_RUN_STATES)).order_by(models.Run.id)).all()
    leases = session.execute(
        select(models.Testbed.name, models.Testbed.leased_by_run_id)
        .order_by(models.Testbed.name)).all()
    text = repr((tuple(scalars), [tuple(r) for r in unfinished], [tuple(r) for r in leases]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Candidates -----------------------------------------------------------------------------------


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
    bisection: bisection.BisectionView | None = None  # culprit finding after a rejection

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


def _audit_view(event: models.AuditEvent) -> AuditView:
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
    return tuple(_ref(c, component) for c in rows[:limit]), len(rows) > limit


def _base_items(session: Session, version: int | None) -> dict[str, models.CombinationItem]:
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
    flagged = {str(e.get("subject")) for r in runs for e in r.excuses
                if isinstance(e, dict) and e.get("kind") in ("regression", "limit")}
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


def candidate_page(session: Session, candidate_id: int, now: datetime,
                   policy: SoakPolicy) -> CandidatePage:
    """Everything the candidate page shows."""
    cand = session.scalar(select(models.Candidate).where(models.Candidate.id == candidate_id)
                          .options(*_with_combination_and_runs()))
    if cand is None:
        raise NotFound(f"no candidate {candidate_id}")
    items = _items(cand)
    base = _base_items(session, cand.base_version)
    changes = []
    for name in sorted(str(n) for n in cand.changed):
        if name not in items:
            continue
        item = items[name]
        base_item = base.get(name)
        between, more = commits_between(session, item.component,
                                        base_item.commit if base_item else None, item.commit)
        changes.append(Change(name, _ref(base_item.commit, base_item.component)
                              if base_item else None, _ref(item.commit, item.component),
                              between, more))
    series, label = _series(session, cand.runs, cand.base_version)
    version = session.scalar(select(models.KnownGood.version)
                             .where(models.KnownGood.candidate_id == cand.id))
    culprit = None
    found = bisection.view(cand.bisection)
    if cand.state == CandidateState.REJECTED and (found is None or found.culprit is None):
        past = formation.PastCandidate(
            cand.id, CandidateState.REJECTED, {n: i.commit.sha for n, i in items.items()},
            tuple(str(n) for n in cand.changed), cand.base_version)
        for (name, _sha), _by in formation.culprits([past]).items():
            culprit = _ref(items[name].commit, items[name].component)
    # Holds and isolation are audited in the pass that formed the candidate (subject: the
    # component, detail: the candidate); everything else names the candidate as its subject.
    formed = and_(models.AuditEvent.action.in_(("hold", "isolate")),
                  models.AuditEvent.at >= cand.created_at - timedelta(seconds=5),
                  models.AuditEvent.at <= cand.created_at + timedelta(minutes=5))
    events = [_audit_view(e) for e in session.scalars(
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
        combination=tuple(_ref(items[n].commit, items[n].component) for n in sorted(items)),
        changes=tuple(changes), runs=tuple(_run_view(r) for r in cand.runs),
        excuses=live_excuses(cand, now, policy, waivers.active_subjects(session, cand.id, now)),
        series=series, baseline_label=label, marked_bad=BadMark.of(cand.combination),
        bisection=found,
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
    cands = list(session.scalars(query.options(*_with_combination_and_runs()[:2])))
    rows = []
    for cand in cands[:limit]:
        excuses = _excuses(cand.excuses)
        rows.append(CandidateRow(cand.id, cand.state, cand.base_version, cand.created_at,
                                 cand.finished_at, _changed(cand),
                                 excuses[0].message if excuses else ""))
    return rows, (cands[limit - 1].id if len(cands) > limit else None)
