import pytest

from certifier.domain.judgement import (
    Baseline,
    FixedLimit,
    JudgementPolicy,
    Margin,
    Verdict,
    judge_run,
)
from certifier.domain.results import Better, Check, Measurement, Side, SuiteResult


def bw(value: float) -> Measurement:
    return Measurement("bandwidth", "throughput_gbps", value, "Gbit/s", Better.HIGHER,
                       {"src": "h1", "dst": "h2", "protocol": "tcp", "streams": "1"})


def rtt(value: float) -> Measurement:
    return Measurement("ping", "rtt_avg_ms", value, "ms", Better.LOWER, {"src": "h1", "dst": "h2"})


def baseline_of(*ms: Measurement, values: list[float]) -> Baseline:
    return Baseline("known-good #3", {m.key: values for m in ms})


def result(*ms: Measurement, checks: tuple[Check, ...] = ()) -> SuiteResult:
    return SuiteResult(suite=ms[0].suite if ms else "ping", measurements=list(ms),
                       checks=list(checks))


POLICY = JudgementPolicy(default_margin=Margin(max_worse_pct=20))


def test_halved_bandwidth_regresses_with_an_excuse_naming_metric_value_and_baseline() -> None:
    judged = judge_run([result(bw(0.4))], baseline_of(bw(0), values=[0.79, 0.8, 0.81]), POLICY)
    assert judged.verdict is Verdict.REGRESSED
    (excuse,) = judged.excuses
    assert excuse.kind == "regression"
    assert "bandwidth throughput_gbps h1→h2" in excuse.message
    assert "0.4 Gbit/s" in excuse.message
    assert "known-good #3 median 0.8 Gbit/s" in excuse.message
    assert "-50.0 %" in excuse.message
    assert excuse.data["worse_pct"] == pytest.approx(50.0)


def test_small_changes_within_the_margin_pass() -> None:
    judged = judge_run([result(bw(0.7))], baseline_of(bw(0), values=[0.8]), POLICY)
    assert judged.verdict is Verdict.PASSED


def test_improvements_never_regress() -> None:
    assert judge_run([result(bw(5.0))], baseline_of(bw(0), values=[0.8]), POLICY).verdict \
        is Verdict.PASSED
    assert judge_run([result(rtt(0.01))], baseline_of(rtt(0), values=[0.5]), POLICY).verdict \
        is Verdict.PASSED


def test_lower_is_better_metrics_regress_when_they_grow() -> None:
    judged = judge_run([result(rtt(2.0))], baseline_of(rtt(0), values=[1.0]), POLICY)
    assert judged.verdict is Verdict.REGRESSED
    assert "+100.0 %" in judged.excuses[0].message


def test_a_rise_of_ten_times_or_more_reads_as_a_factor() -> None:
    judged = judge_run([result(rtt(90.0))], baseline_of(rtt(0), values=[0.5]), POLICY)
    message = judged.excuses[0].message
    assert "(180\u00d7; allowed 20 % worse)" in message and "17900" not in message


def test_absolute_floor_keeps_microsecond_jitter_from_rejecting() -> None:
    policy = JudgementPolicy(margins={"ping.rtt_avg_ms": Margin(50, min_abs=1.0)})
    judged = judge_run([result(rtt(0.09))], baseline_of(rtt(0), values=[0.03]), policy)
    assert judged.verdict is Verdict.PASSED


def test_failed_check_fails_the_run_before_any_comparison() -> None:
    check = Check("ping", "reach h1->h2", False, "h1 cannot reach h2: 100% loss")
    judged = judge_run([result(bw(0.1), checks=(check,))], baseline_of(bw(0), values=[1.0]),
                       POLICY)
    assert judged.verdict is Verdict.FAILED
    assert judged.excuses[0].message == \
        "ping check 'reach h1->h2' failed: h1 cannot reach h2: 100% loss"


def test_tool_trouble_is_infra_error_and_says_which_tool() -> None:
    broken = SuiteResult(suite="bandwidth", infra_error="iperf3 is not installed")
    judged = judge_run([broken, result(bw(0.1))], baseline_of(bw(0), values=[1.0]), POLICY)
    assert judged.verdict is Verdict.INFRA_ERROR
    assert "iperf3 is not installed" in judged.excuses[0].message


def test_a_host_cut_off_fails_the_run_even_though_iperf3_could_not_connect() -> None:
    unreachable = Check("ping", "h1 reaches h2", False, "100 % loss")
    ping = SuiteResult(suite="ping", checks=[unreachable])
    iperf = SuiteResult(suite="bandwidth", infra_error="iperf3: unable to connect to server")
    judged = judge_run([ping, iperf], baseline_of(bw(0), values=[1.0]), POLICY)
    assert judged.verdict is Verdict.FAILED
    assert [e.kind for e in judged.excuses] == ["check", "infra_error"]
    assert "h1 reaches h2" in judged.excuses[0].message


def test_a_failed_check_inside_a_suite_that_hit_tool_trouble_does_not_blame_the_candidate(
) -> None:
    broken = SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False, "no ping")],
                         infra_error="ping: not installed")
    assert judge_run([broken], None, POLICY).verdict is Verdict.INFRA_ERROR


def test_bootstrap_without_baseline_judges_checks_only() -> None:
    assert judge_run([result(bw(0.01))], None, POLICY).verdict is Verdict.PASSED


def test_series_missing_from_the_baseline_are_not_compared() -> None:
    other = Measurement("bandwidth", "throughput_gbps", 0.01, "Gbit/s", Better.HIGHER,
                        {"src": "h2", "dst": "h1"})
    judged = judge_run([result(other)], baseline_of(bw(0), values=[1.0]), POLICY)
    assert judged.verdict is Verdict.PASSED


def test_fixed_limits_fail_the_run_even_without_baseline() -> None:
    policy = JudgementPolicy(limits=(FixedLimit.parse("bandwidth.throughput_gbps >= 5"),))
    judged = judge_run([result(bw(4.0))], None, policy)
    assert judged.verdict is Verdict.FAILED
    assert "breaks 'bandwidth.throughput_gbps >= 5'" in judged.excuses[0].message


@pytest.mark.parametrize("text", ["bandwidth >= 5", "bandwidth.throughput_gbps => 5",
                                  "x.y >= five", "__import__('os').system('x') >= 1"])
def test_limits_are_parsed_not_evaluated(text: str) -> None:
    with pytest.raises(ValueError, match="not a limit"):
        FixedLimit.parse(text)


def test_the_control_side_of_an_ab_run_is_not_judged_as_the_candidate_s() -> None:
    def rate(value: float, side: Side) -> Measurement:
        return Measurement("bandwidth", "throughput_gbps", value, "Gbit/s", Better.HIGHER,
                           side=side)

    results = [SuiteResult("bandwidth", measurements=[rate(0.4, Side.CANDIDATE)]),
               SuiteResult("control.bandwidth", measurements=[rate(0.8, Side.CONTROL)])]
    baseline = Baseline("known-good #1", {rate(0.8, Side.CANDIDATE).key: [0.8, 0.8]})
    judgement = judge_run(results, baseline, JudgementPolicy())
    assert judgement.verdict is Verdict.REGRESSED
    assert judgement.excuses[0].data["value"] == 0.4  # not the median of both sides
