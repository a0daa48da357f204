from datetime import UTC, datetime, timedelta

import pytest

from certifier.domain.clock import FakeClock
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import Action, RunSummary, SoakPolicy, apply_waivers, decide

T0 = datetime(2026, 3, 1, tzinfo=UTC)
WEEK = SoakPolicy(duration=timedelta(days=7), interval=timedelta(hours=6), min_runs=4,
                  max_infra_retries=2)


def run(i: int, kind: RunKind, verdict: Verdict | None, at: datetime, *excuses: str) -> RunSummary:
    return RunSummary(i, kind, verdict, at, at if verdict else None,
                      tuple(Excuse(str(verdict), f"run {i}", e) for e in excuses))


def test_gating_without_runs_asks_for_a_gate_run() -> None:
    d = decide(CandidateState.GATING, [], T0, WEEK)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)


def test_gate_run_in_progress_waits_without_a_second_run() -> None:
    d = decide(CandidateState.GATING, [run(1, RunKind.GATE, None, T0)], T0, WEEK)
    assert (d.action, d.next_run) == (Action.WAIT, None)
    assert "in progress" in d.excuses[0].message


def test_passing_gate_starts_the_soak() -> None:
    d = decide(CandidateState.GATING, [run(1, RunKind.GATE, Verdict.PASSED, T0)], T0, WEEK)
    assert d.action is Action.START_SOAK


@pytest.mark.parametrize("verdict", [Verdict.FAILED, Verdict.REGRESSED])
def test_failing_gate_rejects_with_the_runs_excuses(verdict: Verdict) -> None:
    gate = run(1, RunKind.GATE, verdict, T0, "bandwidth throughput_gbps h1→h2: -50 %")
    d = decide(CandidateState.GATING, [gate], T0, WEEK)
    assert d.action is Action.REJECT
    assert d.excuses[0].message == "bandwidth throughput_gbps h1→h2: -50 %"


def test_infra_errors_are_retried_a_bounded_number_of_times_and_never_reject() -> None:
    later = T0 + timedelta(hours=1)  # past the retry backoff (tests/pipeline/test_infra_backoff)
    runs = [run(1, RunKind.GATE, Verdict.INFRA_ERROR, T0, "iperf3 missing")]
    assert decide(CandidateState.GATING, runs, later, WEEK).next_run is RunKind.GATE
    runs.append(run(2, RunKind.GATE, Verdict.INFRA_ERROR, T0 + timedelta(minutes=1)))
    assert decide(CandidateState.GATING, runs, later, WEEK).next_run is RunKind.GATE
    runs.append(run(3, RunKind.GATE, Verdict.INFRA_ERROR, T0 + timedelta(minutes=2), "x"))
    d = decide(CandidateState.GATING, runs, later, WEEK)
    assert (d.action, d.next_run) == (Action.WAIT, None)
    assert "retries exhausted" in d.excuses[0].message


def test_a_week_of_soak_with_enough_passing_runs_promotes() -> None:
    clock = FakeClock(T0)
    runs: list[RunSummary] = []
    decision = decide(CandidateState.SOAKING, runs, clock.now(), WEEK, soak_started_at=T0)
    steps = 0
    while decision.action is not Action.PROMOTE:
        steps += 1
        assert steps < 200, "soak never finished"
        if decision.next_run is RunKind.SOAK:
            runs.append(run(len(runs) + 1, RunKind.SOAK, Verdict.PASSED, clock.now()))
        clock.advance(timedelta(hours=1))
        decision = decide(CandidateState.SOAKING, runs, clock.now(), WEEK, soak_started_at=T0)
    assert clock.now() - T0 >= timedelta(days=7)
    # one run per 6 h interval over the week (the first at the start)
    assert len(runs) == 28


def test_soak_excuses_say_how_far_it_is_in_plain_words() -> None:
    runs = [run(1, RunKind.SOAK, Verdict.PASSED, T0)]
    now = T0 + timedelta(days=3, hours=4)
    d = decide(CandidateState.SOAKING, runs, now, WEEK, soak_started_at=T0)
    messages = [e.message for e in d.excuses]
    assert "soaking: 3 d 4 h of 7 d" in messages
    assert "passing soak runs: 1 of at least 4" in messages


def test_soak_run_is_due_only_after_the_interval() -> None:
    runs = [run(1, RunKind.SOAK, Verdict.PASSED, T0)]
    early = decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=5), WEEK,
                   soak_started_at=T0)
    due = decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=6), WEEK, soak_started_at=T0)
    assert early.next_run is None
    assert due.next_run is RunKind.SOAK


def test_full_duration_but_too_few_runs_keeps_soaking_and_catches_up() -> None:
    runs = [run(1, RunKind.SOAK, Verdict.PASSED, T0 + timedelta(days=7))]
    d = decide(CandidateState.SOAKING, runs, T0 + timedelta(days=7, minutes=1), WEEK,
               soak_started_at=T0)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)


def test_a_regression_during_soak_rejects() -> None:
    runs = [run(1, RunKind.SOAK, Verdict.PASSED, T0),
            run(2, RunKind.SOAK, Verdict.REGRESSED, T0 + timedelta(hours=6), "storage slower")]
    d = decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=7), WEEK, soak_started_at=T0)
    assert d.action is Action.REJECT
    assert d.excuses[0].message == "storage slower"


def test_soak_infra_error_neither_counts_nor_rejects_and_is_retried_at_once() -> None:
    runs = [run(1, RunKind.SOAK, Verdict.PASSED, T0),
            run(2, RunKind.SOAK, Verdict.INFRA_ERROR, T0 + timedelta(hours=6), "fio timed out")]
    d = decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=6, minutes=1), WEEK,
               soak_started_at=T0)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)
    assert "passing soak runs: 1 of at least 4" in [e.message for e in d.excuses]


def test_promotion_waits_for_a_run_in_progress() -> None:
    policy = SoakPolicy(duration=timedelta(seconds=10), interval=timedelta(seconds=2), min_runs=1)
    runs = [run(1, RunKind.SOAK, Verdict.PASSED, T0), run(2, RunKind.SOAK, None, T0)]
    d = decide(CandidateState.SOAKING, runs, T0 + timedelta(seconds=20), policy,
               soak_started_at=T0)
    assert d.action is Action.WAIT


def test_gate_runs_do_not_count_as_soak_runs() -> None:
    policy = SoakPolicy(duration=timedelta(0), interval=timedelta(hours=1), min_runs=1)
    runs = [run(1, RunKind.GATE, Verdict.PASSED, T0)]
    d = decide(CandidateState.SOAKING, runs, T0, policy, soak_started_at=T0)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)


# Waivers --------------------------------------------------------------------------------------

def _failed(run_id: int, *excuses: Excuse, verdict: Verdict = Verdict.FAILED) -> RunSummary:
    return RunSummary(run_id, RunKind.GATE, verdict, datetime(2026, 1, 1, tzinfo=UTC),
                      excuses=excuses)


def test_a_run_whose_every_failure_is_waived_counts_as_passed() -> None:
    run = _failed(1, Excuse("check", "ping.h1 reaches h2", "failed"))
    (seen,) = apply_waivers([run], frozenset({"ping.h1 reaches h2"}))
    assert (seen.verdict, seen.excuses) == (Verdict.PASSED, ())


def test_a_run_with_an_unwaived_failure_still_fails_with_only_that_excuse() -> None:
    kept = Excuse("regression", "bandwidth.gbps", "-30 %")
    run = _failed(1, Excuse("check", "ping.a", "failed"), kept, verdict=Verdict.FAILED)
    (seen,) = apply_waivers([run], frozenset({"ping.a"}))
    assert (seen.verdict, seen.excuses) == (Verdict.FAILED, (kept,))


def test_a_waived_failure_beside_tool_trouble_becomes_an_infra_error_to_retry() -> None:
    infra = Excuse("infra_error", "storage", "fio crashed")
    run = _failed(1, Excuse("check", "ping.a", "failed"), infra)
    (seen,) = apply_waivers([run], frozenset({"ping.a"}))
    assert (seen.verdict, seen.excuses) == (Verdict.INFRA_ERROR, (infra,))


def test_waivers_never_touch_infra_excuses_or_passing_runs() -> None:
    infra = _failed(1, Excuse("infra_error", "ping", "x"), verdict=Verdict.INFRA_ERROR)
    assert apply_waivers([infra], frozenset({"ping"})) == [infra]
