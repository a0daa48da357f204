"""The promotion policy: given a candidate's runs, the clock and the soak policy, what happens next.

The scheduler asks :func:`decide` for every active candidate on every reconcile pass and carries
out the answer: create the next run, move the candidate on, or leave it waiting. The answer always
comes with excuses — the plain-words reasons the candidate is not (yet) known-good — so the
dashboard and the API can explain every state without re-deriving it.

No failure is final on one observation, except a broken fixed limit. The same kind of run is
repeated first (up to ``SoakPolicy.recheck_failed`` times), with fresh controls of the known-good:

* a failed **check** is *rechecked*: failing again rejects; passing makes the check *flaky* — the
  candidate goes on, but the flaky check stays in its excuses, visible, and keeps it from being
  promoted until a person waives it (a recheck never hides a failure);
* a **regression** is *confirmed*: it rejects only when the next run regresses on the same
  series again. One that does not reproduce is reported as noise (an ``unconfirmed`` excuse that
  names both runs and stays visible) and blocks nothing: a dip the interleaved controls did not
  share was seen once, and is shown, but one run is not proof.

A run that fails on other series than the one before it starts a confirmation of its own; a
streak of ``recheck_failed + 2`` failing runs rejects whatever their subjects. The rejection
lists each failure once, naming every run it was seen in.

Silence is not a pass either. A series the soak cannot decide yet extends the soak (bounded by
``max_extra_runs``); one still undecided at the end is promoted with it in the excuses, unless
its estimate *leans worse* (beyond ``lean_pct`` of the A/B soak statistics, its rounds
pointing worse at p < ``lean_p`` shared among the candidate's series,
``absoak.SoakPolicy.lean_level``): then the candidate waits for a person
(``awaiting_decision``) — a breakage the noise hid is never promoted silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from certifier.domain.durations import format_duration
from certifier.domain.environment import only_too_busy
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState


@dataclass(frozen=True, slots=True)
class SoakPolicy:
    """Soak timing, and how infra errors are retried: ``max_infra_retries`` times in a row, the
    n-th retry ``infra_backoff * 2**(n-1)`` after the failed run ended, never more than
    ``infra_backoff_max`` — a testbed that just broke gets time to recover, and a flapping one is
    not hammered. ``recheck_failed``: how many more runs a failed check gets before it counts
    (0: it rejects at once), so a flaky check is told from a real failure. ``max_extra_runs``:
    how many soak runs beyond the plan may be added while the newest soak run says some series
    cannot be decided yet (excuse ``undecidable``): the soak is extended, bounded, not cut
    short; a series that leans worse extends it to the bound, then holds it for a person."""

    duration: timedelta = timedelta(days=7)
    interval: timedelta = timedelta(hours=6)
    min_runs: int = 4
    max_infra_retries: int = 2
    infra_backoff: timedelta = timedelta(seconds=30)
    infra_backoff_max: timedelta = timedelta(minutes=10)
    recheck_failed: int = 1
    max_extra_runs: int = 8

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


def _infra_streak(runs: list[RunSummary], since: datetime | None = None) -> list[RunSummary]:
    """The consecutive infra-error runs at the end of ``runs``, newest first; only runs created
    at or after ``since`` count (a person's retry restarts the streak, and its budget)."""
    streak: list[RunSummary] = []
    for run in reversed(runs):
        if run.verdict is not Verdict.INFRA_ERROR or (since is not None and run.created_at < since):
            break
        streak.append(run)
    return streak


def _retry_wait(runs: list[RunSummary], now: datetime, policy: SoakPolicy,
                since: datetime | None = None) -> timedelta:
    """How much longer the next retry must wait (zero: due now, or no infra error to retry)."""
    streak = _infra_streak(runs, since)
    if not streak:
        return timedelta(0)
    last = streak[0]
    ended = last.finished_at or last.created_at
    return max(ended + policy.retry_delay(len(streak)) - now, timedelta(0))


def _busy(run: RunSummary) -> bool:
    """An infra error whose only reason is the environment check ("testbed too busy")."""
    return only_too_busy(run.excuses)


def _budgeted(streak: list[RunSummary]) -> list[RunSummary]:
    """The runs of an infra streak that use up the retry budget: a testbed that was merely too
    busy is retried with the same backoff (at most ``infra_backoff_max`` apart) for as long as
    it stays busy, and the candidate waits, saying why; it never needs an operator for that."""
    return [r for r in streak if not _busy(r)]


def _infra_exhausted(runs: list[RunSummary], policy: SoakPolicy,
                     since: datetime | None = None) -> Excuse | None:
    """Consecutive infra errors at the end of ``runs`` (since a person's retry, if any) beyond
    the retry budget, as an excuse (too-busy runs do not count: :func:`_budgeted`)."""
    streak = _budgeted(_infra_streak(runs, since))
    if len(streak) <= policy.max_infra_retries:
        return None
    last = streak[0]
    detail = "; ".join(e.message for e in last.excuses) or "no detail"
    return Excuse(
        "infra_error",
        f"run {last.id}",
        f"{len(streak)} {last.kind} runs in a row hit testbed or tool errors; retries exhausted, "
        f"an operator must look, then retry it (last: {detail})",
        {"runs": [r.id for r in streak]},
    )


def _backing_off(stage: str, runs: list[RunSummary], wait: timedelta,
                 policy: SoakPolicy, since: datetime | None = None) -> Excuse:
    streak = _infra_streak(runs, since)
    detail = "; ".join(e.message for e in streak[0].excuses) or "no detail"
    if _busy(streak[0]):
        return Excuse(
            "infra_retry", f"run {streak[0].id}",
            f"{stage}: waiting for the testbed to calm down, next try in "
            f"{format_duration(wait)} ({detail}); a busy testbed never counts against the "
            "candidate", {"runs": [r.id for r in streak], "wait_s": wait.total_seconds(),
                          "busy": True})
    return Excuse(
        "infra_retry", f"run {streak[0].id}",
        f"{stage}: testbed or tool error, retry {len(_budgeted(streak))} of "
        f"{policy.max_infra_retries} in {format_duration(wait)} (last: {detail})",
        {"runs": [r.id for r in streak], "wait_s": wait.total_seconds()},
    )


WAIVABLE_KINDS = frozenset({"check", "limit", "regression", "flaky", "leaning"})
"""Excuse kinds a person may set aside: a failed check, a broken limit, a regression, a flaky
check (its subject is the check's, so one waiver covers both), and a series the soak could not
decide that leans worse (its subject is the series')."""

BLOCKING_KINDS = frozenset({"flaky", "recheck", "leaning"})
"""Excuse kinds of a waiting candidate that still refuse its promotion: an unwaived flaky check,
a failure still waiting for its recheck or confirmation, and an undecided series that leans
worse. ``unconfirmed`` (a regression that did not reproduce) does not block: it is shown, not
held against the candidate."""

_REPEATABLE_KINDS = frozenset({"check", "regression"})  # a limit is final on one run
UNDECIDED_KINDS = frozenset({"undecided", "undecidable"})  # a run's notes, never its failures


@dataclass(frozen=True, slots=True)
class _Reading:
    """One kind's runs read in order, with the recheck and confirmation rules applied.

    ``rejection``: the excuses that reject the candidate (a broken limit, a failed check whose
    recheck failed too, a regression confirmed by the next run). ``flaky``: one excuse per check
    that failed and then passed on a recheck. ``unconfirmed``: one per regression the next run
    did not reproduce. ``failing``: failed runs still waiting for their recheck or confirmation,
    oldest first (empty: none).
    """

    rejection: tuple[Excuse, ...] | None
    flaky: tuple[Excuse, ...]
    failing: tuple[RunSummary, ...]
    unconfirmed: tuple[Excuse, ...] = ()


def _failures(run: RunSummary) -> list[Excuse]:
    return [e for e in run.excuses if e.kind in WAIVABLE_KINDS]


def _repeatable(run: RunSummary) -> bool:
    """A failed run whose every failure is a failed check or a regression: both are observed
    once more before they count. A broken limit is final, and a run with no excuse says too
    little to be repeated."""
    failures = _failures(run)
    return (run.verdict in (Verdict.FAILED, Verdict.REGRESSED) and bool(failures)
            and all(e.kind in _REPEATABLE_KINDS for e in failures))


def _subjects(run: RunSummary, kind: str) -> set[str]:
    return {e.subject for e in run.excuses if e.kind == kind}


def _confirms(earlier: list[RunSummary], run: RunSummary) -> bool:
    """Whether ``run`` repeats a failure of the runs before it: any failed check again (a host
    that stays unreachable; checks are functional, one failing after another is not noise), or
    a regression of the same series."""
    if _subjects(run, "check") and any(_subjects(r, "check") for r in earlier):
        return True
    return any(_subjects(run, "regression") & _subjects(r, "regression") for r in earlier)


def _read(runs: list[RunSummary], policy: SoakPolicy) -> _Reading:
    """Walk one kind's runs, oldest first: every finished run after a failed one is its recheck
    or confirmation (an infra error in between is retried as usual and proves nothing)."""
    failing: list[RunSummary] = []  # failures waiting for their recheck or confirmation
    streak: list[RunSummary] = []  # failed runs in a row, whatever they failed on
    flaky: list[Excuse] = []
    unconfirmed: list[Excuse] = []

    def reading(rejection: list[RunSummary] | None, in_a_row: bool = False) -> _Reading:
        return _Reading(_rejection(rejection, in_a_row) if rejection else None, tuple(flaky),
                        () if rejection else tuple(failing), tuple(unconfirmed))

    for run in runs:
        if run.verdict in (None, Verdict.INFRA_ERROR):
            continue
        if run.verdict is Verdict.PASSED:
            flaky.extend(_flaky(failing, run))
            unconfirmed.extend(_unconfirmed(failing, run))
            failing, streak = [], []
            continue
        streak.append(run)
        if not _repeatable(run) or policy.recheck_failed == 0:
            if failing and not _confirms(failing, run):
                # What the runs before saw was not seen again: not part of this rejection.
                if not _subjects(run, "check"):
                    flaky.extend(_flaky(failing, run))
                unconfirmed.extend(_unconfirmed(failing, run))
                failing = []
            return reading([*failing, run])
        if failing and _confirms(failing, run):
            if not _subjects(run, "check") or len(failing) >= policy.recheck_failed:
                return reading([*failing, run])
            failing.append(run)  # a check failed again, and rechecks are left
            continue
        if failing:  # nothing repeated: what the earlier runs saw was not seen again
            if not _subjects(run, "check"):
                flaky.extend(_flaky(failing, run))
            unconfirmed.extend(_unconfirmed(failing, run))
        failing = [run]
        if len(streak) >= policy.recheck_failed + 2:
            return reading(streak, in_a_row=True)
    return reading(None)


def _rejection(failed: list[RunSummary], in_a_row: bool = False) -> tuple[Excuse, ...]:
    """Each failure once, naming every run it was seen in, and when several runs failed, a last
    line saying so: the failure was seen again (confirmed), or ``in_a_row`` runs failed on
    different things each time."""
    merged: dict[tuple[str, str], tuple[Excuse, list[RunSummary]]] = {}
    for run in failed:
        # What a run could not decide is no reason to reject: only its failures are listed.
        excuses = tuple(e for e in run.excuses if e.kind not in UNDECIDED_KINDS) or (
            Excuse(str(run.verdict), f"run {run.id}", f"{run.kind} run {run.id} {run.verdict}"),)
        for e in excuses:
            _, seen = merged.get((e.kind, e.subject), (e, []))
            merged[(e.kind, e.subject)] = (e, [*seen, run])
    out: list[Excuse] = []
    # Confirmed is what was seen again; a series that regressed in one run only is shown as
    # noise, once, against the other run (the last, or the first for the last's own).
    once: dict[int, tuple[RunSummary, RunSummary, set[str]]] = {}
    for e, seen in merged.values():
        if len(seen) == 1 and e.kind == "regression" and len(failed) > 1 and not in_a_row:
            run = seen[0]
            then = failed[-1] if run is not failed[-1] else failed[0]
            once.setdefault(run.id, (run, then, set()))[2].add(e.subject)
            continue
        if len(seen) == 1:
            out.append(e)
            continue
        ids = [r.id for r in seen]
        out.append(Excuse(e.kind, e.subject,
                          f"{e.message} (seen in {seen[0].kind} runs {_and(ids)})",
                          {**e.data, "runs": ids}))
    if len(failed) > 1:
        first, last = failed[0], failed[-1]
        again = ", ".join(str(r.id) for r in failed[1:])
        listed = _and([r.id for r in failed])
        message = (f"{len(failed)} {first.kind} runs in a row failed ({listed}), each on "
                   "something else: a candidate that fails every run is not noise"
                   if in_a_row else
                   f"{first.kind} run {first.id} failed and the run after it (run {again}) "
                   "failed too: confirmed, not noise")
        out.append(Excuse("rechecked", f"run {last.id}", message,
                          {"runs": [r.id for r in failed]}))
    noise = [x for run, then, subjects in once.values() for x in _unconfirmed([run], then)
             if x.subject in subjects]
    return (*out, *noise)


def _and(ids: list[int]) -> str:
    text = [str(i) for i in ids]
    return text[0] if len(text) == 1 else f"{', '.join(text[:-1])} and {text[-1]}"


def _flaky(failed: list[RunSummary], passed: RunSummary) -> list[Excuse]:
    """One excuse per check that failed in ``failed`` and passed in the recheck ``passed``."""
    first_failure: dict[str, tuple[RunSummary, Excuse]] = {}
    for run in failed:
        for e in run.excuses:
            if e.kind == "check":
                first_failure.setdefault(e.subject, (run, e))
    return [
        Excuse(
            "flaky", subject,
            f"flaky check {subject}: failed in {run.kind} run {run.id} ({e.message}) and passed "
            f"on its recheck, {passed.kind} run {passed.id}; it counts against promotion until "
            "a person waives it",
            {"failed_run": run.id, "passed_run": passed.id,
             "failed_runs": [r.id for r in failed if any(x.subject == subject
                                                         for x in r.excuses)],
             "failure": e.message})
        for subject, (run, e) in first_failure.items()
    ]


def _unconfirmed(failed: list[RunSummary], then: RunSummary) -> list[Excuse]:
    """One excuse per regression seen in ``failed`` that ``then`` did not reproduce."""
    again = _subjects(then, "regression")
    seen: dict[str, tuple[RunSummary, Excuse]] = {}
    for run in failed:
        for e in run.excuses:
            if e.kind == "regression" and e.subject not in again:
                seen.setdefault(e.subject, (run, e))
    return [
        Excuse(
            "unconfirmed", subject,
            f"not confirmed, treated as noise: {e.message} — seen in {run.kind} run {run.id}, "
            f"not in {then.kind} run {then.id} with fresh controls",
            {"seen_run": run.id, "checked_run": then.id, "regression": dict(e.data)})
        for subject, (run, e) in seen.items()
    ]


def _recheck(stage: str, failing: tuple[RunSummary, ...], policy: SoakPolicy) -> Excuse:
    first, last = failing[0], failing[-1]
    checks = ", ".join(dict.fromkeys(e.subject for e in last.excuses if e.kind == "check"))
    series = ", ".join(dict.fromkeys(e.subject for e in last.excuses if e.kind == "regression"))
    what = "; ".join(x for x in (checks, f"regressed: {series}" if series else "") if x)
    purpose = ("to tell a flaky check from a real failure" if checks
               else "to confirm the regression with fresh controls before it rejects")
    return Excuse(
        "recheck", f"run {last.id}",
        f"{stage}: {first.kind} run {last.id} failed ({what}); recheck {len(failing)} of "
        f"{policy.recheck_failed}, {purpose}",
        {"runs": [r.id for r in failing], "checks": checks.split(", ") if checks else [],
         "regressions": series.split(", ") if series else []})


def blocking(decision: Decision) -> tuple[Excuse, ...]:
    """The excuses that refuse promoting the candidate now (empty: nothing does): its rejection,
    an unwaived flaky check, or a failed check still being rechecked. A person promoting by hand
    must waive them or force it."""
    if decision.action is Action.REJECT:
        return decision.excuses
    return tuple(e for e in decision.excuses if e.kind in BLOCKING_KINDS)


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
            # a waived series that leans worse no longer holds promotion
            seen.append(replace(run, excuses=tuple(
                e for e in run.excuses
                if not (e.kind in UNDECIDED_KINDS and e.subject in waived))))
            continue
        kept = tuple(e for e in run.excuses
                     if not (e.kind in WAIVABLE_KINDS and e.subject in waived))
        if any(e.kind in WAIVABLE_KINDS for e in kept) or not run.excuses:
            seen.append(replace(run, excuses=kept))
            continue
        # Evidence is incomplete only where a suite had tool trouble; what the statistics could
        # not decide yet (``undecided``) or saw once (``unconfirmed``) leaves the run passed.
        verdict = (Verdict.INFRA_ERROR if any(e.kind == "infra_error" for e in kept)
                   else Verdict.PASSED)
        seen.append(replace(run, verdict=verdict, excuses=kept))
    return seen


def decide(
    state: CandidateState,
    runs: list[RunSummary],
    now: datetime,
    policy: SoakPolicy,
    soak_started_at: datetime | None = None,
    retried_at: datetime | None = None,
) -> Decision:
    """The next step for one candidate. Pure: the same inputs always give the same decision.

    ``retried_at``: when a person last retried the candidate; infra errors before it no longer
    count, so a candidate whose retries ran out gets a fresh budget (``actions.retry``).
    """
    runs = sorted(runs, key=lambda r: (r.created_at, r.id))
    if state is CandidateState.QUEUED:
        return Decision(Action.WAIT, (Excuse("queued", "pipeline",
                                             "queued: waiting for the testbed"),))
    gate_runs = [r for r in runs if r.kind is RunKind.GATE]
    if state is CandidateState.GATING:
        return _decide_gating(gate_runs, now, policy, retried_at)
    if state is CandidateState.SOAKING:
        if soak_started_at is None:
            raise ValueError("a soaking candidate needs soak_started_at")
        # Flaky checks of the gate still count against promotion while it soaks.
        gate = _read(gate_runs, policy)
        return _decide_soaking([r for r in runs if r.kind is RunKind.SOAK], now, policy,
                               soak_started_at, gate.flaky, gate.unconfirmed, retried_at)
    return Decision(Action.WAIT, (Excuse("final", "lifecycle", f"{state}: no further steps"),))


def _decide_gating(gate_runs: list[RunSummary], now: datetime, policy: SoakPolicy,
                   retried_at: datetime | None = None) -> Decision:
    reading = _read(gate_runs, policy)
    if reading.rejection is not None:
        return Decision(Action.REJECT, reading.rejection)
    seen = (*reading.flaky, *reading.unconfirmed)  # shown while the gate goes on
    if not reading.failing and any(r.verdict is Verdict.PASSED for r in gate_runs):
        return Decision(Action.START_SOAK, seen)
    rechecking = (*seen, _recheck("gating", reading.failing, policy)) if reading.failing else seen
    if any(r.verdict is None for r in gate_runs):
        if reading.failing:
            return Decision(Action.WAIT, rechecking)
        return Decision(Action.WAIT, (*seen, Excuse("gating", "gate",
                                                    "gating: gate run in progress")))
    exhausted = _infra_exhausted(gate_runs, policy, retried_at)
    if exhausted is not None:
        return Decision(Action.WAIT, (*rechecking, exhausted))
    wait = _retry_wait(gate_runs, now, policy, retried_at)
    if wait > timedelta(0):
        return Decision(Action.WAIT, (*rechecking, _backing_off("gating", gate_runs, wait, policy,
                                                                retried_at)))
    if reading.failing:
        return Decision(Action.WAIT, rechecking, next_run=RunKind.GATE)
    retrying = bool(gate_runs)
    message = "gating: retrying after a testbed error" if retrying else "gating: gate run queued"
    return Decision(Action.WAIT, (*seen, Excuse("gating", "gate", message)),
                    next_run=RunKind.GATE)


def _decide_soaking(
    soak_runs: list[RunSummary], now: datetime, policy: SoakPolicy, started: datetime,
    gate_flaky: tuple[Excuse, ...] = (), gate_unconfirmed: tuple[Excuse, ...] = (),
    retried_at: datetime | None = None,
) -> Decision:
    reading = _read(soak_runs, policy)
    if reading.rejection is not None:
        return Decision(Action.REJECT, reading.rejection)
    flaky = (*gate_flaky, *reading.flaky)
    noise = (*gate_unconfirmed, *reading.unconfirmed)
    elapsed = max(now - started, timedelta(0))
    passing = sum(1 for r in soak_runs if r.verdict is Verdict.PASSED)
    pending = any(r.verdict is None for r in soak_runs)
    progress = {"elapsed_s": elapsed.total_seconds(),
                "duration_s": policy.duration.total_seconds(),
                "passing_runs": float(passing), "min_runs": float(policy.min_runs)}
    complete = elapsed >= policy.duration and passing >= policy.min_runs and not pending
    extension = _extension(soak_runs, started, policy) if complete else None
    if extension is not None:
        complete = False
    if complete and not reading.failing:
        if flaky:
            return Decision(Action.WAIT, (*flaky, *noise, _awaiting_waiver(flaky)),
                            data=progress)
        leaning = _leaning(soak_runs)
        if leaning:
            return Decision(Action.WAIT, (*noise, *leaning, _awaiting_decision(leaning)),
                            data=progress)
        return Decision(Action.PROMOTE, (*noise, *_undecidable(soak_runs)), data=progress)

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
    excuses.extend(flaky)
    excuses.extend(noise)
    if extension is not None:
        excuses.append(extension)
    if reading.failing:
        excuses.append(_recheck("soaking", reading.failing, policy))
    if pending:
        excuses.append(Excuse("soaking", "soak", "soak run in progress"))
        return Decision(Action.WAIT, tuple(excuses), data=progress)
    exhausted = _infra_exhausted(soak_runs, policy, retried_at)
    if exhausted is not None:
        return Decision(Action.WAIT, (*excuses, exhausted), data=progress)
    last = soak_runs[-1] if soak_runs else None
    retry = last is not None and last.verdict is Verdict.INFRA_ERROR
    wait = _retry_wait(soak_runs, now, policy, retried_at)
    if retry and wait > timedelta(0):
        return Decision(Action.WAIT, (*excuses, _backing_off("soaking", soak_runs, wait, policy,
                                                             retried_at)), data=progress)
    due = (last is None or retry or bool(reading.failing)
           or now >= last.created_at + policy.interval)
    if passing < policy.min_runs and elapsed >= policy.duration:
        due = True  # the week is over but runs are missing: catch up instead of waiting
    return Decision(Action.WAIT, tuple(excuses), next_run=RunKind.SOAK if due else None,
                    data=progress)


def _undecidable(soak_runs: list[RunSummary]) -> tuple[Excuse, ...]:
    """What the newest finished soak run could not decide yet (its ``undecidable`` excuses)."""
    finished = [r for r in soak_runs if r.verdict is Verdict.PASSED]
    return tuple(e for e in finished[-1].excuses if e.kind == "undecidable") if finished else ()


def _leaning(soak_runs: list[RunSummary]) -> tuple[Excuse, ...]:
    """The series the newest finished soak run could not decide whose estimate leans worse: they
    hold promotion (``leaning``), one excuse each, until decided or waived."""
    return tuple(Excuse("leaning", e.subject, e.message, e.data)
                 for e in _undecidable(soak_runs) if e.data.get("leans_worse"))


def _awaiting_decision(leaning: tuple[Excuse, ...]) -> Excuse:
    """The soak and its extension are over, and some series still lean worse undecided: the
    statistics cannot tell noise from a regression, so a person must (never a silent pass)."""
    subjects = [e.subject for e in leaning]
    many = len(subjects) > 1
    return Excuse(
        "awaiting_decision", "promotion",
        f"soak complete, but {len(subjects)} series lean{'' if many else 's'} worse and "
        f"{'are' if many else 'is'} still undecided ({', '.join(subjects[:3])}"
        f"{' …' if len(subjects) > 3 else ''}): not promoted until a person waives "
        f"{'them' if many else 'it'} or retries the candidate", {"subjects": subjects})


def _extension(soak_runs: list[RunSummary], started: datetime,
               policy: SoakPolicy) -> Excuse | None:
    """The soak's time is up, but the statistics cannot decide some series yet: one more soak
    run, up to ``max_extra_runs`` beyond the plan (None: no extension — the candidate is
    promoted with the undecided series in its excuses, unless one of them leans worse, which
    holds it for a person). A series that leans worse extends the soak as far as the bound
    allows; the others only when the runs they need fit in it."""
    undecided = _undecidable(soak_runs)
    extra = sum(1 for r in soak_runs if r.created_at >= started + policy.duration)
    if not undecided or extra >= policy.max_extra_runs:
        return None
    needed = max((int(e.data.get("runs_needed") or 0) for e in undecided), default=0)
    if needed > policy.max_extra_runs - extra and not _leaning(soak_runs):
        return None  # the extension could not decide them: no week of waiting for nothing
    subjects = [s for e in undecided for s in e.data.get("series", [e.subject])]
    return Excuse(
        "soak_extended", "soak",
        f"soak extended: {len(subjects)} series cannot be decided yet "
        f"({', '.join(subjects[:3])}{' …' if len(subjects) > 3 else ''}; about {needed} more "
        f"run{'s' if needed != 1 else ''} needed); extra run {extra + 1} of at most "
        f"{policy.max_extra_runs}",
        {"series": subjects, "runs_needed": needed, "extra_runs": extra,
         "max_extra_runs": policy.max_extra_runs})


def _awaiting_waiver(flaky: tuple[Excuse, ...]) -> Excuse:
    """The soak is done but flaky checks stand: no more runs, a person must decide."""
    subjects = list(dict.fromkeys(e.subject for e in flaky))
    return Excuse(
        "awaiting_waiver", "promotion",
        f"soak complete, but {len(subjects)} flaky check{'s' if len(subjects) > 1 else ''} "
        f"({', '.join(subjects)}) {'are' if len(subjects) > 1 else 'is'} not waived: a person "
        "must waive or the candidate will not be promoted",
        {"subjects": subjects})
