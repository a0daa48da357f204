"""A run that measured controls beside the candidate is judged against them, not against history.

These tests go through :func:`judge_run`, as the pipeline does: a busy host that slows both
sides alike is not the candidate's fault, a drop only the candidate shows is, checks and limits
still fail at once, and a soak run is judged together with the candidate's earlier soak runs.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from certifier.domain.absoak import SoakPolicy as ABSoakPolicy
from certifier.domain.abtest import ABPolicy, Outcome, judge_gate, needs_more_rounds, paired_series
from certifier.domain.judgement import (
    ABEvidence,
    Baseline,
    FixedLimit,
    JudgementPolicy,
    Verdict,
    judge_run,
)
from certifier.domain.results import Better, Check, Measurement, Side, SuiteResult

POLICY = JudgementPolicy(ab=ABPolicy(), ab_soak=ABSoakPolicy(calibration_trials=4000))
# History says 10 Gbit/s: a single-sided judgement would call 6 Gbit/s a 40 % regression.
HISTORY = Baseline("known-good #1", {
    "bandwidth.throughput_gbps{dst=h2,src=h1}": [10.0] * 20})


def ab_run(rng: np.random.Generator, rounds: int, *, host: float = 1.0,
           candidate: float = 1.0) -> list[Measurement]:
    """One A/B run of h1→h2 throughput at 2 % noise per side; ``host`` scales both sides (a
    busy machine), ``candidate`` the candidate's alone."""
    out = []
    for r in range(rounds):
        for side in (Side.CANDIDATE, Side.CONTROL) if r % 2 == 0 else (
                Side.CONTROL, Side.CANDIDATE):
            scale = host * (candidate if side is Side.CANDIDATE else 1.0)
            out.append(Measurement("bandwidth", "throughput_gbps",
                                   10.0 * scale * (1 + 0.02 * rng.standard_normal()), "Gbit/s",
                                   Better.HIGHER, {"src": "h1", "dst": "h2"}, side, r))
    return out


def result(measurements: list[Measurement], *checks: Check) -> list[SuiteResult]:
    return [SuiteResult("bandwidth", list(checks), measurements)]


def test_a_busy_host_that_slows_both_sides_alike_passes_the_gate() -> None:
    rng = np.random.default_rng(1)
    judged = judge_run(result(ab_run(rng, 4, host=0.6)), HISTORY, POLICY, ab=ABEvidence())
    assert judged.verdict is Verdict.PASSED
    assert not [e for e in judged.excuses if e.kind == "regression"]


def test_a_drop_only_the_candidate_shows_regresses_with_both_medians_in_the_excuse() -> None:
    rng = np.random.default_rng(2)
    judged = judge_run(result(ab_run(rng, 4, candidate=0.6)), HISTORY, POLICY,
                       ab=ABEvidence())
    assert judged.verdict is Verdict.REGRESSED
    (regression,) = [e for e in judged.excuses if e.kind == "regression"]
    assert regression.subject == "bandwidth.throughput_gbps{dst=h2,src=h1}"
    assert regression.data["stage"] == "gate"
    assert regression.data["candidate_median"] < 0.7 * regression.data["control_median"]
    assert "inf" not in regression.message


def test_without_evidence_an_ab_run_is_judged_single_sided_on_its_candidate_values() -> None:
    rng = np.random.default_rng(3)
    judged = judge_run(result(ab_run(rng, 2, host=0.6)), HISTORY, POLICY)
    assert judged.verdict is Verdict.REGRESSED  # the old margin against history
    assert all(e.data["value"] < 7 for e in judged.excuses)  # control rows never enter it


def test_checks_and_limits_still_fail_an_ab_run_at_once() -> None:
    rng = np.random.default_rng(4)
    measured = ab_run(rng, 2)
    broken = judge_run(result(measured, Check("bandwidth", "connect h1->h2", False, "refused")),
                       HISTORY, POLICY, ab=ABEvidence())
    assert broken.verdict is Verdict.FAILED
    limited = JudgementPolicy(ab=ABPolicy(), limits=(FixedLimit.parse(
        "bandwidth.throughput_gbps >= 50"),))
    assert judge_run(result(measured), HISTORY, limited, ab=ABEvidence()).verdict is (
        Verdict.FAILED)


def test_a_soak_run_is_judged_with_the_candidates_earlier_soak_runs() -> None:
    rng = np.random.default_rng(5)
    earlier = tuple(tuple(paired_series(ab_run(rng, 4, candidate=0.9))) for _ in range(6))
    judged = judge_run(result(ab_run(rng, 4, candidate=0.9)), HISTORY, POLICY,
                       ab=ABEvidence(soak_runs=earlier))
    assert judged.verdict is Verdict.REGRESSED
    (regression,) = [e for e in judged.excuses if e.kind == "regression"]
    assert regression.data["stage"] == "soak" and regression.data["n"] >= 7


def test_a_soak_too_short_to_decide_says_so_without_failing() -> None:
    rng = np.random.default_rng(6)
    judged = judge_run(result(ab_run(rng, 2)), HISTORY, POLICY, ab=ABEvidence(soak_runs=()))
    assert judged.verdict is Verdict.PASSED
    assert [e.kind for e in judged.excuses] == ["undecidable"]
    assert "more" in judged.excuses[0].message


def _zero_loss_and_outage(rounds: int) -> list[Measurement]:
    out = []
    for r in range(rounds):
        for side in (Side.CANDIDATE, Side.CONTROL):
            out.append(Measurement("ping", "loss_pct", 0.0, "%", Better.LOWER,
                                   {"src": "h1", "dst": "h2"}, side, r, 0, 20))
            out.append(Measurement("ping", "longest_outage_ms", 0.0, "ms", Better.LOWER,
                                   {"src": "h1", "dst": "h2"}, side, r))
    return out


def test_series_that_never_moved_are_decided_at_the_first_look_so_rounds_stop() -> None:
    measured = _zero_loss_and_outage(2)
    verdict = judge_gate(paired_series(measured), ABPolicy())
    assert [v.outcome for v in verdict.verdicts] == [Outcome.OK, Outcome.OK]
    assert not needs_more_rounds(measured, 2, ABPolicy())


def test_a_regression_found_stops_the_rounds_before_the_cap() -> None:
    rng = np.random.default_rng(7)
    measured = ab_run(rng, 3, candidate=0.5)
    assert judge_gate(paired_series(measured), ABPolicy()).regressed
    assert not needs_more_rounds(measured, 3, ABPolicy())


def test_a_fixed_limit_holds_for_the_candidates_median_not_for_one_short_round() -> None:
    rounds = [6.0, 4.9, 6.2, 6.1]
    measured = [Measurement("bandwidth", "throughput_gbps", v, "Gbit/s", Better.HIGHER,
                            {"src": "h1", "dst": "h2"}, side, r)
                for r, v in enumerate(rounds) for side in (Side.CANDIDATE, Side.CONTROL)]
    limited = JudgementPolicy(ab=ABPolicy(), limits=(FixedLimit.parse(
        "bandwidth.throughput_gbps >= 5"),))
    assert judge_run(result(measured), None, limited, ab=ABEvidence()).verdict is Verdict.PASSED
    slow = [replace(m, value=m.value - 2) if m.side is Side.CANDIDATE else m for m in measured]
    (broken,) = judge_run(result(slow), None, limited, ab=ABEvidence()).excuses
    assert broken.kind == "limit" and "4.05" in broken.message


def test_a_series_that_leans_worse_is_named_even_among_many_undecided_ones() -> None:
    rng = np.random.default_rng(7)
    measured = [replace(m, labels={**m.labels, "n": str(i)})
                for i in range(5) for m in ab_run(rng, 2)]
    # three rounds a run: its 9 rounds point worse at p = 0.0042, within the lean level of
    # 0.05 / 6 series (two rounds a run could not: 1/64 at best)
    measured += [replace(m, labels={**m.labels, "n": "slow"})
                 for m in ab_run(rng, 3, candidate=0.5)]
    earlier = tuple(tuple(paired_series(measured)) for _ in range(2))
    judged = judge_run(result(measured), HISTORY, POLICY, ab=ABEvidence(soak_runs=earlier))
    assert judged.verdict is Verdict.PASSED  # three short soak runs cannot decide yet
    leaning, summed = judged.excuses
    assert leaning.subject == "bandwidth.throughput_gbps{dst=h2,n=slow,src=h1}"
    assert leaning.data["leans_worse"]
    assert re.search("it leans worse \\(\u2212(49|50)\\.\\d %", leaning.message), leaning.message
    assert summed.message.startswith("cannot decide 5 series yet")
    assert leaning.subject not in summed.data["series"]
