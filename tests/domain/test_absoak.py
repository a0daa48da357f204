"""A/B judgement over a soak: paired runs, signed ranks, calibration per candidate (absoak.py)."""

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from certifier.domain.absoak import (
    SoakPolicy,
    detector_config_warnings,
    first_alarms,
    judge_soak,
    runs_needed,
    signed_rank_p,
    soak_config_warnings,
    soak_series,
)
from certifier.domain.abtest import Outcome, PairedSeries
from certifier.domain.detector import Counts, DetectorPolicy
from certifier.domain.results import Better

PAIR = {"src": "h1", "dst": "h2"}
# a short plan and a small simulation keep the calibration to a fraction of a second
POLICY = SoakPolicy(planned_runs=12, max_extra_runs=0, calibration_trials=4000)


def run(rng: np.random.Generator, *, step: float = 0.0, env: float = 1.0, rounds: int = 4,
        key: str = "0") -> PairedSeries:
    """One soak run of one throughput series: 3 % noise per side, ``env`` shared by both."""
    cand = tuple(10 * env * (1 - step) * (1 + 0.03 * rng.standard_normal(rounds)))
    ctrl = tuple(10 * env * (1 + 0.03 * rng.standard_normal(rounds)))
    return PairedSeries("bandwidth", "throughput_gbps", "Gbit/s", Better.HIGHER,
                        {**PAIR, "n": key}, tuple(range(rounds)), cand, ctrl)


def loss_run(cand_events: int, ctrl_events: int) -> PairedSeries:
    return PairedSeries("ping", "loss_pct", "%", Better.LOWER, PAIR, (0,),
                        (cand_events / 4,), (ctrl_events / 4,), (Counts(cand_events, 400),),
                        (Counts(ctrl_events, 400),))


def test_the_exact_signed_rank_p_value_matches_scipy() -> None:
    d = np.array([1.3, -0.4, 2.2, 0.9, 1.7, -0.2, 0.6, 1.1])
    want = stats.wilcoxon(d, alternative="greater", method="exact").pvalue
    assert signed_rank_p(d) == pytest.approx(want)


def test_a_good_series_is_flagged_over_the_whole_plan_at_most_at_its_share() -> None:
    policy = SoakPolicy(planned_runs=12, max_extra_runs=0, calibration_trials=4000,
                        false_reject_target=0.10, calibration_headroom=1.0)
    rng = np.random.default_rng(42)
    diffs = rng.standard_normal((3000, 12, policy.units_per_run))
    alarms = first_alarms(diffs, policy.level(1), 0.0, policy.min_runs)
    assert float(np.mean(alarms > 0)) <= 0.10 + 0.02  # simulation error of 3000 draws


def test_the_per_check_level_shrinks_with_the_number_of_series() -> None:
    assert POLICY.level(50) < POLICY.level(5) < POLICY.level(1)


def test_a_5_percent_step_is_regressed_after_ten_runs() -> None:
    rng = np.random.default_rng(1)
    runs = [[run(rng, step=0.05)] for _ in range(10)]
    (v,) = judge_soak(runs, POLICY).verdicts
    assert v.outcome is Outcome.REGRESSED and v.method == "signed-rank"


def test_a_soak_regression_excuse_names_both_medians_and_the_interval() -> None:
    rng = np.random.default_rng(1)
    (excuse,) = judge_soak([[run(rng, step=0.05)] for _ in range(10)], POLICY).excuses()
    assert excuse.kind == "regression"
    assert "in the controls (medians)" in excuse.message and "95 % CI" in excuse.message


def test_a_slow_day_on_both_sides_is_not_a_regression() -> None:
    rng = np.random.default_rng(2)
    env = [1.0, 0.9, 0.8, 0.8, 0.85, 0.9, 0.95, 0.7, 0.7, 0.75]  # drift and a dip, shared
    (v,) = judge_soak([[run(rng, env=e)] for e in env], POLICY).verdicts
    assert v.outcome is Outcome.OK


def test_pooled_loss_counts_regress_with_absolute_figures() -> None:
    runs = [[loss_run(6, 0)] for _ in range(6)]
    (v,) = judge_soak(runs, POLICY).verdicts
    assert v.outcome is Outcome.REGRESSED and v.method == "binomial"
    assert "36 of 2400 packets lost vs 0 of 2400 in the controls" in v.sentence
    assert "inf" not in v.sentence


def test_fewer_runs_than_the_minimum_cannot_decide_and_say_how_many_more() -> None:
    rng = np.random.default_rng(3)
    (v,) = judge_soak([[run(rng)] for _ in range(3)], POLICY).verdicts
    assert v.outcome is Outcome.UNDECIDED and v.runs_needed == 2
    assert v.sentence.endswith("needs ≥ 2 more runs")
    assert v.excuse() is not None and v.excuse().kind == "undecidable"  # type: ignore[union-attr]


def test_a_shift_the_runs_so_far_cannot_resolve_is_undecidable_with_the_runs_needed() -> None:
    # one difference per run: 6 runs all worse give p = 1/64, far above the level
    policy = SoakPolicy(planned_runs=12, max_extra_runs=0, calibration_trials=4000, unit="run")
    rng = np.random.default_rng(4)
    runs = [[run(rng, step=0.05)] for _ in range(6)]
    (v,) = judge_soak(runs, policy).verdicts
    assert v.outcome is Outcome.UNDECIDED and v.runs_needed > 0
    assert f"needs ≥ {v.runs_needed} more run" in v.sentence
    assert runs_needed(soak_series(runs)[0], policy) == v.runs_needed


def test_a_decided_series_needs_no_more_runs() -> None:
    rng = np.random.default_rng(5)
    runs = [[run(rng)] for _ in range(10)]
    assert runs_needed(soak_series(runs)[0], POLICY) == 0


def test_the_config_check_warns_when_min_runs_can_never_reach_the_level() -> None:
    policy = SoakPolicy(planned_runs=10, max_extra_runs=0, calibration_trials=4000, unit="run")
    (warning, never) = soak_config_warnings(policy, series=50)
    assert "can never reject on its own" in warning
    assert "the soak can never reject" in never


def test_the_default_soak_plan_raises_no_warning() -> None:
    assert soak_config_warnings(POLICY, series=50) == []


def test_the_history_detector_config_check_warns_on_tiny_samples() -> None:
    (warning,) = detector_config_warnings(
        DetectorPolicy.soak(min_runs=2, min_baseline=3, calibration_trials=2000), series=50)
    assert "can never reach the level" in warning


def test_judge_soak_and_the_vectorised_rule_agree() -> None:
    rng = np.random.default_rng(6)
    runs = [run(rng, step=0.04 * (k >= 4)) for k in range(12)]
    diffs = np.array([[-100 * (np.log(r.candidate) - np.log(r.control)) for r in runs]])
    floor = -100 * math.log(0.99)
    first = int(first_alarms(diffs, POLICY.level(1), floor, POLICY.min_runs)[0])
    by_judge = next((k for k in range(1, 13)
                     if judge_soak([[r] for r in runs[:k]], POLICY).regressed), 0)
    assert first == by_judge


def test_a_soak_series_that_never_moves_is_ok() -> None:
    still = PairedSeries("upgrade", "lost_packets", "count", Better.LOWER, {}, (0, 1),
                         (0.0, 0.0), (0.0, 0.0))
    (v,) = judge_soak([[still]] * 8, POLICY).verdicts
    assert v.outcome is Outcome.OK and "inf" not in v.sentence


def halved_iops(rng: np.random.Generator, noise: float) -> list[list[PairedSeries]]:
    """Three soak runs of 3 rounds: random-write IOPS halved, ``noise`` per round and side."""
    return [[PairedSeries("storage", "rand_write_iops", "IOPS", Better.HIGHER, {"job": "w"},
                          (0, 1, 2), tuple(5000 * (1 + noise * rng.standard_normal(3))),
                          tuple(10000 * (1 + noise * rng.standard_normal(3))))]
            for _ in range(3)]


def test_an_undecided_series_whose_estimate_is_far_worse_leans_worse() -> None:
    # a busy machine: 30 % noise per round hides a 50 % drop over three short runs
    runs = halved_iops(np.random.default_rng(8), 0.3)
    (v,) = judge_soak(runs, POLICY).verdicts
    assert v.outcome is Outcome.UNDECIDED and v.leans_worse
    assert "it leans worse (" in v.sentence and "beyond the lean bound of 20 %" in v.sentence
    assert v.excuse().data["leans_worse"] is True  # type: ignore[union-attr]
    # two rounds cannot point worse consistently enough (one-sided p of 1/4 at best)
    (short,) = judge_soak([[replace(runs[0][0], rounds=(0, 1),
                                    candidate=runs[0][0].candidate[:2],
                                    control=runs[0][0].control[:2])]], POLICY).verdicts
    assert short.outcome is Outcome.UNDECIDED and not short.leans_worse


def test_a_lean_must_pass_lean_p_shared_among_the_candidates_series() -> None:
    # Alone, every one of 9 rounds worse (p = 1/512) leans; among 50 series it must reach
    # 0.05 / 50 = 0.001, or a good candidate's many series would hold it by chance.
    rng = np.random.default_rng(8)
    runs = halved_iops(rng, 0.03)
    (alone,) = judge_soak(runs, POLICY).verdicts
    assert alone.outcome is Outcome.UNDECIDED and alone.leans_worse
    assert "signed-rank p = 0.0020 (level 0.05)" in alone.sentence
    crowd = [[*r, *(run(rng, key=str(k)) for k in range(49))] for r in runs]
    verdicts = judge_soak(crowd, POLICY).verdicts
    among = next(v for v in verdicts if v.metric == "rand_write_iops")
    assert among.outcome is Outcome.UNDECIDED and not among.leans_worse
    assert not any(v.leans_worse for v in verdicts)
    assert POLICY.lean_level(50) == pytest.approx(POLICY.lean_p / 50)


def test_an_undecided_harmless_series_does_not_lean() -> None:
    rng = np.random.default_rng(9)
    runs = [[run(rng, rounds=1)] for _ in range(3)]
    (v,) = judge_soak(runs, POLICY).verdicts
    assert v.outcome is Outcome.UNDECIDED and not v.leans_worse
    assert "leans worse" not in v.sentence


def test_a_loss_count_far_above_the_controls_leans_worse_while_undecided() -> None:
    (v,) = judge_soak([[loss_run(12, 0)], [loss_run(14, 1)]], POLICY).verdicts
    assert v.outcome is Outcome.UNDECIDED and v.leans_worse
    assert "pp over every run, beyond the lean bound of 2 pp" in v.sentence


def jitter_run(rng: np.random.Generator, cand_ms: float, ctrl_ms: float) -> PairedSeries:
    return PairedSeries("bandwidth", "udp_jitter_ms", "ms", Better.LOWER, PAIR, (0, 1, 2, 3),
                        tuple(cand_ms * (1 + 0.1 * rng.standard_normal(4))),
                        tuple(ctrl_ms * (1 + 0.1 * rng.standard_normal(4))))


def test_microseconds_more_udp_jitter_neither_regress_nor_lean_over_a_soak() -> None:
    rng = np.random.default_rng(10)
    runs = [[jitter_run(rng, 0.007, 0.0025)] for _ in range(10)]  # +180 %, 4.5 µs
    (v,) = judge_soak(runs, POLICY).verdicts
    assert v.outcome is not Outcome.REGRESSED and not v.leans_worse
    (old,) = judge_soak(runs, replace(POLICY, min_change={})).verdicts
    assert old.outcome is Outcome.REGRESSED


def test_a_millisecond_of_udp_jitter_regresses_over_a_soak_naming_its_floor() -> None:
    rng = np.random.default_rng(10)
    (v,) = judge_soak([[jitter_run(rng, 1.0, 0.0025)] for _ in range(10)], POLICY).verdicts
    assert v.outcome is Outcome.REGRESSED and "floor 0.05 ms" in v.sentence
