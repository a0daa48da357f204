"""Flaky checks in the promotion policy: a failed check is rechecked, never hidden.

A check that fails and then passes on its recheck is *flaky*: the candidate goes on, but the
flaky check stays in its excuses and keeps it from being promoted until a person waives it. A
recheck that fails too rejects, naming each failure once with both runs. A broken limit is never
rechecked; regressions are confirmed instead (tests/domain/test_confirmation.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import (
    Action,
    Decision,
    RunSummary,
    SoakPolicy,
    apply_waivers,
    blocking,
    decide,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = SoakPolicy(duration=timedelta(days=1), interval=timedelta(hours=6), min_runs=2,
                    max_infra_retries=2, recheck_failed=1)
PING = "ping.reachable h1→h2"
PING_FAILED = Excuse("check", PING, "ping check 'reachable h1→h2' failed: 100 % loss")


def run(i: int, kind: RunKind, verdict: Verdict | None, minutes: int,
        *excuses: Excuse) -> RunSummary:
    at = T0 + timedelta(minutes=minutes)
    return RunSummary(i, kind, verdict, at, at if verdict else None, excuses)


def gate(i: int, verdict: Verdict | None, *excuses: Excuse) -> RunSummary:
    return run(i, RunKind.GATE, verdict, i, *excuses)


def soak(i: int, verdict: Verdict | None, hours: float, *excuses: Excuse) -> RunSummary:
    return run(i, RunKind.SOAK, verdict, int(hours * 60), *excuses)


def gating(runs: list[RunSummary], policy: SoakPolicy = POLICY) -> Decision:
    return decide(CandidateState.GATING, runs, T0 + timedelta(hours=1), policy)


def soaking(runs: list[RunSummary], hours: float, policy: SoakPolicy = POLICY) -> Decision:
    return decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=hours), policy,
                  soak_started_at=T0)


def kinds(decision: Decision) -> list[str]:
    return [e.kind for e in decision.excuses]


# Gate ------------------------------------------------------------------------------------------

def test_a_failed_check_asks_for_a_recheck_instead_of_rejecting() -> None:
    d = gating([gate(1, Verdict.FAILED, PING_FAILED)])
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    (recheck,) = d.excuses
    assert recheck.kind == "recheck" and PING in recheck.message
    assert recheck.data["runs"] == [1]


def test_a_recheck_in_progress_is_waited_for_and_not_doubled() -> None:
    d = gating([gate(1, Verdict.FAILED, PING_FAILED), gate(2, None)])
    assert (d.action, d.next_run) == (Action.WAIT, None)
    assert kinds(d) == ["recheck"]


def test_fail_then_pass_makes_the_check_flaky_and_the_gate_goes_on_to_soak() -> None:
    d = gating([gate(1, Verdict.FAILED, PING_FAILED), gate(2, Verdict.PASSED)])
    assert d.action is Action.START_SOAK
    (flaky,) = d.excuses
    assert (flaky.kind, flaky.subject) == ("flaky", PING)
    assert "gate run 1" in flaky.message and "gate run 2" in flaky.message
    assert (flaky.data["failed_run"], flaky.data["passed_run"]) == (1, 2)


def test_fail_then_fail_rejects_naming_the_check_once_with_both_runs() -> None:
    again = Excuse("check", PING, "ping check 'reachable h1→h2' failed: 100 % loss (again)")
    d = gating([gate(1, Verdict.FAILED, PING_FAILED), gate(2, Verdict.FAILED, again)])
    assert d.action is Action.REJECT
    (check,) = [e for e in d.excuses if e.kind == "check"]
    assert check.subject == PING and check.data["runs"] == [1, 2]
    assert check.message == f"{again.message} (seen in gate runs 1 and 2)"
    assert d.excuses[-1].kind == "rechecked" and d.excuses[-1].data["runs"] == [1, 2]


def test_a_recheck_that_regresses_makes_the_check_flaky_and_confirms_the_regression_next() -> None:
    slower = Excuse("regression", "bandwidth.throughput_gbps", "-50 %")
    d = gating([gate(1, Verdict.FAILED, PING_FAILED), gate(2, Verdict.REGRESSED, slower)])
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    assert kinds(d) == ["flaky", "recheck"] and d.excuses[1].data["regressions"] == [slower.subject]


def test_a_broken_limit_is_not_rechecked() -> None:
    limit = Excuse("limit", "bandwidth.throughput_gbps", "0.4 Gbit/s breaks '>= 1'")
    d = gating([gate(1, Verdict.FAILED, limit)])
    assert d.action is Action.REJECT and d.excuses == (limit,)


def test_a_failed_check_beside_a_broken_limit_is_not_rechecked() -> None:
    limit = Excuse("limit", "bandwidth.throughput_gbps", "breaks '>= 1'")
    assert gating([gate(1, Verdict.FAILED, PING_FAILED, limit)]).action is Action.REJECT


def test_recheck_failed_zero_rejects_on_the_first_failed_check() -> None:
    d = gating([gate(1, Verdict.FAILED, PING_FAILED)], SoakPolicy(recheck_failed=0))
    assert d.action is Action.REJECT and d.excuses == (PING_FAILED,)


def test_the_number_of_rechecks_is_bounded_by_the_policy() -> None:
    twice = SoakPolicy(recheck_failed=2)
    runs = [gate(1, Verdict.FAILED, PING_FAILED)]
    assert gating(runs, twice).next_run is RunKind.GATE
    runs.append(gate(2, Verdict.FAILED, PING_FAILED))
    second = gating(runs, twice)
    assert (second.action, second.next_run) == (Action.WAIT, RunKind.GATE)
    assert "recheck 2 of 2" in second.excuses[0].message
    runs.append(gate(3, Verdict.FAILED, PING_FAILED))
    third = gating(runs, twice)
    assert third.action is Action.REJECT
    assert third.excuses[-1].data["runs"] == [1, 2, 3]


def test_an_infra_error_on_the_recheck_is_retried_and_the_check_stays_under_recheck() -> None:
    infra = Excuse("infra_error", "bandwidth", "iperf3 timed out")
    runs = [gate(1, Verdict.FAILED, PING_FAILED), gate(2, Verdict.INFRA_ERROR, infra)]
    d = gating(runs)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    assert kinds(d)[0] == "recheck"
    runs.append(gate(3, Verdict.PASSED))
    assert kinds(gating(runs)) == ["flaky"]


# Soak ------------------------------------------------------------------------------------------

def test_a_flaky_soak_check_keeps_the_candidate_soaking_with_the_excuse_visible() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.FAILED, 6, PING_FAILED)]
    recheck = soaking(runs, 6.1)
    assert (recheck.action, recheck.next_run) == (Action.WAIT, RunKind.SOAK)  # at once
    assert "recheck" in kinds(recheck)
    runs.append(soak(3, Verdict.PASSED, 6.2))
    later = soaking(runs, 7)
    assert later.action is Action.WAIT and "flaky" in kinds(later)
    assert later.next_run is None  # the next regular run is due 6 h after the recheck


def test_a_flaky_check_blocks_promotion_at_the_end_of_soak() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.FAILED, 6, PING_FAILED),
            soak(3, Verdict.PASSED, 6.1), soak(4, Verdict.PASSED, 12)]
    d = soaking(runs, 25)
    assert (d.action, d.next_run) == (Action.WAIT, None)
    assert kinds(d) == ["flaky", "awaiting_waiver"]
    assert "waive" in d.excuses[-1].message and PING in d.excuses[-1].message
    assert blocking(d) == (d.excuses[0],)


def test_a_flaky_gate_check_blocks_promotion_after_a_clean_soak() -> None:
    runs = [gate(1, Verdict.FAILED, PING_FAILED), gate(2, Verdict.PASSED),
            soak(3, Verdict.PASSED, 1), soak(4, Verdict.PASSED, 7)]
    d = soaking(runs, 25)
    assert d.action is Action.WAIT
    assert [e.subject for e in d.excuses if e.kind == "flaky"] == [PING]


def test_a_soak_recheck_that_fails_too_rejects() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.FAILED, 6, PING_FAILED),
            soak(3, Verdict.FAILED, 6.1, PING_FAILED)]
    d = soaking(runs, 7)
    assert d.action is Action.REJECT and d.excuses[-1].kind == "rechecked"


def test_the_end_of_soak_waits_for_a_pending_recheck() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.PASSED, 6),
            soak(3, Verdict.FAILED, 24, PING_FAILED)]
    d = soaking(runs, 25)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)
    assert "recheck" in kinds(d)


def test_without_flaky_checks_the_soak_promotes() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.PASSED, 6)]
    d = soaking(runs, 25)
    assert d.action is Action.PROMOTE and blocking(d) == ()


# Waivers ---------------------------------------------------------------------------------------

def test_a_waiver_on_the_check_sets_the_flaky_excuse_aside_and_the_soak_promotes() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.FAILED, 6, PING_FAILED),
            soak(3, Verdict.PASSED, 6.1)]
    d = soaking(apply_waivers(runs, frozenset({PING})), 25)
    assert d.action is Action.PROMOTE


def test_a_waiver_on_another_subject_leaves_the_flaky_excuse() -> None:
    runs = [gate(1, Verdict.FAILED, PING_FAILED), gate(2, Verdict.PASSED),
            soak(3, Verdict.PASSED, 1), soak(4, Verdict.PASSED, 7)]
    d = soaking(apply_waivers(runs, frozenset({"ping.reachable h2→h1"})), 25)
    assert d.action is Action.WAIT and "flaky" in kinds(d)


def test_a_check_under_recheck_blocks_a_promotion_by_hand() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.FAILED, 6, PING_FAILED)]
    assert [e.kind for e in blocking(soaking(runs, 7))] == ["recheck"]
