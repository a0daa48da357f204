"""Confirmed regressions: a regression rejects only when a second run with fresh controls sees it.

One run is one observation, and a busy host can make one look bad. So a regressed run is
followed by a confirmation run of the same kind; the candidate is rejected when that run
regresses on the same series again. A regression the next run does not reproduce is reported as
noise — an ``unconfirmed`` excuse, visible, naming both runs — and blocks nothing.
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
                    recheck_failed=1)
BW = "bandwidth.throughput_gbps{dst=h2,src=h1}"
RTT = "ping.rtt_avg_ms{dst=h3,src=h1}"


def slower(series: str = BW, text: str = "-31 % vs controls") -> Excuse:
    return Excuse("regression", series, f"{series}: {text}", {"worse_pct": 31.0})


def gate(i: int, verdict: Verdict | None, *excuses: Excuse) -> RunSummary:
    at = T0 + timedelta(minutes=i)
    return RunSummary(i, RunKind.GATE, verdict, at, at if verdict else None, excuses)


def soak(i: int, verdict: Verdict | None, hours: float, *excuses: Excuse) -> RunSummary:
    at = T0 + timedelta(hours=hours)
    return RunSummary(i, RunKind.SOAK, verdict, at, at if verdict else None, excuses)


def gating(runs: list[RunSummary]) -> Decision:
    return decide(CandidateState.GATING, runs, T0 + timedelta(hours=1), POLICY)


def soaking(runs: list[RunSummary], hours: float) -> Decision:
    return decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=hours), POLICY,
                  soak_started_at=T0)


def test_a_regression_seen_once_asks_for_a_confirmation_run() -> None:
    d = gating([gate(1, Verdict.REGRESSED, slower())])
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    (recheck,) = d.excuses
    assert recheck.kind == "recheck" and "confirm the regression" in recheck.message
    assert recheck.data["regressions"] == [BW]
    assert blocking(d) == d.excuses  # a promotion by hand must not slip past it


def test_the_same_series_regressing_again_rejects_naming_both_runs_once() -> None:
    d = gating([gate(1, Verdict.REGRESSED, slower()),
                gate(2, Verdict.REGRESSED, slower(text="-29 % vs controls"))])
    assert d.action is Action.REJECT
    (regression,) = [e for e in d.excuses if e.kind == "regression"]
    assert regression.data["runs"] == [1, 2]
    assert "-29 %" in regression.message and "gate runs 1 and 2" in regression.message
    assert d.excuses[-1].kind == "rechecked"


def test_a_regression_that_does_not_reproduce_is_reported_as_noise_and_the_gate_passes() -> None:
    d = gating([gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.PASSED)])
    assert d.action is Action.START_SOAK
    (noise,) = d.excuses
    assert (noise.kind, noise.subject) == ("unconfirmed", BW)
    assert "not confirmed" in noise.message and "run 1" in noise.message
    assert "run 2" in noise.message
    assert (noise.data["seen_run"], noise.data["checked_run"]) == (1, 2)
    assert blocking(d) == ()


def test_another_series_in_the_confirmation_run_needs_its_own_confirmation() -> None:
    runs = [gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.REGRESSED, slower(RTT))]
    d = gating(runs)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    assert [e.kind for e in d.excuses] == ["unconfirmed", "recheck"]
    assert d.excuses[0].subject == BW and d.excuses[1].data["regressions"] == [RTT]
    runs.append(gate(3, Verdict.PASSED))
    assert [(e.kind, e.subject) for e in gating(runs).excuses] == [
        ("unconfirmed", BW), ("unconfirmed", RTT)]


def test_series_seen_once_beside_a_confirmed_one_are_each_reported_once_as_noise() -> None:
    """The write-through cache of the noise harness: run 2 confirmed the IOPS drop and saw three
    sequential-write series regress once; each of them is one line of noise, not three."""
    iops, seq = "storage.rand_write_iops{job=rand_write}", "storage.seq_write_{}{{job=seq_write}}"
    once = [slower(seq.format(m)) for m in ("iops", "mbps", "clat_p99_us")]
    d = gating([gate(1, Verdict.REGRESSED, slower(iops)),
                gate(2, Verdict.REGRESSED, slower(iops), *once)])
    assert d.action is Action.REJECT
    noise = [e for e in d.excuses if e.kind == "unconfirmed"]
    assert sorted(e.subject for e in noise) == sorted(e.subject for e in once)
    assert len({e.message for e in d.excuses}) == len(d.excuses)


def test_failing_runs_in_a_row_reject_even_when_each_fails_on_other_series() -> None:
    runs = [gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.REGRESSED, slower(RTT)),
            gate(3, Verdict.REGRESSED, slower("storage.iops{job=randwrite}"))]
    d = gating(runs)
    assert d.action is Action.REJECT
    assert d.excuses[-1].data["runs"] == [1, 2, 3]


def test_an_infra_error_between_does_not_count_as_the_confirmation() -> None:
    infra = Excuse("infra_error", "environment", "testbed too busy: cpu pressure 63 % vs 2 %")
    d = gating([gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.INFRA_ERROR, infra)])
    assert d.action is Action.WAIT and d.excuses[0].kind == "recheck"


def test_a_soak_regression_is_confirmed_by_the_next_soak_run_at_once() -> None:
    runs = [soak(1, Verdict.PASSED, 0), soak(2, Verdict.REGRESSED, 6, slower())]
    d = soaking(runs, 6.1)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)
    runs.append(soak(3, Verdict.REGRESSED, 6.2, slower()))
    assert soaking(runs, 6.3).action is Action.REJECT


def test_unconfirmed_noise_stays_visible_through_the_soak_and_does_not_stop_promotion() -> None:
    runs = [gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.PASSED),
            soak(3, Verdict.PASSED, 1), soak(4, Verdict.PASSED, 7)]
    d = soaking(runs, 25)
    assert d.action is Action.PROMOTE
    assert [e.kind for e in d.excuses] == ["unconfirmed"]


def test_a_broken_limit_after_an_unrepeated_regression_rejects_on_the_limit_alone() -> None:
    limit = Excuse("limit", "storage.iops{job=randwrite}", "900 IOPS breaks '>= 1000'")
    d = gating([gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.FAILED, limit)])
    assert d.action is Action.REJECT
    assert [e.kind for e in d.excuses] == ["limit"]


def test_failing_runs_in_a_row_say_so_rather_than_confirmed() -> None:
    runs = [gate(1, Verdict.REGRESSED, slower()), gate(2, Verdict.REGRESSED, slower(RTT)),
            gate(3, Verdict.REGRESSED, slower("storage.iops{job=randwrite}"))]
    last = gating(runs).excuses[-1]
    assert "3 gate runs in a row failed (1, 2 and 3)" in last.message
    assert "confirmed" not in last.message


def test_a_waived_regression_leaves_an_ab_run_passed_despite_its_undecided_series() -> None:
    undecided = Excuse("undecided", RTT, f"{RTT}: cannot decide at the gate after 6 rounds")
    runs = [gate(1, Verdict.REGRESSED, slower(), undecided),
            gate(2, Verdict.REGRESSED, slower(), undecided)]
    seen = apply_waivers(runs, frozenset({BW}))
    assert [r.verdict for r in seen] == [Verdict.PASSED, Verdict.PASSED]
    assert gating(seen).action is Action.START_SOAK


def test_a_testbed_that_stays_too_busy_never_exhausts_the_retries() -> None:
    busy = Excuse("infra_error", "environment", "testbed too busy: cpu pressure 63 % vs 2 %")
    runs = [gate(i, Verdict.INFRA_ERROR, busy) for i in range(1, 6)]
    d = decide(CandidateState.GATING, runs, T0 + timedelta(hours=5), POLICY)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    assert "infra_error" not in [e.kind for e in d.excuses]
    waiting = decide(CandidateState.GATING, runs, T0 + timedelta(minutes=6), POLICY)
    assert "waiting for the testbed to calm down" in waiting.excuses[-1].message
    assert waiting.excuses[-1].data["busy"] is True  # what tools read, not the wording


def test_a_rejection_lists_failures_only_not_what_the_runs_could_not_decide() -> None:
    undecided = Excuse("undecided", RTT, f"{RTT}: cannot decide at the gate after 2 rounds")
    d = gating([gate(1, Verdict.REGRESSED, slower(), undecided),
                gate(2, Verdict.REGRESSED, slower(), undecided)])
    assert d.action is Action.REJECT
    assert [e.kind for e in d.excuses] == ["regression", "rechecked"]


def test_a_series_that_regressed_in_one_run_only_is_not_a_reason_of_the_rejection() -> None:
    d = gating([gate(1, Verdict.REGRESSED, slower(), slower(RTT)),
                gate(2, Verdict.REGRESSED, slower())])
    assert d.action is Action.REJECT
    assert [(e.kind, e.subject) for e in d.excuses] == [
        ("regression", BW), ("rechecked", "run 2"), ("unconfirmed", RTT)]
    assert "not in gate run 2" in d.excuses[-1].message
