"""Culprit finding: which commit of which component broke a rejected candidate.

A candidate formed on known-good #N that moved several components (or one component by several
commits) and failed says *that* something broke, not *what*. Culprit finding answers with runs
of combinations in between. It starts by checking that the failure shows in such a run at all:

0. **Reproduce.** The rejected candidate's own combination is tested again, in a bisect run.
   The rejection may have come from a soak run, or from the statistical detector weighing many
   runs, while every bisect run is judged once, by the margin against the known-good: a failure
   that does not show there cannot be narrowed down by them, and every probe would pass. So if
   this run passes, the search ends inconclusive. If it fails, it is the failing end of the
   search, observed under the same rules as every probe; the rejection itself never is.

Then two phases:

1. **Swap back.** For each changed component, in name order, test the candidate with only that
   component set back to its known-good commit. A run that now *passes* makes the component
   guilty: the rest of the change is fine without it. A run that still fails does **not** clear
   the component — it only says the rest fails too. Hence:

   * exactly one swap passes: that component is the culprit's home;
   * several pass: the failure needs those components *together* (an interaction). Each of them
     alone is harmless, so holding back the first one (in name order) is enough; the conclusion
     names the others;
   * none passes: no single component explains the failure (two of them break it on their own,
     or the failure is not in the changes at all). That is inconclusive, and the pipeline falls
     back to isolation (``formation``).

   When only one component changed, phase 1 is skipped: the candidate fails (step 0) and the
   known-good passes, which is all phase 1 would establish. When that one component moved by
   one commit, there is nothing to search: the rejection names it.
2. **Bisect** inside the guilty component's commit range, every other component at the
   candidate's commits. Both ends are known: the component at its known-good commit passes
   (phase 1, or the known-good itself) and at the candidate's commit fails (step 0). A
   binary search finds the first commit that fails: the culprit; the commit before it is the last
   good one. This assumes the breakage, once in, stays in (git bisect assumes the same).

So a search costs 1 + ⌈log₂ n⌉ runs for one component moved by n commits (7 commits: 1 + 3),
and 1 + k + ⌈log₂ n⌉ when k components changed and the guilty one moved by n.

Everything here is a pure function of what was tested so far: :func:`next_step` replays the
search against the recorded steps and says what to do now — test a combination, wait for a run,
or conclude. A step whose run ended ``infra_error`` says nothing about the combination and is
retried with backoff, a bounded number of times; then, like a search that needs more runs than
``max_steps``, the search stops inconclusive with the reason. A run the environment check
refused ("testbed too busy") is not an error of the testbed but its load: as a gate run, it is
retried with the same backoff for as long as the testbed stays busy, and it counts neither
against the retries nor against ``max_steps`` — a busy spell delays culprit finding, it never
ends it.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from certifier.domain.combination import Combination
from certifier.domain.judgement import Verdict


class Phase(StrEnum):
    REPRODUCE = "reproduce"  # the rejected candidate's own combination, as a bisect run
    SWAP = "swap"  # one changed component set back to its known-good commit
    BISECT = "bisect"  # one commit inside the guilty component's range


@dataclass(frozen=True, slots=True)
class BisectPolicy:
    """How far culprit finding may go: ``max_steps`` runs in all (retries and confirmations
    included), and each step's infra errors retried ``max_infra_retries`` times, the n-th after
    ``infra_backoff * 2**(n-1)`` (at most ``infra_backoff_max``), as gate runs are. Runs refused
    as too busy are retried on the same backoff without limit and count in neither budget.
    ``confirm_failures``: a failing step counts only once a second run of the same combination
    fails on the same thing (the gate's confirmation rule), so noise never names a culprit."""

    max_steps: int = 16
    confirm_failures: bool = True
    max_infra_retries: int = 2
    infra_backoff: timedelta = timedelta(seconds=30)
    infra_backoff_max: timedelta = timedelta(minutes=10)

    def retry_delay(self, retry: int) -> timedelta:
        if retry < 1:
            return timedelta(0)
        delay: timedelta = min(self.infra_backoff * 2 ** min(retry - 1, 30),
                               self.infra_backoff_max)
        return delay


@dataclass(frozen=True, slots=True)
class Problem:
    """What is known when culprit finding starts.

    ``ranges``: for each changed component that the known-good has, its commits strictly after
    the known-good's commit up to and including the candidate's, oldest first (so the last one
    is the candidate's commit). ``failed_run``: the run that rejected the candidate;
    ``failed_by``: that rejection in words (e.g. "soak run 12, by the statistical detector"),
    for the reason given when a bisect run does not reproduce it. The rejection is context
    only: no conclusion rests on it (see step 0 in the module docstring).
    """

    known_good: Combination
    candidate: Combination
    ranges: Mapping[str, tuple[str, ...]]
    failed_run: int | None = None
    failed_by: str = ""

    def __post_init__(self) -> None:
        for name in self.suspects:
            commits = self.ranges.get(name, ())
            if not commits or commits[-1] != self.candidate[name]:
                raise ValueError(f"the range of {name} must end with the candidate's commit "
                                 f"{self.candidate[name]}")
            if self.known_good[name] in commits:
                raise ValueError(f"the range of {name} must not contain its known-good commit")

    @property
    def changed(self) -> tuple[str, ...]:
        """Components whose commit differs from the known-good's, in name order."""
        return tuple(self.candidate.changed_against(self.known_good))

    @property
    def suspects(self) -> tuple[str, ...]:
        """Changed components that have a known-good commit to go back to."""
        return tuple(name for name in self.changed if name in self.known_good)

    @property
    def rejection(self) -> str:
        """The rejection in words, for the reasons the search gives."""
        if self.failed_by:
            return self.failed_by
        return f"run {self.failed_run}" if self.failed_run is not None else "the rejecting run"


@dataclass(frozen=True, slots=True)
class Step:
    """One run of culprit finding: the combination it tests and, once finished, its verdict and
    what it failed on (``kind:subject`` of each failure excuse)."""

    run_id: int
    combination: Combination
    verdict: Verdict | None = None
    finished_at: datetime | None = None
    failures: frozenset[str] = frozenset()  # "check:<subject>", "regression:<subject>", …
    busy: bool = False  # the environment check found the testbed too busy

    @property
    def waited(self) -> bool:
        """An infra error only because the testbed was too busy: waited for, never a step (a
        check that failed on a busy testbed still failed: such a run is an ordinary step)."""
        return self.busy and self.verdict is Verdict.INFRA_ERROR


def steps_taken(steps: Sequence[Step]) -> int:
    """The steps that count towards ``max_steps``: every run but those :attr:`Step.waited`."""
    return sum(1 for s in steps if not s.waited)


@dataclass(frozen=True, slots=True)
class Probe:
    """A combination the search needs a verdict for: ``component`` at ``sha``, the rest as in
    the candidate (for ``REPRODUCE``, the candidate itself: ``component`` and ``sha`` empty)."""

    phase: Phase
    component: str
    sha: str
    combination: Combination

    def describe(self) -> str:
        if self.phase is Phase.REPRODUCE:
            return "the rejected candidate's own combination"
        if self.phase is Phase.SWAP:
            return f"{self.component} set back to its known-good commit {self.sha[:12]}"
        return f"{self.component} at {self.sha[:12]}"


@dataclass(frozen=True, slots=True)
class Try:
    """Create a run of ``probe.combination`` (``retry`` > 0: again, after infra errors)."""

    probe: Probe
    retry: int = 0


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do yet: ``run_id`` is still running, or a retry waits until ``until``
    (``busy``: because the last run found the testbed too busy, not after an error)."""

    probe: Probe
    run_id: int | None = None
    until: datetime | None = None
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Culprit:
    """The conclusion: ``component`` broke at ``sha``; ``last_good`` is the commit before it
    (the known-good's when the culprit is the range's first commit). ``evidence``: the bisect
    runs that show it, oldest first; one of them always failed with ``component`` at ``sha``
    (the rejection never counts, see step 0). ``together``: other components whose swap-back
    also passed (the failure needs them together with this one)."""

    component: str
    sha: str
    last_good: str
    evidence: tuple[int, ...]
    explanation: str
    together: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Found:
    culprit: Culprit


@dataclass(frozen=True, slots=True)
class Inconclusive:
    reason: str


Decision = Try | Wait | Found | Inconclusive


@dataclass(frozen=True, slots=True)
class _Answer:
    passed: bool
    run_id: int


_Search = Generator[Probe, _Answer, Found | Inconclusive]


def next_step(problem: Problem, steps: Sequence[Step], policy: BisectPolicy,
              now: datetime) -> Decision:
    """What culprit finding should do now, given every step recorded so far.

    The search is replayed from the start each time: a probe whose combination was already
    tested takes that step's verdict, so the answer never depends on anything but the steps.
    """
    search = _search(problem)
    try:
        probe = next(search)
        while True:
            answer = _answer(probe, steps, policy, now)
            if not isinstance(answer, _Answer):
                return answer
            probe = search.send(answer)
    except StopIteration as done:
        conclusion: Found | Inconclusive = done.value
        return conclusion


def worth_starting(problem: Problem, policy: BisectPolicy, now: datetime) -> bool:
    """Whether culprit finding has anything to learn: it would run at least one step."""
    return isinstance(next_step(problem, (), policy, now), Try)


def carriers(commits: Sequence[str], culprit: str) -> tuple[str, ...]:
    """The commits of a range that carry the culprit: it and every later one."""
    return tuple(commits[list(commits).index(culprit):]) if culprit in commits else (culprit,)


def _answer(probe: Probe, steps: Sequence[Step], policy: BisectPolicy,
            now: datetime) -> _Answer | Decision:
    """The recorded verdict for ``probe``, or what must happen before there is one."""
    mine = [s for s in steps if s.combination == probe.combination]
    decisive = [s for s in mine if s.verdict not in (None, Verdict.INFRA_ERROR)]
    passed = _settled(decisive, policy)
    if passed is not None:
        return _Answer(passed, decisive[-1].run_id)
    if mine and mine[-1].verdict is None:
        return Wait(probe, run_id=mine[-1].run_id)
    errors: list[Step] = []  # the infra errors since the last finished run of this combination
    for step in reversed(mine):
        if step.verdict is not Verdict.INFRA_ERROR:
            break
        errors.insert(0, step)
    failed = [s for s in errors if not s.waited]  # a busy testbed is waited for, not counted
    if len(failed) > policy.max_infra_retries:
        runs = ", ".join(str(s.run_id) for s in failed)
        return Inconclusive(f"testing {probe.describe()} hit testbed or tool errors "
                            f"{len(failed)} times in a row (runs {runs})")
    if errors:
        ended = errors[-1].finished_at or now
        ready = ended + policy.retry_delay(len(errors))
        if now < ready:
            return Wait(probe, until=ready, busy=errors[-1].waited)
    if steps_taken(steps) >= policy.max_steps:
        return Inconclusive(f"the limit of {policy.max_steps} runs was reached before the "
                            f"culprit was found (next: {probe.describe()})")
    return Try(probe, retry=len(errors))


def _settled(decisive: Sequence[Step], policy: BisectPolicy) -> bool | None:
    """Whether a combination passes (True) or fails (False) on its finished runs, or None
    while it needs another run: a failure counts once confirmed (:func:`_confirmed_failure`),
    a pass at once unless a failure was seen too — then the majority of three runs decides,
    so neither a noisy failure nor a lucky pass moves the search."""
    if not decisive:
        return None
    if not policy.confirm_failures:
        return decisive[-1].verdict is Verdict.PASSED
    passes = sum(1 for s in decisive if s.verdict is Verdict.PASSED)
    fails = len(decisive) - passes
    if fails == 0:
        return True
    if passes == 0:
        return False if _confirmed_failure(decisive, policy) else None
    if len(decisive) >= 3:
        return passes > fails
    return None


def _confirmed_failure(decisive: Sequence[Step], policy: BisectPolicy) -> bool:
    """Whether the failures at the end of ``decisive`` (one combination's finished runs) are
    confirmed: the newest two share a failed check or a regressed series, or three failed in a
    row. A lone failure is one observation, and a busy testbed can make one look bad."""
    if not policy.confirm_failures:
        return True
    failing: list[Step] = []
    for step in reversed(decisive):
        if step.verdict is Verdict.PASSED:
            break
        failing.append(step)
    if len(failing) >= 3:
        return True
    if len(failing) < 2:
        return False
    newest, before = failing[0].failures, failing[1].failures
    checks = {f for f in newest if f.startswith("check:")}
    return bool(newest & before) or (bool(checks) and any(f.startswith("check:")
                                                         for f in before))


def _search(problem: Problem) -> _Search:
    """The search as straight-line code: each ``yield`` asks for one combination's verdict."""
    suspects = problem.suspects
    if not suspects:
        return Inconclusive("no changed component has a known-good commit to go back to")
    if len(problem.changed) == 1 and len(problem.ranges[suspects[0]]) == 1:
        return Inconclusive(f"only one commit changed: {problem.rejection} already names "
                            f"{suspects[0]} {problem.candidate[suspects[0]][:12]}")
    failing = yield Probe(Phase.REPRODUCE, "", "", problem.candidate)
    if failing.passed:
        return Inconclusive(
            f"the failure did not reproduce in a gate run: the candidate's own combination "
            f"passed in run {failing.run_id}, judged by the margin against the known-good, "
            f"after {problem.rejection} rejected it; bisect runs cannot tell a good commit from "
            f"a bad one when the candidate itself passes them")
    swapped: dict[str, int] = {}  # component → the passing swap-back run
    if len(problem.changed) == 1:
        guilty = list(suspects)
    else:
        still_failing: list[int] = []
        for name in suspects:
            sha = problem.known_good[name]
            answer = yield Probe(Phase.SWAP, name, sha, problem.candidate.replace(**{name: sha}))
            if answer.passed:
                swapped[name] = answer.run_id
            else:
                still_failing.append(answer.run_id)
        guilty = [name for name in suspects if name in swapped]
        if not guilty:
            runs = ", ".join(str(r) for r in still_failing)
            return Inconclusive(
                f"setting any one changed component back to its known-good commit still failed "
                f"(runs {runs}): several components break the candidate on their own, or the "
                f"failure does not come from one component's change")
    return (yield from _bisect(problem, guilty[0], failing.run_id, swapped, tuple(guilty[1:])))


def _bisect(problem: Problem, name: str, failing_run: int, swapped: Mapping[str, int],
            together: tuple[str, ...]) -> _Search:
    """Binary search in ``name``'s range between a passing and a failing end.

    ``failing_run`` is the bisect run in which the candidate's own combination failed: the
    failing end is always one observed by a bisect run, so a culprit never rests on the
    rejection alone (which may have needed a week of soak runs to show).
    """
    commits = problem.ranges[name]
    good, good_run = -1, swapped.get(name)  # -1: the known-good's commit
    bad, bad_run = len(commits) - 1, failing_run
    while bad - good > 1:
        mid = (good + bad) // 2
        answer = yield Probe(Phase.BISECT, name, commits[mid],
                             problem.candidate.replace(**{name: commits[mid]}))
        if answer.passed:
            good, good_run = mid, answer.run_id
        else:
            bad, bad_run = mid, answer.run_id
    last_good = commits[good] if good >= 0 else problem.known_good[name]
    evidence = tuple(sorted({r for r in (swapped.get(name), good_run, bad_run)
                             if r is not None}))
    explanation = _explain(problem, name, commits[bad], last_good, good_run, bad_run,
                           swapped.get(name), together)
    return Found(Culprit(name, commits[bad], last_good, evidence, explanation, together))


def _explain(problem: Problem, name: str, culprit: str, last_good: str, good_run: int | None,
             bad_run: int, swap_run: int | None, together: tuple[str, ...]) -> str:
    def run(run_id: int | None, otherwise: str) -> str:
        return f"run {run_id}" if run_id is not None else otherwise

    searched = len(problem.ranges[name])
    context = ("the candidate changed only " + name if len(problem.changed) == 1
               else f"setting {name} back to its known-good commit made the candidate pass "
                    f"({run(swap_run, 'no run')})")
    text = (f"{name} {culprit[:12]} is the first bad commit of {searched} searched: {context}; "
            f"with every other component at the candidate's commits, {name} at "
            f"{last_good[:12]} passed ({run(good_run, 'the known-good')}) and at "
            f"{culprit[:12]} failed (run {bad_run}).")
    if together:
        others = ", ".join(together)
        text += (f" Setting {others} back passed as well: the failure needs {name} and {others}"
                 f" together, so holding {name} back is enough.")
    return text
