"""People's controls: cancel, waive, retry, promote and mark bad a candidate, stop its culprit
finding; revoke a known-good.

Each action takes its turn with the scheduler's passes (``toolbox.pass_lock``), so it reads what
a pass committed and a pass reads what it committed: a pass never writes a rejection, or a soak's
start, from a state it read before a person's cancel. It then checks the candidate's state
through the lifecycle, changes it, and writes one audit event naming the actor
(``token:<name>`` over the API, ``cli:<user>`` on the server). They only flush, and each asks
the scheduler for a pass once its transaction commits (whoever commits it: the API request, the
CLI); a promotion or a revocation also tells the session's listeners that the known-good
changed (the API clears its manifest cache), after the commit too.

A waiver applies from the scheduler's next pass (``waivers``). When it sets aside the last failure
of a *rejected* candidate, that candidate is re-queued (``lifecycle.reinstate``): it boards when
the pipeline is free, like any queued candidate, is re-based on the known-good of that moment,
and its earlier runs count with the waivers applied — a gate whose only failures are waived
counts as passed, so it goes straight to soak, and the soak clock starts again from zero. Like
any queued candidate it is superseded if newer heads form a newer candidate before it boards.

A retry gives a candidate whose infra retries ran out (it waits, holding the pipeline, with an
``infra_error`` excuse) a fresh retry budget: ``candidates.retried_at`` is when, and the policy
counts the infra streak only from then (``promotion.decide``).

Stopping culprit finding ends a running search on a rejected candidate through the scheduler's
own stop (``bisection.stop``): its pending runs are withdrawn and the search ends ``stopped``,
naming the person. While a search runs no queued candidate boards, and one waiting for a busy
testbed waits as long as that lasts; once stopped, formation goes on as after an inconclusive
search (it isolates one changed component at a time). The candidate stays rejected.

Marking a candidate's combination bad records who and why on the combination: formation never
forms it again and ``knowngood.promote`` refuses it, even when forced. An open candidate is
cancelled at once; a known-good still served must be revoked first.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.bisection_state import FOUND, INCONCLUSIVE, STOPPED, Record
from certifier.domain.clock import Clock
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState, reinstate
from certifier.domain.promotion import (
    WAIVABLE_KINDS,
    SoakPolicy,
    apply_waivers,
    blocking,
    decide,
)
from certifier.pipeline import bisection, knowngood, notify, runs, waivers
from certifier.pipeline.dispatch import known_good_changed, reconcile_after_commit
from certifier.pipeline.errors import Conflict, Invalid, NotFound
from certifier.pipeline.toolbox import audit, move, pass_lock, summaries

_JUDGED = (RunKind.GATE.value, RunKind.SOAK.value)


def _candidate(session: Session, candidate_id: int) -> models.Candidate:
    pass_lock(session)
    cand = session.get(models.Candidate, candidate_id, with_for_update=True)
    if cand is None:
        raise NotFound(f"no candidate {candidate_id}")
    return cand


def _subject(cand: models.Candidate) -> str:
    return f"candidate {cand.id}"


def cancel(session: Session, clock: Clock, candidate_id: int, actor: str,
           reason: str) -> models.Candidate:
    """Take a queued, gating or soaking candidate out of the pipeline for good."""
    cand = _candidate(session, candidate_id)
    if CandidateState(cand.state).is_final:
        raise Conflict(f"candidate {cand.id} is {cand.state}: only a queued, gating or soaking "
                       "candidate can be cancelled")
    withdrawn = _end(session, clock, cand,
                     Excuse("cancelled", "operator", f"cancelled by {actor}: {reason}"))
    audit(session, clock, actor, "cancel", _subject(cand), reason=reason,
                    withdrawn_runs=withdrawn)
    reconcile_after_commit(session)
    return cand


def _end(session: Session, clock: Clock, cand: models.Candidate, excuse: Excuse) -> list[int]:
    """Cancel an open candidate with ``excuse``; the ids of the runs withdrawn.

    Runs not yet started are withdrawn: they hold no results, and a task still on its way
    finds nothing to claim, so a cancelled candidate never takes a testbed again. A running
    run finishes; its verdict no longer moves the candidate.
    """
    move(session, cand, CandidateState.CANCELLED, clock)
    cand.excuses = (excuse,)
    withdrawn = runs.withdraw_pending(
        session, [r.id for r in cand.runs if r.state == runs.RunState.PENDING])
    session.expire(cand, ["runs"])  # a later read in this session must not list them
    return withdrawn




def failing_subjects(cand: models.Candidate) -> dict[str, str]:
    """What may be waived for ``cand``: ``{subject: message}`` of its failed checks, broken
    limits and regressions, from its gate and soak runs and its current excuses."""
    found: dict[str, str] = {}
    for e in [*(e for r in cand.runs if r.kind in _JUDGED for e in r.excuses), *cand.excuses]:
        if e.kind in WAIVABLE_KINDS:
            found.setdefault(e.subject, e.message)
    return found


def _still_failing(session: Session, cand: models.Candidate, clock: Clock) -> bool:
    waived = waivers.active_subjects(session, cand.id, clock.now())
    seen = apply_waivers([r for r in summaries(cand.runs) if r.kind.value in _JUDGED],
                         waived)
    return any(r.verdict in (Verdict.FAILED, Verdict.REGRESSED) for r in seen)


def waive(session: Session, clock: Clock, candidate_id: int, actor: str, subject: str,
          reason: str, expires_in: timedelta | None) -> tuple[models.Waiver, bool]:
    """Set aside one failing check or metric; (the waiver, whether the candidate was re-queued)."""
    cand = _candidate(session, candidate_id)
    state = CandidateState(cand.state)
    if state.is_final and state is not CandidateState.REJECTED:
        raise Conflict(f"candidate {cand.id} is {cand.state}: nothing left to waive")
    knowngood.refuse_bad(session, cand.combination_hash)  # a waiver must not re-queue it
    failing = failing_subjects(cand)
    if subject not in failing:
        known = "; ".join(sorted(failing)) or "none"
        raise Invalid(f"candidate {cand.id} has no failing check or metric {subject!r} "
                      f"(waivable: {known})")
    waiver = waivers.add(session, cand.id, subject, reason, actor, clock.now(), expires_in)
    audit(session, clock, actor, "waive", _subject(cand), subject=subject,
                    reason=reason, message=failing[subject],
                    expires_at=waiver.expires_at.isoformat() if waiver.expires_at else None)
    requeued = False
    if state is CandidateState.REJECTED and not _still_failing(session, cand, clock):
        cand.state = reinstate(cand.state)
        cand.updated_at = clock.now()
        cand.finished_at = None
        cand.excuses = (Excuse("queued", "pipeline",
                               "queued: every failure that rejected it is waived"),)
        audit(session, clock, actor, "reinstate", _subject(cand),
                        reason="every failure that rejected it is waived")
        requeued = True
    reconcile_after_commit(session)
    return waiver, requeued


def retry(session: Session, clock: Clock, candidate_id: int, actor: str, reason: str,
          soak: SoakPolicy) -> models.Candidate:
    """Give a candidate whose infra retries ran out a fresh budget; the next pass runs it again.

    It keeps its place and its runs: only the infra-error streak restarts from now
    (``decide(…, retried_at)``), so the fixed testbed gets ``max_infra_retries`` more tries.
    Anything else (queued, backing off, a run in progress, a final state) has nothing to retry.
    """
    cand = _candidate(session, candidate_id)
    state = CandidateState(cand.state)
    exhausted: list[Excuse] = []
    if state in (CandidateState.GATING, CandidateState.SOAKING) and (
            state is CandidateState.GATING or cand.soak_started_at is not None):
        waived = waivers.active_subjects(session, cand.id, clock.now())
        decision = decide(state, apply_waivers(summaries(cand.runs), waived), clock.now(), soak,
                          cand.soak_started_at, cand.retried_at)
        exhausted = [e for e in decision.excuses if e.kind == "infra_error"]
    if not exhausted:
        raise Conflict(f"candidate {cand.id} is {cand.state} and has nothing to retry: only a "
                       "gating or soaking candidate whose infra retries ran out can be retried")
    cand.retried_at = clock.now()
    cand.updated_at = clock.now()
    audit(session, clock, actor, "retry", _subject(cand), reason=reason,
                    state=cand.state, after=exhausted[0].message,
                    runs=exhausted[0].data.get("runs", []))
    reconcile_after_commit(session)
    return cand


def stop_culprit_finding(session: Session, clock: Clock, candidate_id: int, actor: str,
                         reason: str) -> models.Candidate:
    """Stop the culprit finding that runs for a rejected candidate; it stays rejected.

    The way out of a search that holds the train (it may wait for a testbed that stays too busy
    for as long as that lasts) short of turning culprit finding off for everyone. 409 when no
    search runs, saying what became of it.
    """
    cand = _candidate(session, candidate_id)
    if not bisection.is_running(cand.bisection):
        raise Conflict(f"candidate {cand.id} has no culprit finding running: "
                       f"{_search_words(cand.bisection)}")
    bisection.stop(session, cand, clock, reason, actor=actor)
    cand.updated_at = clock.now()
    reconcile_after_commit(session)
    return cand


def _search_words(state: Record | None) -> str:
    """What became of a candidate's culprit finding that is not running, in words."""
    if state is None:
        return "none was started"
    if state.status == FOUND and state.result is not None:
        return (f"it already found the culprit ({state.result.component} "
                f"{state.result.sha[:12]})")
    said = {INCONCLUSIVE: "it ended inconclusive", STOPPED: "it was already stopped"}.get(
        state.status, f"it is {state.status}")
    return said + (f" ({state.reason})" if state.reason else "")


def promote(session: Session, clock: Clock, candidate_id: int, actor: str, reason: str,
            soak: SoakPolicy, force: bool = False,
            notifier: notify.Notifier | None = None) -> models.KnownGood:
    """Promote a soaking candidate now, through the same compare-and-swap as the scheduler.

    The rest of the soak is skipped; an unwaived failure, an unwaived flaky check or a failed
    check still being rechecked refuses the promotion unless ``force``. A combination marked
    bad is refused even with ``force``. ``notifier``: where the ``promoted`` event goes.
    """
    cand = _candidate(session, candidate_id)
    knowngood.refuse_bad(session, cand.combination_hash)
    if cand.state != CandidateState.SOAKING:
        raise Conflict(f"candidate {cand.id} is {cand.state}: only a soaking candidate can be "
                       "promoted")
    waived = waivers.active_subjects(session, cand.id, clock.now())
    decision = decide(CandidateState.SOAKING, apply_waivers(summaries(cand.runs), waived),
                      clock.now(), soak, cand.soak_started_at, cand.retried_at)
    blockers = blocking(decision)
    if blockers and not force:
        excuses = "; ".join(e.message for e in blockers)
        raise Conflict(f"candidate {cand.id} has unwaived failures ({excuses}); waive them, "
                       "or promote with force")
    with session.begin_nested():
        kg = knowngood.promote(session, cand, clock, reason=f"promoted by {actor}: {reason}")
    move(session, cand, CandidateState.PROMOTED, clock)
    cand.excuses = ()
    audit(session, clock, actor, "promote", _subject(cand), version=kg.version,
                    reason=reason, manual=True, forced=force)
    if notifier is not None:
        notify.candidate_promoted(session, clock, notifier, cand, kg, actor)
    reconcile_after_commit(session)
    return kg


def mark_bad(session: Session, clock: Clock, actor: str, candidate_id: int,
             reason: str) -> models.Candidate:
    """Mark the candidate's combination bad: it is never formed or promoted again.

    An open (queued, gating or soaking) candidate is cancelled on the spot, with a ``marked_bad``
    excuse. A combination still served as a known-good is refused: revoke it first, so the
    manifest never falls back to a combination people called bad.
    """
    cand = _candidate(session, candidate_id)
    combo = session.get_one(models.Combination, cand.combination_hash, with_for_update=True)
    # A promotion that is committing holds this lock: wait for it, then see its known-good
    # below. One that starts after us waits for our commit, and then refuses the combination.
    knowngood.lock(session)
    if combo.bad_at is not None:
        raise Conflict(knowngood.bad_message(combo))
    served = knowngood.serving(session, combo.hash)
    if served is not None:
        raise Conflict(f"candidate {cand.id} is known-good #{served.version}, which is not "
                       f"revoked: revoke it first (POST /api/v1/known-good/{served.version}/"
                       "revoke), then mark it bad")
    combo.bad_at, combo.bad_reason, combo.bad_by = clock.now(), reason, actor
    previous, withdrawn = cand.state, []
    if not CandidateState(cand.state).is_final:
        withdrawn = _end(session, clock, cand,
                         Excuse("marked_bad", "operator", f"marked bad by {actor}: {reason}",
                                {"combination": combo.hash}))
    audit(session, clock, actor, "mark_bad", _subject(cand), reason=reason,
                    combination=combo.hash, state=previous, withdrawn_runs=withdrawn)
    reconcile_after_commit(session)
    return cand


def unmark_bad(session: Session, clock: Clock, actor: str, candidate_id: int,
               reason: str) -> models.Candidate:
    """Lift the mark: the combination may be promoted again. A candidate that marking bad
    cancelled stays cancelled (a final state); a rejected one can be waived back into the queue.
    """
    cand = _candidate(session, candidate_id)
    combo = session.get_one(models.Combination, cand.combination_hash, with_for_update=True)
    if combo.bad_at is None:
        raise Conflict(f"the combination of candidate {cand.id} is not marked bad")
    audit(session, clock, actor, "unmark_bad", _subject(cand), reason=reason,
                    combination=combo.hash, was_marked_by=combo.bad_by,
                    was_marked_reason=combo.bad_reason)
    combo.bad_at = combo.bad_reason = combo.bad_by = None
    reconcile_after_commit(session)
    return cand


def revoke(session: Session, clock: Clock, version: int, actor: str, reason: str,
           notifier: notify.Notifier | None = None
           ) -> tuple[models.KnownGood, models.KnownGood | None]:
    """Revoke a known-good; (it, the known-good current now — the previous unrevoked one)."""
    pass_lock(session)  # a pass forming or promoting on this known-good goes first, or after
    kg = session.get(models.KnownGood, version, with_for_update=True)
    if kg is None:
        raise NotFound(f"no known-good version {version}")
    if kg.revoked_at is not None:
        raise Conflict(f"known-good #{version} was revoked at {kg.revoked_at.isoformat()}")
    kg.revoked_at = clock.now()
    session.flush()
    now_current = knowngood.current(session)
    audit(session, clock, actor, "revoke", f"known-good {version}", reason=reason,
                    current=now_current.version if now_current else None)
    if notifier is not None:
        notify.known_good_revoked(session, clock, notifier, kg, now_current, actor, reason)
    known_good_changed(session)
    reconcile_after_commit(session)
    return kg, now_current
