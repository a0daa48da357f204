"""The reconcile loop: read state, advance each candidate through the pure policy, enqueue what is
missing.

It is idempotent — running it twice, or concurrently, does no harm — which is what makes
redelivered tasks and a restarted beat safe. On PostgreSQL a transaction-scoped advisory lock makes
concurrent passes queue up behind each other; on SQLite the pass takes the write lock first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain import formation
from certifier.domain.clock import Clock
from certifier.domain.combination import Combination
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState, check_transition
from certifier.domain.promotion import Action, RunSummary, SoakPolicy, apply_waivers, decide
from certifier.pipeline import components, knowngood, runs, waivers
from certifier.pipeline.dispatch import Dispatcher, enqueue_run_after_commit
from certifier.pipeline.errors import Conflict

_LOCK_KEY = 0x63657274  # "cert"


@dataclass
class ReconcileReport:
    formed: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    boarded: list[int] = field(default_factory=list)
    started_soak: list[int] = field(default_factory=list)
    promoted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    runs_created: list[int] = field(default_factory=list)
    runs_redispatched: list[int] = field(default_factory=list)
    runs_expired: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    soak: SoakPolicy
    run_timeout: timedelta = timedelta(minutes=30)
    redispatch_after: timedelta = timedelta(seconds=60)


def _lock(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    elif dialect == "sqlite":
        # Take SQLite's write lock before the pass reads anything: two passes that both read
        # before either writes would act twice on one state (a promotion seen as base_moved).
        session.execute(text("UPDATE testbeds SET name = name WHERE 0 = 1"))


def audit(session: Session, clock: Clock, actor: str, action: str, subject: str, /,
          **detail: object) -> None:
    session.add(models.AuditEvent(at=clock.now(), actor=actor, action=action, subject=subject,
                                  detail=detail))


def move(session: Session, candidate: models.Candidate, target: CandidateState,
         clock: Clock) -> None:
    """Change a candidate's state through the lifecycle's transition table."""
    state = check_transition(candidate.state, target)
    now = clock.now()
    candidate.state = state
    candidate.updated_at = now
    if state is CandidateState.GATING:
        candidate.gating_started_at = now
    elif state is CandidateState.SOAKING:
        candidate.soak_started_at = now
    elif state.is_final:
        candidate.finished_at = now


def ensure_combination(session: Session, combo: Combination, clock: Clock) -> models.Combination:
    row = session.get(models.Combination, combo.hash)
    if row is not None:
        return row
    row = models.Combination(hash=combo.hash, created_at=clock.now())
    session.add(row)
    for name, sha in combo.pairs:
        component = components.get_component(session, name)
        commit = session.scalar(select(models.Commit).where(
            models.Commit.component_id == component.id, models.Commit.sha == sha))
        if commit is None:
            commit, _ = components.report_commit(session, name, sha, clock, seen_via="manifest")
        session.add(models.CombinationItem(combination_hash=combo.hash,
                                           component_id=component.id, commit_id=commit.id))
    session.flush()
    return row


def run_summaries(candidate: models.Candidate,
               waived: frozenset[str] = frozenset()) -> list[RunSummary]:
    """The candidate's runs for the policy, with the subjects people waived set aside."""
    return apply_waivers([
        RunSummary(
            id=r.id, kind=RunKind(r.kind),
            verdict=Verdict(r.verdict) if r.verdict else None,
            created_at=r.created_at, finished_at=r.finished_at,
            excuses=tuple(Excuse.from_dict(e) for e in r.excuses),
        )
        for r in candidate.runs
    ], waived)


def _create_run(session: Session, candidate: models.Candidate, kind: RunKind, clock: Clock,
                dispatcher: Dispatcher) -> models.Run:
    attempt = 1 + sum(1 for r in candidate.runs if r.kind == kind)
    now = clock.now()
    run = models.Run(candidate_id=candidate.id, kind=kind, attempt=attempt,
                     state=runs.RunState.PENDING, created_at=now, dispatched_at=now)
    session.add(run)
    session.flush()
    session.refresh(candidate, ["runs"])
    enqueue_run_after_commit(session, dispatcher, run.id)
    return run


def _form(session: Session, clock: Clock, report: ReconcileReport) -> None:
    kg = knowngood.current(session)
    kg_combo = knowngood.combination_of(session, kg.combination_hash) if kg else None
    head_commits = components.heads(session)
    required = [c.name for c in components.list_components(session) if not c.paused]
    # Rejected candidates blame culprits and drive isolation (formation's module docstring).
    rejected = session.scalars(select(models.Candidate).where(
        models.Candidate.state == CandidateState.REJECTED)
        .order_by(models.Candidate.id.desc()).limit(200)).all()
    history = [formation.PastCandidate(
        c.id, CandidateState(c.state), knowngood.combination_of(session, c.combination_hash),
        tuple(str(n) for n in c.changed), c.base_version) for c in rejected]
    wanted = formation.next_desired({name: c.sha for name, c in head_commits.items()},
                                    kg_combo, kg.version if kg else None, history)
    desired = wanted.combination
    open_cands = list(session.scalars(select(models.Candidate).where(
        models.Candidate.state.in_([s.value for s in CandidateState if not s.is_final]))))
    views = [formation.CandidateView(c.id, CandidateState(c.state), c.combination_hash)
             for c in open_cands]
    if desired is not None:
        earlier = session.scalar(select(models.Candidate).where(
            models.Candidate.combination_hash == desired.hash))
        if earlier is not None and earlier not in open_cands:
            views.append(formation.CandidateView(earlier.id, CandidateState(earlier.state),
                                                 earlier.combination_hash))
    the_plan = formation.plan(desired, kg_combo, views, required)
    by_id = {c.id: c for c in open_cands}
    for cid in the_plan.supersede:
        move(session, by_id[cid], CandidateState.SUPERSEDED, clock)
        by_id[cid].excuses = [Excuse("superseded", "pipeline",
                                     "superseded by a newer combination of heads").as_dict()]
        report.superseded.append(cid)
    if the_plan.create is not None:
        ensure_combination(session, the_plan.create, clock)
        now = clock.now()
        cand = models.Candidate(
            combination_hash=the_plan.create.hash, state=CandidateState.QUEUED,
            base_version=kg.version if kg else None, changed=list(the_plan.changed),
            excuses=[], created_at=now, updated_at=now)
        session.add(cand)
        session.flush()
        report.formed.append(cand.id)
        for hold in wanted.holds:
            audit(session, clock, "scheduler", "hold", f"component {hold.component}",
                  candidate=cand.id, culprit=hold.culprit, held_at=hold.at,
                  blamed_by=hold.blamed_by)
        if wanted.isolating is not None:
            audit(session, clock, "scheduler", "isolate", f"component {wanted.isolating}",
                  candidate=cand.id)


def _board(session: Session, clock: Clock, report: ReconcileReport) -> None:
    """Start the oldest queued candidate when no candidate holds the pipeline."""
    active = session.scalar(select(models.Candidate.id).where(
        models.Candidate.state.in_([CandidateState.GATING, CandidateState.SOAKING])).limit(1))
    if active is not None:
        return
    nxt = session.scalar(select(models.Candidate).where(
        models.Candidate.state == CandidateState.QUEUED).order_by(models.Candidate.id).limit(1))
    if nxt is None:
        return
    # Re-base on the current known-good: it may have moved while this one queued.
    kg = knowngood.current(session)
    kg_combo = knowngood.combination_of(session, kg.combination_hash) if kg else None
    nxt.base_version = kg.version if kg else None
    nxt.changed = knowngood.combination_of(session, nxt.combination_hash).changed_against(kg_combo)
    move(session, nxt, CandidateState.GATING, clock)
    report.boarded.append(nxt.id)


def _advance(session: Session, cand: models.Candidate, clock: Clock, policy: SchedulerPolicy,
             dispatcher: Dispatcher, report: ReconcileReport) -> None:
    for _ in range(3):  # a state change may call for a run at once (gate passed → first soak run)
        waived = waivers.active_subjects(session, cand.id, clock.now())
        decision = decide(CandidateState(cand.state), run_summaries(cand, waived), clock.now(),
                          policy.soak, cand.soak_started_at)
        cand.excuses = [e.as_dict() for e in decision.excuses]
        if decision.next_run is not None:
            run = _create_run(session, cand, decision.next_run, clock, dispatcher)
            report.runs_created.append(run.id)
        if decision.action is Action.START_SOAK:
            move(session, cand, CandidateState.SOAKING, clock)
            report.started_soak.append(cand.id)
            continue
        if decision.action is Action.REJECT:
            move(session, cand, CandidateState.REJECTED, clock)
            audit(session, clock, "scheduler", "reject", f"candidate {cand.id}",
                  excuses=cand.excuses)
            report.rejected.append(cand.id)
        elif decision.action is Action.PROMOTE:
            _promote(session, cand, clock, report)
        return


def _promote(session: Session, cand: models.Candidate, clock: Clock,
             report: ReconcileReport) -> None:
    try:
        with session.begin_nested():
            kg = knowngood.promote(session, cand, clock, reason="soak passed")
    except Conflict as exc:
        move(session, cand, CandidateState.SUPERSEDED, clock)
        cand.excuses = [Excuse("base_moved", "known-good", str(exc)).as_dict()]
        return
    move(session, cand, CandidateState.PROMOTED, clock)
    cand.excuses = []
    audit(session, clock, "scheduler", "promote", f"candidate {cand.id}", version=kg.version)
    report.promoted.append(cand.id)


def _redispatch(session: Session, clock: Clock, policy: SchedulerPolicy,
                dispatcher: Dispatcher, report: ReconcileReport) -> None:
    """Send again pending runs whose message may have been lost (e.g. a SIGKILLed worker)."""
    cutoff = clock.now() - policy.redispatch_after
    for run in session.scalars(select(models.Run).where(
            models.Run.state == runs.RunState.PENDING, models.Run.dispatched_at < cutoff)):
        run.dispatched_at = clock.now()
        enqueue_run_after_commit(session, dispatcher, run.id)
        report.runs_redispatched.append(run.id)


def reconcile(session: Session, clock: Clock, policy: SchedulerPolicy,
              dispatcher: Dispatcher) -> ReconcileReport:
    """One pass of the loop; flushes, the caller commits."""
    _lock(session)
    report = ReconcileReport()
    report.runs_expired = runs.expire_stale(session, clock, policy.run_timeout)
    _form(session, clock, report)
    _board(session, clock, report)
    active = session.scalars(select(models.Candidate).where(
        models.Candidate.state.in_([CandidateState.GATING, CandidateState.SOAKING]))
        .order_by(models.Candidate.id)).all()
    for cand in active:
        _advance(session, cand, clock, policy, dispatcher, report)
    if report.promoted or report.rejected:
        _board(session, clock, report)
        for cand in session.scalars(select(models.Candidate).where(
                models.Candidate.id.in_(report.boarded))):
            _advance(session, cand, clock, policy, dispatcher, report)
    _redispatch(session, clock, policy, dispatcher, report)
    session.flush()
    return report
