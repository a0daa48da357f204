"""The regression detector: rank test plus practical size, counts, correction, change points."""

import math
import re

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from certifier.domain.changepoint import locate_change
from certifier.domain.detector import (
    Counts,
    DetectorPolicy,
    Method,
    Outcome,
    Scale,
    Series,
    compare_series,
    judge_candidate,
    series_from_measurements,
)
from certifier.domain.judgement import Excuse
from certifier.domain.results import Better, Measurement

PAIR = {"src": "h1", "dst": "h2"}
PRE = DetectorPolicy.pre_promotion()
SOAK = DetectorPolicy.soak(28)


def gbps(baseline: np.ndarray, candidate: np.ndarray) -> Series:
    return Series("bandwidth", "throughput_gbps", "Gbit/s", Better.HIGHER,
                  tuple(baseline.tolist()), tuple(candidate.tolist()), PAIR)


def rtt(baseline: np.ndarray, candidate: np.ndarray, unit: str = "ms") -> Series:
    return Series("ping", "rtt_avg_ms", unit, Better.LOWER,
                  tuple(baseline.tolist()), tuple(candidate.tolist()), PAIR)


def noisy(rng: np.random.Generator, n: int, cv: float = 0.03, level: float = 10.0) -> np.ndarray:
    return level * (1 + cv * rng.standard_normal(n))


def wilson_low(hits: int, n: int, z: float = 1.959964) -> float:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    return centre - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def test_a_5_percent_step_at_3_percent_noise_is_caught_with_10_runs_against_20() -> None:
    rng = np.random.default_rng(1)
    caught = sum(
        compare_series(gbps(noisy(rng, 20), 0.95 * noisy(rng, 10)), PRE, locate=False).regressed
        for _ in range(200)
    )
    assert caught / 200 >= 0.9


def test_identical_distributions_are_falsely_rejected_at_most_at_the_target_rate() -> None:
    rng = np.random.default_rng(2)
    trials = 500
    rejected = sum(
        compare_series(gbps(noisy(rng, 20), noisy(rng, 10)), PRE, locate=False).regressed
        for _ in range(trials)
    )
    assert wilson_low(rejected, trials) <= PRE.false_reject_target


def test_a_whole_soak_of_a_good_candidate_is_falsely_rejected_at_most_at_the_target_rate() -> None:
    rng = np.random.default_rng(3)
    trials, rejected = 300, 0
    for _ in range(trials):
        base, cand = noisy(rng, 20), noisy(rng, 28)
        rejected += any(compare_series(gbps(base, cand[:k]), SOAK, locate=False).regressed
                        for k in range(SOAK.min_runs, 29))
    assert wilson_low(rejected, trials) <= SOAK.false_reject_target


def test_a_significant_shift_below_the_practical_floor_passes() -> None:
    rng = np.random.default_rng(4)
    verdict = compare_series(gbps(noisy(rng, 20, cv=0.001), 0.995 * noisy(rng, 10, cv=0.001)),
                             PRE)
    assert verdict.p_value < verdict.level
    assert verdict.outcome is Outcome.PASSED
    assert verdict.worse == pytest.approx(0.5, abs=0.1)
    assert "within the 1 % floor" in verdict.sentence


def test_a_higher_is_better_metric_getting_higher_is_never_a_regression() -> None:
    rng = np.random.default_rng(5)
    verdict = compare_series(gbps(noisy(rng, 20), 1.3 * noisy(rng, 10)), PRE)
    assert verdict.outcome is Outcome.PASSED
    assert verdict.shift > 25
    assert verdict.p_value > 0.99


def test_a_lower_is_better_metric_getting_lower_is_never_a_regression() -> None:
    rng = np.random.default_rng(6)
    verdict = compare_series(rtt(noisy(rng, 20, level=1), 0.7 * noisy(rng, 10, level=1)), PRE)
    assert verdict.outcome is Outcome.PASSED
    assert verdict.shift < -25


def test_latency_is_compared_on_a_log_scale_so_its_unit_does_not_matter() -> None:
    rng = np.random.default_rng(7)
    base = np.exp(0.03 * rng.standard_normal(20))
    cand = 1.05 * np.exp(0.03 * rng.standard_normal(10))
    in_ms = compare_series(rtt(base, cand))
    in_us = compare_series(rtt(1000 * base, 1000 * cand, unit="µs"))
    assert in_ms.scale is Scale.LOG
    assert in_ms.p_value == in_us.p_value
    assert in_ms.shift == pytest.approx(in_us.shift)
    assert in_ms.shift == pytest.approx(5, abs=2.5)


def test_a_doubled_latency_is_plus_100_percent_and_a_halved_one_minus_50() -> None:
    base = np.full(20, 2.0)
    assert compare_series(rtt(base, np.full(10, 4.0))).shift == pytest.approx(100)
    assert compare_series(rtt(base, np.full(10, 1.0))).shift == pytest.approx(-50)


def test_throughput_is_compared_on_a_linear_scale() -> None:
    rng = np.random.default_rng(8)
    assert compare_series(gbps(noisy(rng, 20), noisy(rng, 10))).scale is Scale.LINEAR


def test_loss_with_packet_counts_uses_fishers_exact_test_on_pooled_counts() -> None:
    series = Series("ping", "loss_pct", "%", Better.LOWER, (0.0,) * 20, (2.0,) * 10, PAIR,
                    baseline_counts=(Counts(0, 100),) * 20,
                    candidate_counts=(Counts(2, 100),) * 10)
    verdict = compare_series(series, PRE)
    expected = stats.fisher_exact([[20, 980], [0, 2000]], alternative="greater").pvalue
    assert verdict.method is Method.FISHER
    assert verdict.p_value == pytest.approx(expected)
    assert verdict.regressed
    assert verdict.shift_unit == "pp"
    assert verdict.shift == pytest.approx(2.0)
    assert verdict.shift_low < 2.0 < verdict.shift_high


def test_a_few_lost_packets_among_thousands_are_not_a_regression() -> None:
    series = Series("ping", "loss_pct", "%", Better.LOWER, (0.1,) * 20, (0.2,) * 10, PAIR,
                    baseline_counts=(Counts(1, 1000),) * 20,
                    candidate_counts=(Counts(2, 1000),) * 10)
    verdict = compare_series(series, PRE)
    assert verdict.method is Method.FISHER
    assert verdict.outcome is Outcome.PASSED


def test_holm_correction_keeps_eight_good_metrics_from_rejecting_a_third_of_candidates() -> None:
    rng = np.random.default_rng(9)
    policy = DetectorPolicy.pre_promotion(false_reject_target=0.05)
    trials, uncorrected, corrected = 200, 0, 0
    for _ in range(trials):
        series = [gbps(noisy(rng, 20), noisy(rng, 10)) for _ in range(8)]
        uncorrected += any(compare_series(s, policy, locate=False).regressed for s in series)
        corrected += bool(judge_candidate(series, policy, locate=False).regressed)
    assert uncorrected / trials > 0.2
    assert wilson_low(corrected, trials) <= 0.05


def test_holm_correction_still_rejects_the_one_bad_metric_among_eight() -> None:
    rng = np.random.default_rng(10)
    series = [gbps(noisy(rng, 20), noisy(rng, 10)) for _ in range(7)]
    series.append(gbps(noisy(rng, 20), 0.8 * noisy(rng, 10)))
    judged = judge_candidate(series, PRE, baseline_label="known-good #12")
    assert [v.key for v in judged.regressed] == [series[-1].key]
    assert judged.regressed[0].level < PRE.false_reject_target


def test_a_change_point_is_located_within_one_run_of_a_clear_step() -> None:
    rng = np.random.default_rng(11)
    for onset in (3, 8, 12):
        values = noisy(rng, 40, cv=0.02)
        values[20 + onset:] *= 0.9
        point = locate_change(values, worse="lower", first=20)
        assert point is not None
        assert abs(point.index - (20 + onset)) <= 1


def test_a_regression_that_begins_mid_soak_reports_its_window_and_first_run() -> None:
    rng = np.random.default_rng(12)
    base, cand = noisy(rng, 20, cv=0.02), noisy(rng, 18, cv=0.02)
    cand[8:] *= 0.9
    verdict = compare_series(gbps(base, cand), SOAK, baseline_label="known-good #12")
    assert verdict.regressed
    assert verdict.change_run is not None
    assert abs(verdict.change_run - 8) <= 1
    assert verdict.window[0] >= 6
    assert "change began at run" in verdict.sentence


@pytest.mark.parametrize("runs", [1, 2, 3])
def test_a_short_dip_does_not_produce_a_change_point(runs: int) -> None:
    rng = np.random.default_rng(13 + runs)
    for start in (22, 30, 40 - runs):  # early, middle, at the newest runs
        values = noisy(rng, 40, cv=0.02)
        values[start:start + runs] *= 0.85
        assert locate_change(values, worse="lower", first=20) is None


@pytest.mark.parametrize("runs", [1, 2, 3, 4])
def test_fewer_than_five_candidate_runs_are_never_judged(runs: int) -> None:
    verdict = compare_series(gbps(np.full(20, 10.0), np.full(runs, 1.0)), SOAK)
    assert verdict.outcome is Outcome.NOT_TESTED
    assert "at least 5 needed" in verdict.sentence


def test_all_equal_samples_give_a_clear_pass_not_an_error() -> None:
    verdict = compare_series(gbps(np.full(20, 10.0), np.full(10, 10.0)))
    assert verdict.outcome is Outcome.PASSED
    assert verdict.p_value == 1.0
    assert verdict.shift == 0.0


def test_all_equal_samples_at_a_worse_value_regress() -> None:
    verdict = compare_series(gbps(np.full(20, 10.0), np.full(10, 9.0)))
    assert verdict.regressed
    assert verdict.shift == pytest.approx(-10.0)


def test_a_single_sample_on_either_side_gives_a_clear_result() -> None:
    assert compare_series(gbps(np.array([10.0]), np.full(10, 5.0))).outcome in (
        Outcome.PASSED, Outcome.REGRESSED)
    assert compare_series(gbps(np.full(20, 10.0), np.array([5.0]))).outcome is (
        Outcome.NOT_TESTED)


def test_non_finite_values_are_left_out_and_said_so() -> None:
    rng = np.random.default_rng(14)
    base, cand = noisy(rng, 20), noisy(rng, 10)
    base[3], cand[0], cand[5] = math.nan, math.inf, -math.inf
    verdict = compare_series(gbps(base, cand))
    assert verdict.outcome is Outcome.PASSED
    assert verdict.baseline.n == 19
    assert verdict.candidate.n == 8
    assert any("non-finite candidate" in note for note in verdict.notes)


def test_no_baseline_gives_not_tested() -> None:
    verdict = compare_series(gbps(np.array([]), np.full(10, 5.0)))
    assert verdict.outcome is Outcome.NOT_TESTED
    assert "no baseline" in verdict.sentence


def test_only_nan_values_give_not_tested() -> None:
    verdict = compare_series(gbps(np.full(20, math.nan), np.full(10, math.nan)))
    assert verdict.outcome is Outcome.NOT_TESTED


def test_latency_values_at_or_below_zero_fall_back_to_a_linear_scale() -> None:
    verdict = compare_series(rtt(np.r_[np.zeros(5), np.ones(15)], np.ones(10)))
    assert verdict.scale is Scale.LINEAR
    assert any("log scale" in note for note in verdict.notes)


def test_impossible_counts_are_left_out_and_said_so() -> None:
    series = Series("ping", "loss_pct", "%", Better.LOWER, (0.0,) * 20, (0.0,) * 10, PAIR,
                    baseline_counts=(Counts(0, 100),) * 19 + (Counts(5, 0),),
                    candidate_counts=(Counts(0, 100),) * 9 + (Counts(7, 3),))
    verdict = compare_series(series)
    assert verdict.outcome is Outcome.PASSED
    assert verdict.baseline.n == 19
    assert any("count(s) left out" in note for note in verdict.notes)


def test_a_small_baseline_is_noted_but_does_not_gate() -> None:
    rng = np.random.default_rng(15)
    verdict = compare_series(gbps(noisy(rng, 8), noisy(rng, 10)))
    assert verdict.outcome is Outcome.PASSED
    assert any("insufficient baseline: 8 run(s) of 20 wanted" in n for n in verdict.notes)


def test_a_regression_explains_itself_in_one_sentence_and_as_an_excuse() -> None:
    rng = np.random.default_rng(16)
    verdict = compare_series(gbps(noisy(rng, 20), 0.69 * noisy(rng, 10)), PRE,
                             baseline_label="known-good #12")
    excuse = verdict.excuse()
    assert isinstance(excuse, Excuse)
    assert excuse.kind == "regression"
    assert excuse.subject == "bandwidth.throughput_gbps{dst=h2,src=h1}"
    assert re.match(r"bandwidth throughput_gbps h1→h2 \u22123\d\.\d % "
                    r"\(95 % CI \u22123\d\.\d…\u2212\d\d\.\d %\) "
                    r"vs known-good #12, p < 0\.001 \(level 0\.01\)", excuse.message)
    data = excuse.data
    assert data["baseline"]["n"] == 20 and data["candidate"]["n"] == 10
    assert data["shift_ci"][0] < data["shift"] < data["shift_ci"][1]
    assert data["better"] == "higher"


def test_series_are_built_from_measurements_in_run_order() -> None:
    ms = [Measurement("bandwidth", "throughput_gbps", v, "Gbit/s", Better.HIGHER, PAIR)
          for v in (9.0, 9.5, 10.0)]
    (series,) = series_from_measurements(ms, {ms[0].key: [10.0] * 20})
    assert series.candidate == (9.0, 9.5, 10.0)
    assert series.baseline == (10.0,) * 20


def test_the_soak_level_per_check_is_calibrated_below_the_soak_target_and_reproducible() -> None:
    level = SOAK.level(20)
    assert 0 < level < SOAK.false_reject_target / 10
    assert DetectorPolicy.soak(28).level(20) == level
