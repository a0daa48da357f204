"""The promotion policy: given a candidate's runs, the clock and the soak policy, what happens next.

The scheduler asks :func:`decide` for every active candidate on every reconcile pass and carries
out the answer: create the next run, move the candidate on, or leave it waiting. The answer always
comes with excuses — the plain-words reasons the candidate is not (yet) known-good — so the
dashboard and the API can explain every state without re-deriving it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from certifier.domain.durations import format_duration
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState


@dataclass(frozen=True, slots=True)
class SoakPolicy:
    """Soak timing, and how infra errors are retried: ``max_infra_retries`` times in a row, the
    n-th retry ``infra_backoff * 2**(n-1)`` after the failed run ended, never more than
    ``infra_backoff_max`` — a testbed that just broke gets time to recover, and a flapping one is
    not hammered."""

    duration: timedelta = timedelta(days=7)
    interval: timedelta = timedelta(hours=6)
    min_runs: int = 4
    max_infra_retries: int = 2
    infra_backoff: timedelta = timedelta(seconds=30)
    infra_backoff_max: timedelta = timedelta(minutes=10)

    def retry_delay(self, retry: int) -> timedelta:
        """How long retry number ``retry`` (1 = the first) waits after the failed run."""
        if retry < 1:
            return timedelta(0)
        factor: int = 2 ** min(retry - 1, 30)  # capped exponent: no overflow on absurd streaks
        delay: timedelta = min(self.infra_backoff * factor, self.infra_backoff_max)
        return delay


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the policy needs to know of one run; ``verdict`` is None while it has not finished."""

    id: int
    kind: RunKind
    verdict: Verdict | None
    created_at: datetime
    finished_at: datetime | None = None
    excuses: tuple[Excuse, ...] = ()


class Action(StrEnum):
    WAIT = "wait"
    START_SOAK = "start_soak"
    PROMOTE = "promote"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    excuses: tuple[Excuse, ...] = ()
    next_run: RunKind | None = None  # a run of this kind should be created now
    data: dict[str, float] = field(default_factory=dict)


def _infra_streak(runs: list[RunSummary]) -> list[RunSummary]:
    """The consecutive infra-error runs at the end of ``runs``, newest first."""
    streak: list[RunSummary] = []
    for run in reversed(runs):
        if run.verdict is not Verdict.INFRA_ERROR:
            break
        streak.append(run)
    return streak


def _retry_wait(runs: list[RunSummary], now: datetime, policy: SoakPolicy) -> timedelta:
    """How much longer the next retry must wait (zero: due now, or no infra error to retry)."""
    streak = _infra_streak(runs)
    if not streak:
        return timedelta(0)
    last = streak[0]
    ended = last.finished_at or last.created_at
    return max(ended + policy.retry_delay(len(streak)) - now, timedelta(0))


def _infra_exhausted(runs: list[RunSummary], policy: SoakPolicy) -> Excuse | None:
    """Consecutive infra errors at the end of ``runs`` beyond the retry budget, as an excuse."""
    streak = _infra_streak(runs)
    if len(streak) <= policy.max_infra_retries:
        return None
    last = streak[0]
    detail = "; ".join(e.message for e in last.excuses) or "no detail"
    return Excuse(
        "infra_error",
        f"run {last.id}",
        f"{len(streak)} {last.kind} runs in a row hit testbed or tool errors; retries exhausted, "
        f"an operator must look (last: {detail})",
        {"runs": [r.id for r in streak]},
    )


def _backing_off(stage: str, runs: list[RunSummary], wait: timedelta,
                 policy: SoakPolicy) -> Excuse:
    streak = _infra_streak(runs)
    detail = "; ".join(e.message for e in streak[0].excuses) or "no detail"
    return Excuse(
        "infra_retry", f"run {streak[0].id}",
        f"{stage}: testbed or tool error, retry {len(streak)} of {policy.max_infra_retries} "
        f"in {format_duration(wait)} (last: {detail})",
        {"runs": [r.id for r in streak], "wait_s": wait.total_seconds()},
    )


def _judged_failure(runs: list[RunSummary]) -> RunSummary | None:
    for run in runs:
        if run.verdict in (Verdict.FAILED, Verdict.REGRESSED):
            return run
    return None


WAIVABLE_KINDS = frozenset({"check", "limit", "regression"})
"""Excuse kinds a person may set aside: a failed check, a broken limit, a regression."""


def apply_waivers(runs: list[RunSummary], waived: frozenset[str]) -> list[RunSummary]:
    """The runs as the policy should see them once the ``waived`` excuse subjects are set aside.

    A failed or regressed run loses its waived excuses; with no waivable excuse left it counts
    as passed — or as an infra error if a suite of it had tool trouble, since its evidence is then
    incomplete and the run must be retried. Other runs are unchanged.
    """
    if not waived:
        return list(runs)
    seen: list[RunSummary] = []
    for run in runs:
        if run.verdict not in (Verdict.FAILED, Verdict.REGRESSED):
            seen.append(run)
            continue
        kept = tuple(e for e in run.excuses
                     if not (e.kind in WAIVABLE_KINDS and e.subject in waived))
        if any(e.kind in WAIVABLE_KINDS for e in kept) or not run.excuses:
            seen.append(replace(run, excuses=kept))
            continue
        verdict = Verdict.INFRA_ERROR if kept else Verdict.PASSED
        seen.append(replace(run, verdict=verdict, excuses=kept))
    return seen


def decide(
    state: CandidateState,
    runs: list[RunSummary],
    now: datetime,
    policy: SoakPolicy,
    soak_started_at: datetime | None = None,
) -> Decision:
    """The next step for one candidate. Pure: the same inputs always give the same decision."""
    runs = sorted(runs, key=lambda r: (r.created_at, r.id))
    if state is CandidateState.QUEUED:
        return Decision(Action.WAIT, (Excuse("queued", "pipeline",
                                             "queued: waiting for the testbed"),))
    if state is CandidateState.GATING:
        return _decide_gating([r for r in runs if r.kind is RunKind.GATE], now, policy)
    if state is CandidateState.SOAKING:
        if soak_started_at is None:
            raise ValueError("a soaking candidate needs soak_started_at")
        return _decide_soaking([r for r in runs if r.kind is RunKind.SOAK], now, policy,
                               soak_started_at)
    return Decision(Action.WAIT, (Excuse("final", "lifecycle", f"{state}: no further steps"),))


def _decide_gating(gate_runs: list[RunSummary], now: datetime, policy: SoakPolicy) -> Decision:
    bad = _judged_failure(gate_runs)
    if bad is not None:
        return Decision(Action.REJECT, bad.excuses or (
            Excuse(str(bad.verdict), f"run {bad.id}", f"gate run {bad.id} {bad.verdict}"),))
    if any(r.verdict is Verdict.PASSED for r in gate_runs):
        return Decision(Action.START_SOAK)
    if any(r.verdict is None for r in gate_runs):
        return Decision(Action.WAIT, (Excuse("gating", "gate", "gating: gate run in progress"),))
    exhausted = _infra_exhausted(gate_runs, policy)
    if exhausted is not None:
        return Decision(Action.WAIT, (exhausted,))
    wait = _retry_wait(gate_runs, now, policy)
    if wait > timedelta(0):
        return Decision(Action.WAIT, (_backing_off("gating", gate_runs, wait, policy),))
    retrying = bool(gate_runs)
    message = "gating: retrying after a testbed error" if retrying else "gating: gate run queued"
    return Decision(Action.WAIT, (Excuse("gating", "gate", message),), next_run=RunKind.GATE)


def _decide_soaking(
    soak_runs: list[RunSummary], now: datetime, policy: SoakPolicy, started: datetime
) -> Decision:
    bad = _judged_failure(soak_runs)
    if bad is not None:
        return Decision(Action.REJECT, bad.excuses or (
            Excuse(str(bad.verdict), f"run {bad.id}", f"soak run {bad.id} {bad.verdict}"),))
    elapsed = max(now - started, timedelta(0))
    passing = sum(1 for r in soak_runs if r.verdict is Verdict.PASSED)
    pending = any(r.verdict is None for r in soak_runs)
    progress = {"elapsed_s": elapsed.total_seconds(),
                "duration_s": policy.duration.total_seconds(),
                "passing_runs": float(passing), "min_runs": float(policy.min_runs)}
    if elapsed >= policy.duration and passing >= policy.min_runs and not pending:
        return Decision(Action.PROMOTE, data=progress)

    excuses: list[Excuse] = []
    if elapsed < policy.duration:
        excuses.append(Excuse(
            "soaking", "soak",
            f"soaking: {format_duration(elapsed)} of {format_duration(policy.duration)}",
            {"elapsed_s": elapsed.total_seconds(), "duration_s": policy.duration.total_seconds()},
        ))
    if passing < policy.min_runs:
        excuses.append(Excuse(
            "soak_runs", "soak",
            f"passing soak runs: {passing} of at least {policy.min_runs}",
            {"passing": passing, "min_runs": policy.min_runs},
        ))
    if pending:
        excuses.append(Excuse("soaking", "soak", "soak run in progress"))
        return Decision(Action.WAIT, tuple(excuses), data=progress)
    exhausted = _infra_exhausted(soak_runs, policy)
    if exhausted is not None:
        return Decision(Action.WAIT, (*excuses, exhausted), data=progress)
    last = soak_runs[-1] if soak_runs else None
    retry = last is not None and last.verdict is Verdict.INFRA_ERROR
    wait = _retry_wait(soak_runs, now, policy)
    if retry and wait > timedelta(0):
        return Decision(Action.WAIT, (*excuses, _backing_off("soaking", soak_runs, wait, policy)),
                        data=progress)
    due = last is None or retry or now >= last.created_at + policy.interval
    if passing < policy.min_runs and elapsed >= policy.duration:
        due = True  # the week is over but runs are missing: catch up instead of waiting
    return Decision(Action.WAIT, tuple(excuses), next_run=RunKind.SOAK if due else None,
                    data=progress)
