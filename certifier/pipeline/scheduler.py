"""The reconcile loop: read state, advance each candidate through the pure policy, enqueue what is
missing.

It is idempotent — running it twice, or concurrently, does no harm — which is what makes
redelivered tasks and a restarted beat safe. On PostgreSQL a transaction-scoped advisory lock makes
concurrent passes queue up behind each other; on SQLite the pass takes the write lock first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain import formation
from certifier.domain.bisection import BisectPolicy
from certifier.domain.clock import Clock
from certifier.domain.combination import Combination
from certifier.domain.judgement import Excuse, RunKind
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import Action, SoakPolicy, apply_waivers, decide
from certifier.pipeline import bisection, components, knowngood, notify, runs, waivers
from certifier.pipeline.dispatch import Dispatcher, enqueue_run_after_commit
from certifier.pipeline.errors import Conflict
from certifier.pipeline.toolbox import audit, move, pass_lock, summaries
from certifier.settings import NotificationsConfig


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
    bisections_started: list[int] = field(default_factory=list)  # culprit finding began
    bisections_ended: list[int] = field(default_factory=list)  # found, inconclusive, stopped

    def fold(self, progress: bisection.Progress) -> None:
        """Add what culprit finding did in this pass."""
        self.bisections_started.extend(progress.started)
        self.bisections_ended.extend(progress.ended)
        self.runs_created.extend(progress.runs_created)


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    soak: SoakPolicy
    run_timeout: timedelta = timedelta(minutes=30)
    redispatch_after: timedelta = timedelta(seconds=60)
    # Candidates gating or soaking at once; soak stays one at a time (docs: Scale-out).
    parallel_gates: int = 1
    # A control run of the known-good after every N soak runs (0: none): the detector's
    # baseline then follows the testbed's drift instead of aging with the known-good's soak.
    baseline_every: int = 0
    # Outgoing webhooks on promotion and rejection (certifier/pipeline/notify.py).
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    # Culprit finding after a rejection (certifier/pipeline/bisection.py); None: off.
    bisection: BisectPolicy | None = field(default_factory=BisectPolicy)


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


def _marked_bad(session: Session, desired: Combination | None) -> frozenset[str]:
    """``{desired.hash}`` if a person marked that combination bad, else nothing."""
    row = session.get(models.Combination, desired.hash) if desired is not None else None
    return frozenset({row.hash}) if row is not None and row.bad_at is not None else frozenset()


def _audit_refused(session: Session, clock: Clock, combination_hash: str) -> None:
    """Say once (not on every pass) why the train waits: the heads make a bad combination."""
    subject = f"combination {combination_hash}"
    said = session.scalar(select(models.AuditEvent.id).where(
        models.AuditEvent.action == "skip_bad", models.AuditEvent.subject == subject).limit(1))
    if said is None:
        combo = session.get_one(models.Combination, combination_hash)
        audit(session, clock, "scheduler", "skip_bad", subject,
              reason=f"{knowngood.bad_message(combo)}; waiting for a new head")


def _gone_hold_targets(session: Session, kg_combo: Combination | None,
                       history: list[formation.PastCandidate]) -> frozenset[tuple[str, str]]:
    """Which commits a hold could hold at (the known-good's, culprit finding's last good ones)
    are gone upstream: formation releases such a hold."""
    targets = set(kg_combo.items()) if kg_combo is not None else set()
    targets.update((p.bisected.component, p.bisected.last_good) for p in history
                   if p.bisected is not None)
    return components.gone_among(session, targets)


def _tried(session: Session, combination_hash: str) -> bool:
    """Whether a combination was a candidate that has ended (rejected, cancelled, superseded):
    formation never asks for such an isolation again, as it would never be formed."""
    return session.scalar(select(models.Candidate.id).where(
        models.Candidate.combination_hash == combination_hash,
        models.Candidate.state.in_([s.value for s in CandidateState if s.is_final]))) is not None


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
        tuple(str(n) for n in c.changed), c.base_version,
        bisecting=bisection.is_running(c.bisection), bisected=bisection.bisected(c.bisection))
        for c in rejected]
    wanted = formation.next_desired({name: c.sha for name, c in head_commits.items()},
                                    kg_combo, kg.version if kg else None, history,
                                    gone=_gone_hold_targets(session, kg_combo, history),
                                    tried=lambda combination_hash: _tried(
                                        session, combination_hash))
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
    the_plan = formation.plan(desired, kg_combo, views, required,
                              bad=_marked_bad(session, desired))
    if the_plan.refused_bad is not None:
        _audit_refused(session, clock, the_plan.refused_bad)
    by_id = {c.id: c for c in open_cands}
    formed: models.Candidate | None = None
    if the_plan.create is not None:
        components.ensure_combination(session, the_plan.create, clock)
        now = clock.now()
        cand = models.Candidate(
            combination_hash=the_plan.create.hash, state=CandidateState.QUEUED,
            base_version=kg.version if kg else None, changed=list(the_plan.changed),
            excuses=(), created_at=now, updated_at=now)
        session.add(cand)
        session.flush()
        report.formed.append(cand.id)
        formed = cand
        for hold in wanted.holds:
            audit(session, clock, "scheduler", "hold", f"component {hold.component}",
                  candidate=cand.id, culprit=hold.culprit, held_at=hold.at,
                  blamed_by=hold.blamed_by)
        if wanted.isolating is not None:
            audit(session, clock, "scheduler", "isolate", f"component {wanted.isolating}",
                  candidate=cand.id)
    for cid in the_plan.supersede:
        _supersede(session, clock, by_id[cid], formed)
        report.superseded.append(cid)
    _audit_released(session, clock, wanted.released)


def _supersede(session: Session, clock: Clock, cand: models.Candidate,
               by: models.Candidate | None) -> None:
    """Supersede a queued candidate, naming its successor. One a person waived back into the
    queue says that its waivers stay behind (they were for its runs), and the audit log says
    so too: a person's decision never vanishes silently."""
    move(session, cand, CandidateState.SUPERSEDED, clock)
    successor = f"candidate {by.id}" if by is not None else "a newer candidate"
    waived = sorted({w.subject for w in waivers.for_candidate(session, cand.id)})
    message = f"superseded by {successor}, a newer combination of heads"
    data: dict[str, object] = {"by": by.id if by is not None else None}
    if waived:
        message += (f", before it ran again; its waivers ({', '.join(waived)}) stay with it: "
                    "waive on the new candidate if the failure shows again")
        data["waived"] = waived
        audit(session, clock, "scheduler", "supersede", f"candidate {cand.id}",
              by=data["by"], waived=waived)
    cand.excuses = (Excuse("superseded", "pipeline", message, data),)


def _audit_released(session: Session, clock: Clock,
                    released: tuple[formation.Hold, ...]) -> None:
    """Say once per hold that it was released because its commit is gone upstream."""
    for hold in released:
        subject = f"component {hold.component}"
        said = session.scalars(select(models.AuditEvent.detail).where(
            models.AuditEvent.action == "release_hold", models.AuditEvent.subject == subject))
        if any(d.get("held_at") == hold.at and d.get("culprit") == hold.culprit for d in said):
            continue
        audit(session, clock, "scheduler", "release_hold", subject, culprit=hold.culprit,
              held_at=hold.at, blamed_by=hold.blamed_by,
              reason=f"the commit it held at, {hold.at[:12]}, is gone upstream")


def _board(session: Session, clock: Clock, report: ReconcileReport,
           parallel_gates: int = 1) -> None:
    """Start the oldest queued candidates while fewer than ``parallel_gates`` are active."""
    if bisection.hold_boarding(session) is not None:
        return  # the next candidate waits, to hold back the commit culprit finding names
    active = session.scalar(select(func.count(models.Candidate.id)).where(
        models.Candidate.state.in_([CandidateState.GATING, CandidateState.SOAKING]))) or 0
    if active >= parallel_gates:
        return
    for nxt in session.scalars(select(models.Candidate).where(
            models.Candidate.state == CandidateState.QUEUED).order_by(models.Candidate.id)
            .limit(parallel_gates - active)).all():
        _rebase(session, nxt)  # the known-good may have moved while this one queued
        move(session, nxt, CandidateState.GATING, clock)
        report.boarded.append(nxt.id)


def _rebase(session: Session, cand: models.Candidate) -> None:
    """Base ``cand`` on the current known-good: what it changes, and what it upgrades from."""
    kg = knowngood.current(session)
    kg_combo = knowngood.combination_of(session, kg.combination_hash) if kg else None
    cand.base_version = kg.version if kg else None
    cand.changed = knowngood.combination_of(session, cand.combination_hash).changed_against(
        kg_combo)


def _waits_to_soak(session: Session, cand: models.Candidate, clock: Clock) -> bool:
    """Soak stays one at a time: with ``parallel_gates`` > 1, a candidate whose gate passed
    waits, still gating, while another one soaks.

    When its turn comes the known-good may have moved (the other one was promoted): it is then
    re-based, so that its soak runs upgrade from the known-good it would replace, and promotion's
    compare-and-swap does not supersede it after a whole soak.
    """
    soaking = session.scalar(select(models.Candidate.id).where(
        models.Candidate.state == CandidateState.SOAKING, models.Candidate.id != cand.id)
        .order_by(models.Candidate.id).limit(1))
    if soaking is not None:
        cand.excuses = (Excuse("gating", "soak", f"gate passed: waiting for candidate {soaking} "
                               "to finish soaking"),)
        return True
    kg = knowngood.current(session)
    if cand.base_version != (kg.version if kg else None):
        old = cand.base_version
        _rebase(session, cand)
        audit(session, clock, "scheduler", "rebase", f"candidate {cand.id}",
              base_was=old, base=cand.base_version)
    return False


def _advance(session: Session, cand: models.Candidate, clock: Clock, policy: SchedulerPolicy,
             dispatcher: Dispatcher, report: ReconcileReport) -> None:
    for _ in range(3):  # a state change may call for a run at once (gate passed → first soak run)
        waived = waivers.active_subjects(session, cand.id, clock.now())
        decision = decide(CandidateState(cand.state), apply_waivers(summaries(cand.runs), waived),
                          clock.now(), policy.soak, cand.soak_started_at, cand.retried_at)
        cand.excuses = decision.excuses
        if decision.next_run is not None:
            run = _create_run(session, cand, decision.next_run, clock, dispatcher)
            report.runs_created.append(run.id)
            if decision.next_run is RunKind.SOAK:
                _control_run(session, cand, clock, policy, dispatcher, report)
        if decision.action is Action.START_SOAK:
            if _waits_to_soak(session, cand, clock):
                return
            move(session, cand, CandidateState.SOAKING, clock)
            report.started_soak.append(cand.id)
            continue
        if decision.action is Action.REJECT:
            move(session, cand, CandidateState.REJECTED, clock)
            audit(session, clock, "scheduler", "reject", f"candidate {cand.id}",
                  excuses=[e.as_dict() for e in cand.excuses])
            report.rejected.append(cand.id)
            # Notify first: the payload carries the rejection's excuses, not culprit finding's.
            notify.candidate_rejected(session, clock,
                                      notify.Notifier(policy.notifications, dispatcher), cand)
            report.fold(bisection.start(session, cand, clock, policy.bisection, dispatcher))
        elif decision.action is Action.PROMOTE:
            _promote(session, cand, clock, report, notify.Notifier(policy.notifications,
                                                                   dispatcher),
                     decision.excuses)
        return


def _control_run(session: Session, cand: models.Candidate, clock: Clock,
                 policy: SchedulerPolicy, dispatcher: Dispatcher, report: ReconcileReport) -> None:
    """After every ``baseline_every``-th soak run, a baseline run of the current known-good.

    It belongs to the known-good's candidate, so its passing measurements join the baseline
    (``runs.history``); one is never queued twice.
    """
    soak_runs = sum(1 for r in cand.runs if r.kind == RunKind.SOAK)
    if not policy.baseline_every or soak_runs % policy.baseline_every:
        return
    kg = knowngood.current(session)
    if kg is None or kg.candidate_id == cand.id:
        return
    kg_cand = kg.candidate
    if any(r.kind == RunKind.BASELINE and r.state != runs.RunState.FINISHED
           for r in kg_cand.runs):
        return
    run = _create_run(session, kg_cand, RunKind.BASELINE, clock, dispatcher)
    report.runs_created.append(run.id)


def _promote(session: Session, cand: models.Candidate, clock: Clock,
             report: ReconcileReport, notifier: notify.Notifier,
             noted: tuple[Excuse, ...] = ()) -> None:
    """Promote ``cand``; ``noted``: what the policy promoted it with, kept in its excuses
    (regressions seen once and not confirmed, series the soak could not decide)."""
    try:
        with session.begin_nested():
            kg = knowngood.promote(session, cand, clock, reason="soak passed")
    except knowngood.CandidateEnded:
        # A defence only: a person's action waits for the passes' lock this pass holds.
        # Whoever ended it, that decision stands.
        session.refresh(cand)
        return
    except knowngood.MarkedBad as exc:
        move(session, cand, CandidateState.CANCELLED, clock)
        cand.excuses = (Excuse("marked_bad", "operator", str(exc)),)
        audit(session, clock, "scheduler", "cancel", f"candidate {cand.id}", reason=str(exc))
        return
    except Conflict as exc:
        move(session, cand, CandidateState.SUPERSEDED, clock)
        cand.excuses = (Excuse("base_moved", "known-good", str(exc)),)
        return
    move(session, cand, CandidateState.PROMOTED, clock)
    cand.excuses = noted
    audit(session, clock, "scheduler", "promote", f"candidate {cand.id}", version=kg.version)
    report.promoted.append(cand.id)
    notify.candidate_promoted(session, clock, notifier, cand, kg, "scheduler")


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
    pass_lock(session)
    report = ReconcileReport()
    report.runs_expired = runs.expire_stale(session, clock, policy.run_timeout)
    # Before forming: a culprit named in this pass is held in the candidate formed in it.
    report.fold(bisection.advance_all(session, clock, policy.bisection, dispatcher))
    _form(session, clock, report)
    _board(session, clock, report, policy.parallel_gates)
    active = session.scalars(select(models.Candidate).where(
        models.Candidate.state.in_([CandidateState.GATING, CandidateState.SOAKING]))
        .order_by(models.Candidate.id)).all()
    for cand in active:
        _advance(session, cand, clock, policy, dispatcher, report)
    if report.promoted or report.rejected:
        _board(session, clock, report, policy.parallel_gates)
        for cand in session.scalars(select(models.Candidate).where(
                models.Candidate.id.in_(report.boarded))):
            _advance(session, cand, clock, policy, dispatcher, report)
    _redispatch(session, clock, policy, dispatcher, report)
    session.flush()
    return report
