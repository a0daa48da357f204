"""``judge_run`` with a run history: the statistical detector behind the margin.

The margin (20 % by default) judges one run against the known-good's median; the detector judges
the candidate's runs so far against the known-good's runs, and only where there are enough of
both. Figures are generated with a fixed seed: the detector's own accuracy is measured at scale
by ``benchmarks/detector_accuracy.py``.
"""

from __future__ import annotations

import random

from certifier.domain.detector import DetectorPolicy
from certifier.domain.judgement import (
    Baseline,
    JudgementPolicy,
    RunHistory,
    Verdict,
    judge_run,
)
from certifier.domain.results import Better, Check, Measurement, SuiteResult

KEY = "bandwidth.throughput_gbps{dst=h2,src=h1}"
POLICY = JudgementPolicy(detector=DetectorPolicy.soak(runs=28))


def _run(gbps: float, check_passes: bool = True) -> list[SuiteResult]:
    return [SuiteResult(
        suite="bandwidth",
        checks=[Check("bandwidth", "h1→h2 connects", check_passes)],
        measurements=[Measurement("bandwidth", "throughput_gbps", gbps, "Gbit/s", Better.HIGHER,
                                  {"src": "h1", "dst": "h2"})],
    )]


def _series(rng: random.Random, n: int, level: float, cv: float = 0.01) -> tuple[float, ...]:
    return tuple(rng.gauss(level, level * cv) for _ in range(n))


def _history(baseline: tuple[float, ...], candidate: tuple[float, ...]) -> RunHistory:
    return RunHistory("known-good #4 on gate1", {KEY: baseline}, {KEY: candidate})


def _baseline(values: tuple[float, ...]) -> Baseline:
    return Baseline("known-good #4", {KEY: list(values)})


def test_a_small_step_the_margin_misses_is_regressed_by_the_detector_with_its_figures() -> None:
    rng = random.Random(1)
    base = _series(rng, 30, 10.0)
    earlier = _series(rng, 6, 9.5)
    judgement = judge_run(_run(9.5), _baseline(base), POLICY, _history(base, earlier))
    assert judgement.verdict is Verdict.REGRESSED
    (excuse,) = judgement.excuses
    assert excuse.kind == "regression" and excuse.subject == KEY
    assert excuse.data["candidate"]["n"] == 7  # six earlier runs and this one
    assert excuse.data["baseline"]["n"] == 30
    assert excuse.data["p_value"] <= excuse.data["level"]
    assert "known-good #4 on gate1" in excuse.message
    # Without the history, the margin alone lets the same run pass: 5 % is within 20 %.
    assert judge_run(_run(9.5), _baseline(base), POLICY).verdict is Verdict.PASSED


def test_the_same_distribution_passes() -> None:
    rng = random.Random(2)
    base = _series(rng, 30, 10.0)
    judgement = judge_run(_run(10.0), _baseline(base), POLICY,
                          _history(base, _series(rng, 9, 10.0)))
    assert judgement.verdict is Verdict.PASSED


def test_too_few_baseline_runs_leave_the_margin_as_the_only_numeric_gate() -> None:
    rng = random.Random(3)
    base = _series(rng, 19, 10.0)  # one short of min_baseline
    judgement = judge_run(_run(9.0), _baseline(base), POLICY,
                          _history(base, _series(rng, 10, 9.0)))
    assert judgement.verdict is Verdict.PASSED


def test_fewer_than_min_runs_candidate_runs_are_not_judged_yet() -> None:
    rng = random.Random(4)
    base = _series(rng, 30, 10.0)
    judgement = judge_run(_run(9.0), _baseline(base), POLICY,
                          _history(base, _series(rng, 3, 9.0)))  # 4 runs with this one
    assert judgement.verdict is Verdict.PASSED


def test_the_margin_still_rejects_a_gross_break_from_one_run() -> None:
    rng = random.Random(5)
    base = _series(rng, 30, 10.0)
    judgement = judge_run(_run(5.0), _baseline(base), POLICY, _history(base, ()))
    assert judgement.verdict is Verdict.REGRESSED
    assert "allowed 20 % worse" in judgement.excuses[0].message


def test_a_failed_check_wins_over_numbers() -> None:
    rng = random.Random(6)
    base = _series(rng, 30, 10.0)
    judgement = judge_run(_run(9.5, check_passes=False), _baseline(base), POLICY,
                          _history(base, _series(rng, 6, 9.5)))
    assert judgement.verdict is Verdict.FAILED


def test_no_detector_in_the_policy_ignores_the_history() -> None:
    rng = random.Random(7)
    base = _series(rng, 30, 10.0)
    judgement = judge_run(_run(9.5), _baseline(base), JudgementPolicy(),
                          _history(base, _series(rng, 6, 9.5)))
    assert judgement.verdict is Verdict.PASSED
