"""Culprit finding in the pipeline: bisect runs after a rejection, moved on by the reconcile loop.

The search is pure (``certifier/domain/bisection.py``); this module keeps its state in
``Candidate.bisection`` (a ``domain.bisection_state.Record``, stored as JSON: the commit
ranges, every step with its run and verdict, the result) and turns the search's decisions into runs:

* **Start**: when the scheduler rejects a candidate for a failed check or a regression (not an
  infra error, a cancellation, a supersession or a person marking it bad), formed on a
  known-good, that changed more than one component or one component by more than one commit.
  The first run re-tests the candidate's own combination (the search's "reproduce" step).
  A candidate formed on a known-good that is no longer the current one (parallel gates: another
  candidate was promoted meanwhile) is not searched: its culprit's last good commit could be
  older than the current known-good's, and holding it there would go backwards. It ends
  inconclusive at once, saying so.
* **Every reconcile pass** reads the verdicts of the candidate's ``bisect`` runs, replays the
  search and creates the next run: kind ``bisect``, attempt after the candidate's last bisect
  run (the ``(candidate, kind, attempt)`` key stays unique), with ``combination_hash`` naming
  the combination it tests (``runs.plan`` deploys that one), sent after the commit. It takes the
  gate testbed like a gate run.
* **The end**: a culprit adds an excuse of kind ``culprit`` to the candidate and formation holds
  that component at the last good commit (``formation.BisectedCulprit``); an inconclusive search
  says why, and formation isolates as before. Both are audited as ``culprit``.
* **Meanwhile** no candidate boards (:func:`hold_boarding`): the queued one would otherwise take
  the testbed without the hold the result is about to give it. A search stops when the
  candidate leaves ``rejected``, when it is turned off, when the known-good moves (the same
  reason as at the start), or when a person stops it (``actions.stop_culprit_finding``: a
  search waiting for a testbed that stays busy holds the train for as long as that lasts);
  its runs not yet claimed are withdrawn (:func:`stop`).

Commit order: ``models.Commit`` knows no parents. A component's range is its commits ordered by
``(first_seen_at, id)`` strictly after the known-good's commit up to and including the
candidate's, skipping those a force-push took off the branch (``gone_at``). Tracking records a
push's commits oldest first, so for a linear branch this is the branch order; commits of a
merged side branch count in the order they were reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain import formation
from certifier.domain.bisection import (
    BisectPolicy,
    Culprit,
    Found,
    Inconclusive,
    Problem,
    Step,
    Try,
    Wait,
    carriers,
    next_step,
    steps_taken,
    worth_starting,
)
from certifier.domain.bisection_state import (
    FOUND,
    INCONCLUSIVE,
    RUNNING,
    STOPPED,
    CulpritRecord,
    Record,
    StepRecord,
)
from certifier.domain.clock import Clock
from certifier.domain.combination import Combination
from certifier.domain.environment import only_too_busy
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import WAIVABLE_KINDS
from certifier.pipeline import components, knowngood, runs
from certifier.pipeline.dispatch import Dispatcher, enqueue_run_after_commit
from certifier.pipeline.toolbox import audit

_JUDGED = (RunKind.GATE.value, RunKind.SOAK.value)
_OWN_EXCUSES = ("bisection", "culprit")  # the excuses this module adds to a rejected candidate
WAIT_KIND = "culprit_wait"  # the excuse of a queued candidate held back while one runs
SCHEDULER = "scheduler"  # the actor of the searches' own audit events


@dataclass
class Progress:
    """What culprit finding did in one pass; the reconcile loop folds it into its report."""

    started: list[int] = field(default_factory=list)  # candidates whose search began
    ended: list[int] = field(default_factory=list)  # found, inconclusive or stopped
    runs_created: list[int] = field(default_factory=list)


def _running() -> Any:
    """The SQL condition "culprit finding is running" (JSON path: SQLite and PostgreSQL)."""
    return models.Candidate.bisection["status"].as_string() == RUNNING


# Starting ------------------------------------------------------------------------------------


def start(session: Session, cand: models.Candidate, clock: Clock, policy: BisectPolicy | None,
          dispatcher: Dispatcher) -> Progress:
    """Begin culprit finding for a candidate the scheduler just rejected, if it can tell
    anything, and create its first run (or, when the known-good moved since the candidate was
    formed, record why it does not search)."""
    report = Progress()
    if policy is None or cand.bisection is not None or cand.base_version is None:
        return report
    failed = _rejecting_run(cand)
    kg = session.get(models.KnownGood, cand.base_version)
    if failed is None or kg is None or cand.combination.bad_at is not None:
        return report  # not rejected by a run, or a person already said what is wrong with it
    kg_combo = knowngood.combination_of(session, kg.combination_hash)
    combo = knowngood.combination_of(session, cand.combination_hash)
    ranges = {name: commit_range(session, name, kg_combo[name], combo[name])
              for name in combo.changed_against(kg_combo) if name in kg_combo}
    problem = Problem(kg_combo, combo, ranges, failed.id, _rejection_words(failed))
    if not worth_starting(problem, policy, clock.now()):
        return report
    state = Record(RUNNING, kg.version, failed.id, started_at=clock.now(), ranges=ranges)
    moved = _known_good_moved(session, kg.version)
    if moved is not None:
        cand.bisection = _conclude(session, cand, clock, state, Inconclusive(moved), problem)
        return report
    cand.bisection = state
    audit(session, clock, SCHEDULER, "bisect", f"candidate {cand.id}",
          failed_run=failed.id, known_good=kg.version,
          commits={name: len(commits) for name, commits in ranges.items()})
    report.started.append(cand.id)
    advance(session, cand, clock, policy, dispatcher, report)
    return report


def _rejecting_run(cand: models.Candidate) -> models.Run | None:
    """The candidate's latest gate or soak run that failed or regressed: what rejected it.
    None when the rejection was about something else.

    It is context, not evidence: the search's first step re-tests the candidate's combination
    in a bisect run, because a soak run's failure, or the statistical detector's verdict over
    many runs, need not show in one run judged by the margin.
    """
    judged = [r for r in cand.runs if r.kind in _JUDGED
              and r.verdict in (Verdict.FAILED, Verdict.REGRESSED)]
    return max(judged, key=lambda r: r.id, default=None)


def _rejection_words(run: models.Run | None) -> str:
    """The rejecting run in words, e.g. "soak run 12, by the statistical detector"."""
    if run is None:
        return ""
    detector = any("p_value" in e.data for e in run.excuses)
    return f"{run.kind} run {run.id}" + (", by the statistical detector" if detector else "")


def _known_good_moved(session: Session, searched_from: int) -> str | None:
    """Why a search from known-good #``searched_from`` must not go on, if the current
    known-good is another one: the last good commit it would name could be older than the
    current known-good's commit, and formation would hold the component back behind it."""
    current = knowngood.current(session)
    if current is not None and current.version == searched_from:
        return None
    now = (f"the known-good is #{current.version} now" if current is not None
           else "no known-good is current now")
    return (f"the candidate was formed on known-good #{searched_from} and {now}: a last good "
            f"commit found from #{searched_from} could be older than the current known-good's")


def commit_range(session: Session, component: str, known_good: str,
                 candidate: str) -> tuple[str, ...]:
    """``component``'s commits after ``known_good`` up to ``candidate``, oldest first (see the
    module docstring for the order); always ends with ``candidate``."""
    comp = components.get_component(session, component)
    by_sha = {c.sha: c for c in session.scalars(select(models.Commit).where(
        models.Commit.component_id == comp.id, models.Commit.sha.in_([known_good, candidate])))}
    after, upto = by_sha.get(known_good), by_sha.get(candidate)
    if after is None or upto is None:
        return (candidate,)
    Commit = models.Commit
    shas = list(session.scalars(
        select(Commit.sha).where(
            Commit.component_id == comp.id, Commit.gone_at.is_(None),
            or_(Commit.first_seen_at > after.first_seen_at,
                and_(Commit.first_seen_at == after.first_seen_at, Commit.id > after.id)),
            or_(Commit.first_seen_at < upto.first_seen_at,
                and_(Commit.first_seen_at == upto.first_seen_at, Commit.id <= upto.id)))
        .order_by(Commit.first_seen_at, Commit.id)))
    return (*[s for s in shas if s not in (candidate, known_good)], candidate)


# Advancing -----------------------------------------------------------------------------------


def advance_all(session: Session, clock: Clock, policy: BisectPolicy | None,
                dispatcher: Dispatcher) -> Progress:
    """One step of every running culprit finding (or its end, when it must stop)."""
    report = Progress()
    # Called within a pass, under the passes' lock: a person stopping a search
    # (actions.stop_culprit_finding, which takes that lock first) and this pass take turns,
    # so neither overwrites the other's record. The rows are locked too (PostgreSQL), in
    # the lock order of knowngood's docstring.
    for cand in session.scalars(select(models.Candidate).where(_running())
                                .order_by(models.Candidate.id).with_for_update()).all():
        reason = _reason_to_stop(session, cand, policy)
        if reason is not None:
            stop(session, cand, clock, reason, report=report)
        elif policy is not None:
            advance(session, cand, clock, policy, dispatcher, report)
    return report


def _reason_to_stop(session: Session, cand: models.Candidate,
                    policy: BisectPolicy | None) -> str | None:
    """Why a running search must end now without a conclusion, if it must."""
    if policy is None:
        return "culprit finding was turned off (bisection.enabled)"
    if cand.state != CandidateState.REJECTED:
        return f"the candidate is {cand.state} again"
    searched_from = cand.bisection.known_good if cand.bisection is not None else None
    if searched_from is None:
        return "its stored state names no known-good to search from"
    return _known_good_moved(session, searched_from)


def advance(session: Session, cand: models.Candidate, clock: Clock, policy: BisectPolicy,
            dispatcher: Dispatcher, report: Progress) -> None:
    """Read the finished steps, ask the search what now, and act on it."""
    state = cand.bisection
    if state is None or state.known_good is None:
        return  # nothing to go on: advance_all stops such a search instead
    by_id = {r.id: r for r in cand.runs}
    steps = [_synced(step, by_id.get(step.run)) for step in state.steps]
    problem = _problem(session, cand, state, state.known_good)
    decision = next_step(problem, [_step(s) for s in steps], policy, clock.now())
    run_id = decision.run_id if isinstance(decision, Wait) else None
    if isinstance(decision, Try):
        run_id = _create_run(session, cand, decision.probe.combination, clock, dispatcher).id
        report.runs_created.append(run_id)
        steps.append(StepRecord(
            run=run_id, phase=str(decision.probe.phase), component=decision.probe.component,
            sha=decision.probe.sha, combination=dict(decision.probe.combination),
            retry=decision.retry, purpose=decision.probe.describe()))
    state = replace(state, steps=tuple(steps))
    if isinstance(decision, Found | Inconclusive):
        state = _conclude(session, cand, clock, state, decision, problem)
        report.ended.append(cand.id)
    else:
        _set_excuse(cand, _progress(decision, run_id, [_step(s) for s in steps], policy))
    cand.bisection = state


def _synced(step: StepRecord, run: models.Run | None) -> StepRecord:
    if step.withdrawn:
        return step
    if run is None:  # the run row is gone: it said nothing, so it counts as an infra error
        return replace(step, verdict=Verdict.INFRA_ERROR.value)
    if run.verdict is not None:
        failures = tuple(sorted({f"{e.kind}:{e.subject}" for e in run.excuses
                                 if e.kind in WAIVABLE_KINDS}))
        busy = run.verdict == Verdict.INFRA_ERROR.value and only_too_busy(run.excuses)
        return replace(step, verdict=run.verdict, finished_at=run.finished_at,
                       failures=failures, busy=busy)
    return step


def _step(step: StepRecord) -> Step:
    return Step(step.run, Combination.of(step.combination),
                Verdict(step.verdict) if step.verdict else None, step.finished_at,
                frozenset(step.failures or ()), busy=step.busy)


def _problem(session: Session, cand: models.Candidate, state: Record,
             known_good: int) -> Problem:
    kg = session.get_one(models.KnownGood, known_good)
    failed = session.get(models.Run, state.failed_run) if state.failed_run is not None else None
    return Problem(knowngood.combination_of(session, kg.combination_hash),
                   knowngood.combination_of(session, cand.combination_hash),
                   dict(state.ranges), state.failed_run, _rejection_words(failed))


def _create_run(session: Session, cand: models.Candidate, combo: Combination, clock: Clock,
                dispatcher: Dispatcher) -> models.Run:
    """A bisect run of ``combo``, sent to a worker once the pass commits."""
    row = components.ensure_combination(session, combo, clock)
    attempt = 1 + max((r.attempt for r in cand.runs if r.kind == RunKind.BISECT), default=0)
    now = clock.now()
    run = models.Run(candidate_id=cand.id, kind=RunKind.BISECT, attempt=attempt,
                     state=runs.RunState.PENDING, created_at=now, dispatched_at=now,
                     combination_hash=row.hash)
    session.add(run)
    session.flush()
    session.refresh(cand, ["runs"])
    enqueue_run_after_commit(session, dispatcher, run.id)
    return run


def _busy_streak(steps: list[Step]) -> int:
    """The finished steps in a row, newest last, that waited for a busy testbed."""
    streak = 0
    for step in reversed([s for s in steps if s.verdict is not None]):
        if not step.waited:
            break
        streak += 1
    return streak


def _progress(decision: Try | Wait, run_id: int | None, records: list[Step],
              policy: BisectPolicy) -> Excuse:
    """The search's progress excuse; ``data.busy_runs``: the runs in a row the testbed was too
    busy for (they count as no step: :func:`steps_taken`)."""
    steps = steps_taken(records)
    what = decision.probe.describe()
    if isinstance(decision, Wait) and decision.until is not None and decision.busy:
        doing = (f"waiting for the testbed to calm down to test {what}, next try from "
                 f"{decision.until:%H:%M:%S} UTC (a busy testbed never counts as a step)")
    elif isinstance(decision, Wait) and decision.until is not None:
        doing = f"retrying {what} after a testbed error, from {decision.until:%H:%M:%S} UTC"
    else:
        doing = f"testing {what}" + (f" (run {run_id})" if run_id is not None else "")
    return Excuse("bisection", "culprit finding",
                  f"culprit finding: step {steps} of at most {policy.max_steps}: {doing}",
                  {"steps": steps, "max_steps": policy.max_steps,
                   "busy_runs": _busy_streak(records)})


def _conclude(session: Session, cand: models.Candidate, clock: Clock, state: Record,
              decision: Found | Inconclusive, problem: Problem) -> Record:
    """The search's end: its excuse and audit event; returns the record to store."""
    if isinstance(decision, Inconclusive):
        _set_excuse(cand, Excuse("bisection", "culprit finding",
                                 f"culprit finding inconclusive: {decision.reason}"))
        audit(session, clock, SCHEDULER, "culprit", f"candidate {cand.id}",
              status=INCONCLUSIVE, reason=decision.reason)
        return replace(state, status=INCONCLUSIVE, reason=decision.reason,
                       finished_at=clock.now())
    found = decision.culprit
    result = _result(found, problem)
    _set_excuse(cand, _culprit_excuse(session, found, result))
    audit(session, clock, SCHEDULER, "culprit", f"candidate {cand.id}",
          status=FOUND, component=found.component, sha=found.sha,
          last_good=found.last_good, evidence=list(found.evidence))
    return replace(state, status=FOUND, result=result, finished_at=clock.now())


def _result(found: Culprit, problem: Problem) -> CulpritRecord:
    return CulpritRecord(found.component, found.sha, found.last_good, found.evidence,
                         found.explanation, found.together,
                         carriers(problem.ranges[found.component], found.sha))


def _culprit_excuse(session: Session, found: Culprit, result: CulpritRecord) -> Excuse:
    comp = components.get_component(session, found.component)
    title = session.scalar(select(models.Commit.title).where(
        models.Commit.component_id == comp.id, models.Commit.sha == found.sha)) or ""
    named = f"{found.component} {found.sha[:12]}" + (f" “{title}”" if title else "")
    evidence = ", ".join(str(r) for r in found.evidence)
    return Excuse("culprit", f"component {found.component}",
                  f"culprit: {named}; last good {found.last_good[:12]} (evidence: runs "
                  f"{evidence})", {**result.as_dict(), "title": title})


def _set_excuse(cand: models.Candidate, excuse: Excuse) -> None:
    cand.excuses = (*[e for e in cand.excuses if e.kind not in _OWN_EXCUSES], excuse)


def stop(session: Session, cand: models.Candidate, clock: Clock, reason: str, *,
         actor: str = SCHEDULER, report: Progress | None = None) -> list[int]:
    """End a running search without a conclusion; the ids of its runs withdrawn.

    ``actor``: who stops it, named in the audit event; a person's ``reason`` is kept as
    "stopped by <actor>: <reason>". The candidate keeps its state; a stopped search names no
    culprit, so formation goes on as after an inconclusive one.

    Its runs that have not started are withdrawn (as cancelling does), so they never take the
    testbed. What was read as pending may have been claimed since by a worker: it runs now and
    holds the testbed's lease. So the delete is conditional (``state = 'pending'``, decided by
    the database, where the claim's ``UPDATE … WHERE state = 'pending'`` competes for the same
    row), and only the rows it really deleted count as withdrawn. A run it spared finishes
    as usual.
    """
    said = f"culprit finding stopped: {reason}"
    if actor != SCHEDULER:
        reason = f"stopped by {actor}: {reason}"
        said = f"culprit finding {reason}"
    state = cand.bisection or Record.read(None)
    pending = set(runs.withdraw_pending(session, [s.run for s in state.steps
                                                  if not s.withdrawn]))
    session.expire(cand, ["runs"])
    cand.bisection = replace(
        state, status=STOPPED, reason=reason, finished_at=clock.now(),
        steps=tuple(replace(s, withdrawn=True) if s.run in pending else s for s in state.steps))
    if cand.state == CandidateState.REJECTED:
        _set_excuse(cand, Excuse("bisection", "culprit finding", said))
    audit(session, clock, actor, "culprit", f"candidate {cand.id}",
          status=STOPPED, reason=reason, withdrawn_runs=sorted(pending))
    if report is not None:
        report.ended.append(cand.id)
    return sorted(pending)


# What the rest of the pipeline asks ----------------------------------------------------------


def hold_boarding(session: Session) -> int | None:
    """The candidate whose culprit finding runs, if any: then no queued candidate boards, and
    each says why. Once none runs, that excuse is taken away again."""
    running = session.scalar(select(models.Candidate.id).where(_running())
                             .order_by(models.Candidate.id).limit(1))
    for queued in session.scalars(select(models.Candidate).where(
            models.Candidate.state == CandidateState.QUEUED)):
        excuses = tuple(e for e in queued.excuses if e.kind != WAIT_KIND)
        if running is not None:
            excuses += (Excuse(
                WAIT_KIND, "pipeline",
                f"waiting for culprit finding of #{running}: the commit it names will be held "
                "back in the next candidate", {"candidate": running}),)
        if excuses != queued.excuses:
            queued.excuses = excuses
    return running


def is_running(state: Record | None) -> bool:
    """Whether a candidate's culprit finding is still running."""
    return state is not None and state.running


def bisected(state: Record | None) -> formation.BisectedCulprit | None:
    """A candidate's culprit finding as formation needs it: the culprit, if one was found."""
    if state is None or state.status != FOUND or state.result is None:
        return None
    found = state.result
    return formation.BisectedCulprit(found.component, found.sha, found.last_good,
                                     found.carriers or (found.sha,))
