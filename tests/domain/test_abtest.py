"""A/B judgement at the gate: the candidate against contemporaneous controls (domain/abtest.py)."""

import json
import math
import re

import numpy as np

from certifier.domain.abtest import (
    ABPolicy,
    NoiseHistory,
    Outcome,
    PairedSeries,
    judge_gate,
    needs_more_rounds,
    paired_series,
    undecided_suites,
)
from certifier.domain.results import Better, Measurement, Side

CAND, CTRL = Side.CANDIDATE, Side.CONTROL
PAIR = {"src": "h1", "dst": "h2"}


def bw(value: float, side: Side, rnd: int, key: str = "0") -> Measurement:
    return Measurement("bandwidth", "throughput_gbps", value, "Gbit/s", Better.HIGHER,
                       {**PAIR, "n": key}, side, rnd)


def draw(rng: np.random.Generator, rounds: int, series: int = 10, *, step: float = 0.0,
         env: tuple[float, ...] = (), cand_only: tuple[float, ...] = ()) -> list[Measurement]:
    """``series`` throughput series at 3 % noise per side; ``env`` multiplies both sides of
    round r, ``cand_only`` the candidate's only; ``step`` lowers series 0's candidate."""
    out = []
    for r in range(rounds):
        shared = env[r] if r < len(env) else 1.0
        for j in range(series):
            for side in (CAND, CTRL) if r % 2 == 0 else (CTRL, CAND):
                v = 10.0 * shared * (1 + 0.03 * rng.standard_normal())
                if side is CAND:
                    v *= cand_only[r] if r < len(cand_only) else 1.0
                    v *= 1 - step if j == 0 else 1.0
                out.append(bw(v, side, r, str(j)))
    return out


def history(rng: np.random.Generator, series: int = 10) -> NoiseHistory:
    """Five earlier A/B runs of 4 rounds on the testbed, at the same 3 % noise per side."""
    runs = [paired_series(draw(rng, 4, series)) for _ in range(5)]
    return NoiseHistory.from_runs(runs)


def gate_until_done(measure: list[Measurement], policy: ABPolicy,
                    noise: NoiseHistory | None = None) -> tuple[int, list[Outcome]]:
    """Rounds the sequential gate runs on these measurements, and the final outcomes."""
    done = policy.min_rounds
    while needs_more_rounds([m for m in measure if m.round < done], done, policy, noise):
        done += 1
    verdict = judge_gate(paired_series([m for m in measure if m.round < done]), policy, noise)
    return done, [v.outcome for v in verdict.verdicts]


def test_paired_series_pairs_rounds_takes_medians_and_drops_rounds_missing_a_side() -> None:
    ms = [bw(10, CAND, 0), bw(12, CAND, 0), bw(20, CAND, 0), bw(9, CTRL, 0),
          bw(8, CAND, 1), bw(7, CTRL, 2)]
    (s,) = paired_series(ms)
    assert (s.rounds, s.candidate, s.control) == ((0,), (12.0,), (9.0,))


def test_paired_series_sums_counts_per_side_within_a_round() -> None:
    def loss(events: int, side: Side) -> Measurement:
        return Measurement("ping", "loss_pct", 100 * events / 100, "%", Better.LOWER, PAIR,
                           side, 0, events, 100)

    (s,) = paired_series([loss(1, CAND), loss(2, CAND), loss(0, CTRL)])
    assert s.counted and (s.totals()[0].events, s.totals()[0].trials) == (3, 200)


def test_good_candidates_are_rarely_flagged_at_the_gate() -> None:
    rng = np.random.default_rng(7)
    policy = ABPolicy()
    noise = history(rng)
    flagged = sum(Outcome.REGRESSED in gate_until_done(draw(rng, 6), policy, noise)[1]
                  for _ in range(150))
    assert flagged <= 3  # target 1 % per candidate; 150 candidates of 10 series


def test_a_10_percent_step_is_regressed_within_the_gates_rounds() -> None:
    rng = np.random.default_rng(3)
    policy = ABPolicy(equivalence_pct=5.0)
    caught = 0
    for _ in range(20):
        noise = history(rng, series=1)
        rounds, outcomes = gate_until_done(draw(rng, 6, series=1, step=0.10), policy, noise)
        caught += outcomes[0] is Outcome.REGRESSED and rounds <= policy.max_rounds
    assert caught >= 18


def test_a_dip_of_the_environment_on_both_sides_is_not_a_regression() -> None:
    rng = np.random.default_rng(5)
    measure = draw(rng, 4, env=(0.7, 1.0, 0.6, 1.0))
    verdict = judge_gate(paired_series(measure), ABPolicy())
    assert verdict.regressed == ()


def test_a_dip_of_the_candidate_alone_is_a_regression() -> None:
    rng = np.random.default_rng(5)
    measure = draw(rng, 4, cand_only=(0.7, 0.7, 0.7, 0.7))
    verdict = judge_gate(paired_series(measure), ABPolicy())
    assert len(verdict.regressed) == 10


def test_a_regression_excuse_gives_both_medians_the_shift_and_the_noise_band() -> None:
    rng = np.random.default_rng(5)
    measure = draw(rng, 4, series=1, cand_only=(0.7, 0.7, 0.7, 0.7))
    (excuse,) = judge_gate(paired_series(measure), ABPolicy()).excuses()
    assert excuse.kind == "regression"
    assert "in the controls of the same 4 rounds" in excuse.message
    assert "noise band ±" in excuse.message and "\u22123" in excuse.message


def _loss_run(cand_events: tuple[int, ...], ctrl_events: tuple[int, ...]) -> list[Measurement]:
    out = []
    for r, (ce, ke) in enumerate(zip(cand_events, ctrl_events, strict=True)):
        for side, e in ((CAND, ce), (CTRL, ke)):
            out.append(Measurement("ping", "loss_pct", e, "%", Better.LOWER, PAIR, side, r,
                                   e, 100))
    return out


def test_loss_counts_are_explained_in_absolute_figures() -> None:
    measure = _loss_run((1, 0, 2, 0), (0, 0, 0, 0))
    verdict = judge_gate(paired_series(measure), ABPolicy(count_equivalence_pp=0.5))
    (v,) = verdict.verdicts
    assert "3 of 400 packets lost vs 0 of 400 in the controls" in v.sentence


def test_a_loss_burst_against_clean_controls_regresses_as_counts() -> None:
    measure = _loss_run((12, 10, 9, 11), (0, 0, 0, 0))
    (v,) = judge_gate(paired_series(measure), ABPolicy()).verdicts
    assert v.outcome is Outcome.REGRESSED and v.method == "binomial"
    assert "42 of 400 packets lost vs 0 of 400 in the controls" in v.sentence


def test_no_excuse_prints_infinity_when_the_controls_are_zero() -> None:
    ms = []
    for r in range(6):
        ms += [Measurement("upgrade", "lost_packets", 30.0 + r, "count", Better.LOWER, {},
                           CAND, r),
               Measurement("upgrade", "lost_packets", 0.0, "count", Better.LOWER, {}, CTRL, r),
               Measurement("ping", "loss_pct", 4.0, "%", Better.LOWER, PAIR, CAND, r),
               Measurement("ping", "loss_pct", 0.0, "%", Better.LOWER, PAIR, CTRL, r)]
    verdict = judge_gate(paired_series(ms), ABPolicy())
    texts = [v.sentence for v in verdict.verdicts] + [json.dumps(e.as_dict())
                                                     for e in verdict.excuses()]
    assert len(verdict.regressed) == 2
    assert not any("inf" in t or "∞" in t or "NaN" in t for t in texts)


def test_a_rise_of_many_times_reads_as_a_factor_not_as_five_digit_percentages() -> None:
    # a write latency of 66 ms against 383 µs in the controls (seen on a busy disk)
    ms = [Measurement("storage", "rand_write_clat_p99_us", v, "µs", Better.LOWER, {"job": "w"},
                      side, r)
          for r in range(4) for side, v in ((CAND, 66450.0 * (1 + 0.05 * r)),
                                            (CTRL, 383.0 * (1 + 0.02 * r)))]
    (v,) = judge_gate(paired_series(ms), ABPolicy()).verdicts
    assert v.outcome is Outcome.REGRESSED
    assert re.search(r"\(medians\): 1\d\d\u00d7 \(bound ", v.sentence), v.sentence
    assert not re.search(r"\d{4,}\.\d %", v.sentence), v.sentence
    small = [Measurement(m.suite, m.metric, m.value / 150 if m.side is CAND else m.value,
                         m.unit, m.better, m.labels, m.side, m.round) for m in ms]
    (v,) = judge_gate(paired_series(small), ABPolicy()).verdicts
    assert re.search(r"\(medians\): \+\d\d\.\d % \(bound \+", v.sentence), v.sentence


def test_a_series_that_never_moves_is_ok() -> None:
    s = PairedSeries("upgrade", "lost_packets", "count", Better.LOWER, {}, (0, 1, 2),
                     (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    (v,) = judge_gate([s], ABPolicy()).verdicts
    assert v.outcome is Outcome.OK


def test_sub_millisecond_rtts_need_no_absolute_floor() -> None:
    rng = np.random.default_rng(11)
    ms = []
    for r in range(6):
        for side in (CAND, CTRL):  # 50 µs ± 20 % jitter, quantised to the microsecond
            value = round(0.05 * (1 + 0.2 * rng.standard_normal()), 3)
            ms.append(Measurement("ping", "rtt_avg_ms", value, "ms", Better.LOWER, PAIR,
                                  side, r))
    assert judge_gate(paired_series(ms), ABPolicy()).regressed == ()


def test_a_noisy_history_widens_the_band() -> None:
    s = PairedSeries("bandwidth", "throughput_gbps", "Gbit/s", Better.HIGHER, PAIR,
                     (0, 1, 2, 3), (9.0, 9.1, 8.9, 9.0), (10.0, 10.1, 9.9, 10.0))
    quiet = judge_gate([s], ABPolicy())
    noisy = NoiseHistory({s.key: [(10.0, 14.0, 7.0, 12.0, 8.0, 13.0)] * 3})
    assert quiet.verdicts[0].outcome is Outcome.REGRESSED
    assert judge_gate([s], ABPolicy(), noisy).verdicts[0].outcome is not Outcome.REGRESSED


def _rtt(cand: tuple[float, ...], ctrl: tuple[float, ...]) -> PairedSeries:
    return PairedSeries("ping", "rtt_max_ms", "ms", Better.LOWER, PAIR, tuple(range(len(cand))),
                        cand, ctrl)


def test_every_round_past_the_cap_regresses_a_noisy_series() -> None:
    s = _rtt((0.20, 0.23, 0.19), (0.10, 0.12, 0.09))  # twice as slow in every round
    noise = NoiseHistory({s.key: [(0.10, 0.11, 0.10, 0.105, 0.095, 0.11, 0.10)] * 2})
    strict = ABPolicy(false_reject_target=1e-7)  # a band far wider than the cap
    (v,) = judge_gate([s], strict, noise).verdicts
    assert v.outcome is Outcome.REGRESSED and "every round worse than 50 %" in v.sentence


def test_the_cap_does_not_regress_a_series_noisier_than_the_cap() -> None:
    s = _rtt((0.30, 0.33, 0.28), (0.10, 0.12, 0.09))
    noise = NoiseHistory({s.key: [(0.10, 0.40, 0.08, 0.35, 0.09, 0.50, 0.10)] * 2})
    (v,) = judge_gate([s], ABPolicy(false_reject_target=1e-7), noise).verdicts
    assert v.outcome is not Outcome.REGRESSED


def test_an_undecided_series_says_so_without_blocking() -> None:
    s = PairedSeries("bandwidth", "throughput_gbps", "Gbit/s", Better.HIGHER, PAIR,
                     (0, 1), (9.0, 9.8), (10.0, 9.6))
    (excuse,) = judge_gate([s], ABPolicy(equivalence_pct=2.0)).excuses()
    assert excuse.kind == "undecided"
    assert excuse.message.startswith(
        "bandwidth throughput_gbps h1→h2: cannot decide at the gate after 2 rounds (shift ")
    assert excuse.message.endswith("; the soak goes on")


def test_udp_loss_is_informative_only() -> None:
    ms = [Measurement("bandwidth", "udp_loss_pct", 5.0 * (side is CAND), "%", Better.LOWER,
                      PAIR, side, r, 50 * (side is CAND), 1000)
          for r in range(4) for side in (CAND, CTRL)]
    (v,) = judge_gate(paired_series(ms), ABPolicy()).verdicts
    assert v.outcome is Outcome.INFORMATIVE and v.excuse() is None


def test_more_rounds_are_asked_while_a_series_is_undecided() -> None:
    s = [bw(9.0, CAND, 0), bw(10.0, CTRL, 0), bw(9.8, CAND, 1), bw(9.6, CTRL, 1)]
    assert needs_more_rounds(s, 2, ABPolicy(equivalence_pct=10.0))
    # one whose band at the cap stays wider than the equivalence bound asks for none
    assert not needs_more_rounds(s, 2, ABPolicy(equivalence_pct=2.0))


def test_no_more_rounds_once_max_rounds_ran_even_when_undecided() -> None:
    s = [bw(9.0, CAND, 0), bw(10.0, CTRL, 0), bw(9.8, CAND, 1), bw(9.6, CTRL, 1)]
    policy = ABPolicy(equivalence_pct=10.0, max_rounds=2)
    assert judge_gate(paired_series(s), policy).undecided
    assert not needs_more_rounds(s, 2, policy)


def test_rounds_below_the_minimum_always_ask_for_more() -> None:
    assert needs_more_rounds([bw(10.0, CAND, 0), bw(10.0, CTRL, 0)], 1, ABPolicy())


def test_verdict_data_is_json_ready() -> None:
    rng = np.random.default_rng(1)
    for v in judge_gate(paired_series(draw(rng, 2, series=3)), ABPolicy()).verdicts:
        data = v.as_dict()
        assert json.loads(json.dumps(data)) == data
        assert all(x is None or math.isfinite(x) for x in data["shift_ci"])


def rtt(cand: list[float], ctrl: list[float]) -> list[Measurement]:
    return [Measurement("ping", "rtt_p50_ms", v, "ms", Better.LOWER, PAIR, side, r)
            for values, side in ((cand, CAND), (ctrl, CTRL)) for r, v in enumerate(values)]


def test_round_trip_times_that_jump_between_modes_are_not_a_regression_on_two_rounds() -> None:
    # seen on a harmless candidate: tens-of-microsecond RTTs land in a fast or a slow mode
    (v,) = judge_gate(paired_series(rtt([0.019, 0.019], [0.007, 0.007])), ABPolicy()).verdicts
    assert v.outcome is not Outcome.REGRESSED
    # the default prior alone (5 %) would have called it one
    strict = ABPolicy(prior_noise={})
    (old,) = judge_gate(paired_series(rtt([0.019, 0.019], [0.007, 0.007])), strict).verdicts
    assert old.outcome is Outcome.REGRESSED


def test_a_real_latency_step_still_regresses_at_once() -> None:
    # 5 ms of added delay (a netem or a detour) on a 20 µs path
    (v,) = judge_gate(paired_series(rtt([5.02, 5.03], [0.02, 0.021])), ABPolicy()).verdicts
    assert v.outcome is Outcome.REGRESSED


def jitter(cand: list[float], ctrl: list[float]) -> list[Measurement]:
    return [Measurement("bandwidth", "udp_jitter_ms", v, "ms", Better.LOWER, PAIR, side, r)
            for values, side in ((cand, CAND), (ctrl, CTRL)) for r, v in enumerate(values)]


def test_microseconds_of_udp_jitter_are_below_the_smallest_change_that_matters() -> None:
    # seen on an idle machine: 7.3 µs against 2.5 µs (+192 %), not repeated by its confirmation
    seen = paired_series(jitter([0.0073, 0.0071, 0.0075], [0.0025, 0.0026, 0.0024]))
    (v,) = judge_gate(seen, ABPolicy()).verdicts
    assert v.outcome is not Outcome.REGRESSED
    # without the smallest change and the jitter prior (before both), a regression
    (old,) = judge_gate(seen, ABPolicy(min_change={}, prior_noise={})).verdicts
    assert old.outcome is Outcome.REGRESSED


def test_a_jitter_of_milliseconds_still_regresses_and_names_its_floor_in_ms() -> None:
    (v,) = judge_gate(paired_series(jitter([1.2, 1.3, 1.25], [0.0025, 0.0026, 0.0024])),
                      ABPolicy()).verdicts
    assert v.outcome is Outcome.REGRESSED
    assert "floor 0.05 ms" in v.sentence and "%" in v.sentence


def test_another_round_measures_only_the_suites_a_round_could_still_decide() -> None:
    policy = ABPolicy(equivalence_pct=10.0)
    decided = [Measurement("storage", "seq_write_mbps", 500.0, "MB/s", Better.HIGHER, {}, side,
                           r) for r in range(2) for side in (CAND, CTRL)]  # the same: ok
    close = [bw(9.0, CAND, 0, "x"), bw(10.0, CTRL, 0, "x"), bw(9.8, CAND, 1, "x"),
             bw(9.6, CTRL, 1, "x")]
    noisy = rtt([0.030, 0.019], [0.020, 0.021])  # ±30 % a round: no round decides it soon
    verdicts = {v.suite: v for v in judge_gate(paired_series([*decided, *close, *noisy]),
                                               policy).verdicts}
    assert verdicts["storage"].outcome is Outcome.OK
    assert verdicts["bandwidth"].outcome is verdicts["ping"].outcome is Outcome.UNDECIDED
    assert verdicts["bandwidth"].more_rounds_help and not verdicts["ping"].more_rounds_help
    assert undecided_suites([*decided, *close, *noisy], policy) == {"bandwidth"}
    assert not needs_more_rounds([*decided, *noisy], 2, policy)
    # a regression anywhere ends the rounds: the run is judged and confirmed by another run
    broken = draw(np.random.default_rng(5), 2, series=3, step=0.5)
    assert judge_gate(paired_series(broken), policy).regressed
    assert undecided_suites([*broken, *close], policy) == frozenset()
