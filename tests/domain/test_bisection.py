"""Culprit finding, pure: reproduce, swap back, then bisect, replayed from recorded steps.

Each test drives :func:`next_step` the way the pipeline does — ask, run the combination it names
against a world whose breakage is known, record the step, ask again — and checks the conclusion
and the runs it took.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from certifier.domain.bisection import (
    BisectPolicy,
    Found,
    Inconclusive,
    Phase,
    Problem,
    Step,
    Try,
    Wait,
    carriers,
    next_step,
    worth_starting,
)
from certifier.domain.combination import Combination
from certifier.domain.judgement import Verdict

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FAILED_RUN = 7  # the gate run that rejected the candidate
DEFAULT = BisectPolicy(confirm_failures=False)  # the search's shape; confirmation: at the end
World = Callable[[Combination], Verdict]


PREFIX = {"cinder": "c", "neutron": "d", "nova": "e", "ironic": "f"}


def sha(name: str, i: int) -> str:
    """A distinct, valid sha for commit ``i`` of ``name`` (0: its known-good commit)."""
    return f"{PREFIX[name]}{i:039x}"


def commits(name: str, n: int) -> tuple[str, ...]:
    return tuple(sha(name, i) for i in range(1, n + 1))


def problem(lengths: Mapping[str, int], unchanged: tuple[str, ...] = (),
            failed_by: str = "") -> Problem:
    """Known-good at commit 0 of every component; the candidate ``lengths[name]`` commits on."""
    names = (*lengths, *unchanged)
    kg = Combination.of({n: sha(n, 0) for n in names})
    cand = Combination.of({n: sha(n, lengths.get(n, 0)) for n in names})
    return Problem(kg, cand, {n: commits(n, k) for n, k in lengths.items()}, FAILED_RUN,
                   failed_by)


def broken_from(name: str, first_bad: int) -> World:
    """A world where ``name`` is broken from its commit ``first_bad`` on."""
    def verdict(combo: Combination) -> Verdict:
        return Verdict.FAILED if int(combo[name][1:], 16) >= first_bad else Verdict.PASSED
    return verdict


def passes_everywhere(combo: Combination) -> Verdict:
    """A world where no single run shows the failure: a soak or detector rejection."""
    return Verdict.PASSED


def drive(prob: Problem, world: World, policy: BisectPolicy = DEFAULT,
          now: datetime = T0) -> tuple[Found | Inconclusive, list[Step]]:
    return drive_runs(prob, lambda combo, run_id: Step(run_id, combo, world(combo), T0), policy,
                      now)


def drive_runs(prob: Problem, run: Callable[[Combination, int], Step],
               policy: BisectPolicy, now: datetime = T0,
               ) -> tuple[Found | Inconclusive, list[Step]]:
    """Ask, run what the search names (``run`` gives the finished step), record, ask again."""
    steps: list[Step] = []
    for run_id in range(100, 200):
        decision = next_step(prob, steps, policy, now)
        if not isinstance(decision, Try):
            assert isinstance(decision, Found | Inconclusive), decision
            return decision, steps
        steps.append(run(decision.probe.combination, run_id))
    raise AssertionError("culprit finding never concluded")


def test_one_guilty_component_of_three_is_found_by_swapping_back_then_bisected() -> None:
    prob = problem({"cinder": 2, "neutron": 5, "nova": 3})
    decision, steps = drive(prob, broken_from("neutron", 3))

    assert isinstance(decision, Found)
    culprit = decision.culprit
    assert (culprit.component, culprit.sha, culprit.last_good) == (
        "neutron", sha("neutron", 3), sha("neutron", 2))
    reproduce, swaps = steps[0], steps[1:4]
    assert reproduce.combination == prob.candidate and reproduce.verdict is Verdict.FAILED
    assert [s.combination.changed_against(prob.candidate) for s in swaps] == [
        ["cinder"], ["neutron"], ["nova"]]  # one component back at a time, in name order
    assert [s.verdict for s in swaps] == [Verdict.FAILED, Verdict.PASSED, Verdict.FAILED]
    for step in steps[4:]:  # the bisection moves neutron only, the rest as in the candidate
        assert step.combination.changed_against(prob.candidate) == ["neutron"]
    assert len(steps) <= 1 + 3 + math.ceil(math.log2(5))
    assert swaps[1].run_id in culprit.evidence  # neutron back at the known-good passed
    assert set(culprit.evidence) <= {s.run_id for s in steps}
    assert "neutron" in culprit.explanation and sha("neutron", 3)[:12] in culprit.explanation
    assert culprit.together == ()


@pytest.mark.parametrize("length", [2, 7])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_bisecting_one_changed_component_finds_the_first_bad_commit(
    length: int, where: str,
) -> None:
    first_bad = {"start": 1, "middle": (length + 1) // 2, "end": length}[where]
    prob = problem({"neutron": length}, unchanged=("nova",))
    decision, steps = drive(prob, broken_from("neutron", first_bad))

    assert isinstance(decision, Found)
    assert decision.culprit.sha == sha("neutron", first_bad)
    assert decision.culprit.last_good == sha("neutron", first_bad - 1)  # 0: the known-good's
    assert len(steps) <= 1 + math.ceil(math.log2(length))  # reproduce, then the binary search
    assert all(s.verdict is not None for s in steps)
    assert not any(s.combination["nova"] != sha("nova", 0) for s in steps)
    if first_bad == length:  # the candidate's own commit: the reproducing run is the evidence
        assert steps[0].run_id in decision.culprit.evidence
    assert FAILED_RUN not in decision.culprit.evidence
    assert worth_starting(prob, DEFAULT, T0)


def test_a_seven_commit_range_costs_one_reproducing_run_and_at_most_three_probes() -> None:
    costs = []
    for first_bad in range(1, 8):
        decision, steps = drive(problem({"neutron": 7}), broken_from("neutron", first_bad))
        assert isinstance(decision, Found) and decision.culprit.sha == sha("neutron", first_bad)
        assert steps[0].combination == problem({"neutron": 7}).candidate
        costs.append(len(steps))
    assert max(costs) == 1 + 3  # the figure docs/architecture.md gives


def test_one_changed_commit_leaves_nothing_to_search() -> None:
    prob = problem({"neutron": 1}, unchanged=("nova",))
    decision = next_step(prob, [], DEFAULT, T0)
    assert isinstance(decision, Inconclusive)
    assert f"run {FAILED_RUN} already names neutron {sha('neutron', 1)[:12]}" in decision.reason
    assert not worth_starting(prob, DEFAULT, T0)


def test_every_search_first_tests_the_candidates_own_combination() -> None:
    for prob in (problem({"neutron": 7}), problem({"cinder": 1, "neutron": 2})):
        decision = next_step(prob, [], DEFAULT, T0)
        assert isinstance(decision, Try)
        assert decision.probe.phase is Phase.REPRODUCE
        assert decision.probe.combination == prob.candidate
        assert decision.probe.describe() == "the rejected candidate's own combination"


def test_the_first_probe_after_reproducing_is_the_middle_of_a_single_components_range() -> None:
    prob = problem({"neutron": 7})
    steps = [Step(100, prob.candidate, Verdict.FAILED, T0)]
    decision = next_step(prob, steps, DEFAULT, T0)
    assert isinstance(decision, Try)
    assert decision.probe.phase is Phase.BISECT
    assert decision.probe.sha == sha("neutron", 3)


@pytest.mark.parametrize("lengths", [{"neutron": 7}, {"cinder": 2, "neutron": 5, "nova": 3}])
def test_a_failure_that_does_not_reproduce_in_a_bisect_run_ends_inconclusive(
    lengths: dict[str, int],
) -> None:
    prob = problem(lengths, failed_by=f"soak run {FAILED_RUN}, by the statistical detector")
    decision, steps = drive(prob, passes_everywhere)

    assert isinstance(decision, Inconclusive)
    assert [s.combination for s in steps] == [prob.candidate]  # one run, then it stops
    assert decision.reason.startswith("the failure did not reproduce in a gate run: ")
    assert "passed in run 100" in decision.reason
    assert f"soak run {FAILED_RUN}, by the statistical detector" in decision.reason


def test_no_culprit_rests_on_the_rejection_alone() -> None:
    """Whatever the world, a culprit comes with a bisect run that failed at the culprit's
    commit, and the rejecting run is never part of the evidence."""
    worlds = [broken_from("neutron", k) for k in range(1, 6)]
    for prob in (problem({"neutron": 5}), problem({"cinder": 2, "neutron": 5})):
        for world in worlds:
            decision, steps = drive(prob, world)
            assert isinstance(decision, Found)
            assert FAILED_RUN not in decision.culprit.evidence
            failing = [s for s in steps if s.run_id in decision.culprit.evidence
                       and s.verdict is Verdict.FAILED]
            assert [s.combination["neutron"] for s in failing] == [decision.culprit.sha]


def test_a_search_recorded_without_a_reproducing_step_asks_for_one_first() -> None:
    """Searches started before the reproduce step existed: their steps are kept, and the
    replay asks for the missing run before it concludes anything."""
    prob = problem({"neutron": 3})
    older = [Step(100, prob.candidate.replace(neutron=sha("neutron", 1)), Verdict.PASSED, T0),
             Step(101, prob.candidate.replace(neutron=sha("neutron", 2)), Verdict.PASSED, T0)]
    decision = next_step(prob, older, DEFAULT, T0)
    assert isinstance(decision, Try) and decision.probe.phase is Phase.REPRODUCE
    done = next_step(prob, [*older, Step(102, prob.candidate, Verdict.FAILED, T0)],
                     DEFAULT, T0)
    assert isinstance(done, Found) and done.culprit.sha == sha("neutron", 3)
    assert done.culprit.evidence == (101, 102)


def test_a_failure_that_needs_two_components_together_blames_the_first_and_names_both() -> None:
    prob = problem({"cinder": 1, "neutron": 4, "nova": 2})

    def together(combo: Combination) -> Verdict:
        both = combo["neutron"] >= sha("neutron", 2) and combo["nova"] != sha("nova", 0)
        return Verdict.FAILED if both else Verdict.PASSED

    decision, steps = drive(prob, together)
    assert isinstance(decision, Found)
    assert decision.culprit.component == "neutron"
    assert decision.culprit.sha == sha("neutron", 2)
    assert decision.culprit.together == ("nova",)
    assert "together" in decision.culprit.explanation
    assert [s.verdict for s in steps[1:4]] == [Verdict.FAILED, Verdict.PASSED, Verdict.PASSED]


def test_components_that_break_it_independently_leave_the_search_inconclusive() -> None:
    prob = problem({"cinder": 2, "neutron": 2})

    def either(combo: Combination) -> Verdict:
        bad = combo["cinder"] != sha("cinder", 0) or combo["neutron"] != sha("neutron", 0)
        return Verdict.FAILED if bad else Verdict.PASSED

    decision, steps = drive(prob, either)
    assert isinstance(decision, Inconclusive)
    assert len(steps) == 1 + 2  # reproduce, then both swaps
    assert "still failed" in decision.reason and "several components" in decision.reason
    assert all(str(s.run_id) in decision.reason for s in steps[1:])


def test_a_step_in_progress_waits_for_its_run() -> None:
    prob = problem({"neutron": 7})
    first = next_step(prob, [], DEFAULT, T0)
    assert isinstance(first, Try)
    pending = [Step(100, first.probe.combination)]
    decision = next_step(prob, pending, DEFAULT, T0)
    assert decision == Wait(first.probe, run_id=100)


def test_an_infra_error_is_retried_after_a_backoff_and_its_retry_counts() -> None:
    prob = problem({"neutron": 2})
    policy = BisectPolicy(confirm_failures=False, max_infra_retries=2,
                          infra_backoff=timedelta(seconds=30))
    first = next_step(prob, [], policy, T0)
    assert isinstance(first, Try)
    steps = [Step(100, first.probe.combination, Verdict.INFRA_ERROR, T0)]
    waiting = next_step(prob, steps, policy, T0 + timedelta(seconds=10))
    assert isinstance(waiting, Wait) and waiting.until == T0 + timedelta(seconds=30)
    retry = next_step(prob, steps, policy, T0 + timedelta(seconds=30))
    assert isinstance(retry, Try) and retry.retry == 1
    assert retry.probe == first.probe
    steps.append(Step(101, retry.probe.combination, Verdict.FAILED, T0))
    probe = next_step(prob, steps, policy, T0 + timedelta(minutes=1))
    assert isinstance(probe, Try) and probe.retry == 0  # the next step starts afresh
    steps.append(Step(102, probe.probe.combination, Verdict.PASSED, T0))
    decision = next_step(prob, steps, policy, T0 + timedelta(minutes=1))
    assert isinstance(decision, Found)
    assert decision.culprit.sha == sha("neutron", 2)
    assert decision.culprit.evidence == (101, 102)  # not the run that said nothing


def test_infra_errors_beyond_the_retries_stop_the_search_inconclusive() -> None:
    prob = problem({"cinder": 1, "neutron": 3})
    policy = BisectPolicy(confirm_failures=False, max_infra_retries=2)
    later = T0 + timedelta(hours=1)  # past every backoff
    decision, steps = drive(prob, lambda combo: Verdict.INFRA_ERROR, policy, later)
    assert isinstance(decision, Inconclusive)
    assert len(steps) == 3  # the first try and two retries of the reproducing run
    assert {s.combination for s in steps} == {prob.candidate}
    assert "testbed or tool errors 3 times" in decision.reason
    assert "the rejected candidate's own combination" in decision.reason


def test_a_busy_testbed_is_waited_for_without_using_up_retries_or_steps() -> None:
    """Runs the environment check refused ("testbed too busy") delay culprit finding on the
    gate's backoff for as long as the testbed stays busy; they are not errors, so neither the
    retry budget nor the step limit shrinks, and the search still finds the culprit."""
    prob = problem({"neutron": 2})
    policy = BisectPolicy(confirm_failures=False, max_steps=2, max_infra_retries=1,
                          infra_backoff=timedelta(seconds=30),
                          infra_backoff_max=timedelta(minutes=2))
    first = next_step(prob, [], policy, T0)
    assert isinstance(first, Try)
    combo = first.probe.combination
    busy = [Step(100 + i, combo, Verdict.INFRA_ERROR, T0, busy=True) for i in range(6)]
    waiting = next_step(prob, busy, policy, T0 + timedelta(seconds=10))
    assert isinstance(waiting, Wait) and waiting.busy
    assert waiting.until == T0 + timedelta(minutes=2)  # the backoff, capped, as a gate's
    retry = next_step(prob, busy, policy, T0 + timedelta(minutes=2))
    assert isinstance(retry, Try) and retry.probe == first.probe
    # one real infra error among them is still within the budget of one retry
    mixed = [*busy, Step(200, combo, Verdict.INFRA_ERROR, T0)]
    assert isinstance(next_step(prob, mixed, policy, T0 + timedelta(hours=1)), Try)
    two = [*mixed, Step(201, combo, Verdict.INFRA_ERROR, T0)]
    ended = next_step(prob, two, policy, T0 + timedelta(hours=1))
    assert isinstance(ended, Inconclusive) and "2 times in a row (runs 200, 201)" in ended.reason
    # the busy runs took none of the two steps: reproduce, then the bisect step, then found
    steps = [*busy, Step(300, combo, Verdict.FAILED, T0)]
    probe = next_step(prob, steps, policy, T0 + timedelta(hours=1))
    assert isinstance(probe, Try)
    steps.append(Step(301, probe.probe.combination, Verdict.PASSED, T0))
    found = next_step(prob, steps, policy, T0 + timedelta(hours=1))
    assert isinstance(found, Found) and found.culprit.sha == sha("neutron", 2)
    assert 100 not in found.culprit.evidence
    # a run that failed a check on a busy testbed is a step like any other
    failed_busy = [Step(400, combo, Verdict.FAILED, T0, busy=True)]
    limited = next_step(prob, failed_busy, BisectPolicy(confirm_failures=False, max_steps=1),
                        T0)
    assert isinstance(limited, Inconclusive) and "limit of 1 runs" in limited.reason


def test_the_step_limit_stops_a_long_search_inconclusive() -> None:
    prob = problem({"neutron": 64})
    decision, steps = drive(prob, broken_from("neutron", 40),
                            BisectPolicy(confirm_failures=False, max_steps=3))
    assert isinstance(decision, Inconclusive)
    assert len(steps) == 3
    assert "limit of 3 runs" in decision.reason
    unlimited, all_steps = drive(prob, broken_from("neutron", 40))
    assert isinstance(unlimited, Found) and len(all_steps) == 1 + 6


def test_a_combination_already_tested_is_not_tested_again() -> None:
    prob = problem({"cinder": 2, "neutron": 2})
    world = broken_from("neutron", 1)
    decision, steps = drive(prob, world)
    assert isinstance(decision, Found)
    assert len({s.combination for s in steps}) == len(steps)
    assert next_step(prob, steps, DEFAULT, T0) == decision  # replaying changes nothing


def test_only_new_components_changed_leaves_nothing_to_go_back_to() -> None:
    kg = Combination.of({"nova": sha("nova", 0)})
    cand = Combination.of({"nova": sha("nova", 0), "ironic": sha("ironic", 1)})
    decision = next_step(Problem(kg, cand, {}, FAILED_RUN), [], DEFAULT, T0)
    assert isinstance(decision, Inconclusive)
    assert "known-good commit to go back to" in decision.reason


def test_a_range_must_end_with_the_candidates_commit() -> None:
    kg = Combination.of({"nova": sha("nova", 0)})
    cand = Combination.of({"nova": sha("nova", 3)})
    with pytest.raises(ValueError, match="must end with the candidate's commit"):
        Problem(kg, cand, {"nova": commits("nova", 2)})


def test_the_carriers_of_a_culprit_are_it_and_every_later_commit_of_the_range() -> None:
    rng = commits("neutron", 5)
    assert carriers(rng, rng[2]) == rng[2:]
    assert carriers(rng, sha("neutron", 9)) == (sha("neutron", 9),)


# Confirmation: a failing step is believed only when a second run of it fails the same way --------

def noisy(world: World, flukes: set[int]) -> Callable[[Combination, int], Step]:
    """Runs in ``world`` where the runs numbered in ``flukes`` regress on a series whatever the
    combination: a busy testbed, not the code."""
    def run(combo: Combination, run_id: int) -> Step:
        if run_id in flukes:
            return Step(run_id, combo, Verdict.REGRESSED, T0,
                        frozenset({"regression:ping.rtt_avg_ms{dst=h2,src=h1}"}))
        verdict = world(combo)
        failures = frozenset({"check:ping.reachable h1→h2"}) if verdict is Verdict.FAILED else (
            frozenset())
        return Step(run_id, combo, verdict, T0, failures)
    return run


CONFIRMING = BisectPolicy()


def test_a_failing_step_is_run_again_and_counts_once_the_same_check_fails_twice() -> None:
    prob = problem({"neutron": 4})
    decision, steps = drive_runs(prob, noisy(broken_from("neutron", 3), set()), CONFIRMING)
    assert isinstance(decision, Found) and decision.culprit.sha == sha("neutron", 3)
    failing = [s for s in steps if s.verdict is Verdict.FAILED]
    by_combo: dict[Combination, int] = {}
    for s in failing:
        by_combo[s.combination] = by_combo.get(s.combination, 0) + 1
    assert set(by_combo.values()) == {2}  # every failing combination was seen to fail twice
    assert all(s.verdict is Verdict.PASSED for s in steps if s.combination not in by_combo)


def test_noise_in_a_bisect_run_never_names_a_harmless_commit() -> None:
    # neutron breaks at its commit 4 (the candidate's); the probe of commit 2 hits a fluke.
    prob = problem({"neutron": 4})
    world = broken_from("neutron", 4)
    first = next_step(prob, [], BisectPolicy(), T0)
    assert isinstance(first, Try)
    flukes = {102}  # the reproduce run passes its check twice; run 102 probes commit 2
    decision, steps = drive_runs(prob, noisy(world, flukes), CONFIRMING)
    assert isinstance(decision, Found)
    assert decision.culprit.sha == sha("neutron", 4)  # not commit 2, which only hit noise
    fluke = next(s for s in steps if s.run_id == 102)
    assert fluke.verdict is Verdict.REGRESSED
    assert any(s.combination == fluke.combination and s.verdict is Verdict.PASSED
               for s in steps)  # its confirmation passed, so the fluke was set aside


def test_a_reproduce_step_whose_failure_does_not_repeat_ends_inconclusive() -> None:
    prob = problem({"neutron": 3, "nova": 2})
    decision, steps = drive_runs(prob, noisy(passes_everywhere, {100}), CONFIRMING)
    assert isinstance(decision, Inconclusive)
    assert [s.verdict for s in steps] == [Verdict.REGRESSED, Verdict.PASSED, Verdict.PASSED]
    assert "did not reproduce" in decision.reason


def test_regressions_of_different_series_confirm_each_other_only_on_a_third_failure() -> None:
    prob = problem({"neutron": 2})
    combo = prob.candidate
    one = Step(1, combo, Verdict.REGRESSED, T0, frozenset({"regression:a"}))
    two = Step(2, combo, Verdict.REGRESSED, T0, frozenset({"regression:b"}))
    three = Step(3, combo, Verdict.REGRESSED, T0, frozenset({"regression:c"}))
    again = next_step(prob, [one, two], BisectPolicy(), T0)
    assert isinstance(again, Try) and again.probe.combination == combo  # not confirmed yet
    onward = next_step(prob, [one, two, three], BisectPolicy(), T0)
    assert isinstance(onward, Try) and onward.probe.phase is Phase.BISECT


def test_a_pass_after_a_failure_is_settled_by_a_third_run_so_a_lucky_pass_moves_nothing() -> None:
    prob = problem({"neutron": 4})
    combo = prob.candidate
    failed = Step(1, combo, Verdict.REGRESSED, T0, frozenset({"regression:a"}))
    lucky = Step(2, combo, Verdict.PASSED, T0)
    again = next_step(prob, [failed, lucky], CONFIRMING, T0)
    assert isinstance(again, Try) and again.probe.combination == combo
    fails_too = Step(3, combo, Verdict.REGRESSED, T0, frozenset({"regression:a"}))
    onward = next_step(prob, [failed, lucky, fails_too], CONFIRMING, T0)
    assert isinstance(onward, Try) and onward.probe.phase is Phase.BISECT  # it fails: 2 of 3


def test_infra_errors_before_a_finished_run_do_not_count_against_later_retries() -> None:
    prob = problem({"neutron": 4})
    combo = prob.candidate
    infra = [Step(i, combo, Verdict.INFRA_ERROR, T0) for i in (1, 2)]
    failed = Step(3, combo, Verdict.FAILED, T0, frozenset({"check:reach"}))
    later = [*infra, failed, Step(4, combo, Verdict.INFRA_ERROR, T0)]
    decision = next_step(prob, later, CONFIRMING, T0 + timedelta(hours=1))
    assert isinstance(decision, Try) and decision.retry == 1
