"""The environment check's judgement: a run's host figures against its testbed's usual range.

Table-driven: each row is a history, this run's figures, and what the judgement must say.
"""

from __future__ import annotations

from typing import Any

import pytest

from certifier.domain.environment import (
    Deviation,
    EnvironmentPolicy,
    apply,
    assess,
    judge_environment,
    judged_figures,
    only_too_busy,
    run_line,
    summary_line,
)
from certifier.domain.judgement import Excuse, RunJudgement, Verdict

POLICY = EnvironmentPolicy()
QUIET = [{"background_cpu_pressure_pct": v, "probe_tcp_gbps": g}
         for v, g in ((2.0, 9.8), (1.5, 10.1), (2.5, 9.9), (2.0, 10.0), (3.0, 9.7), (1.0, 10.2))]
NOISY = [{"cpu_pressure_pct": v} for v in (10.0, 30.0, 20.0, 40.0, 25.0, 35.0)]


@pytest.mark.parametrize(("name", "history", "figures", "message"), [
    ("an idle history does not turn a small blip into too busy",
     QUIET, {"background_cpu_pressure_pct": 5.0}, None),
    ("a rise beyond the usual range and its floor is too busy",
     QUIET, {"background_cpu_pressure_pct": 40.0},
     "testbed too busy: cpu pressure 40 % vs usual 2 %"),
    ("the ceiling refuses whatever the history says",
     [{"background_cpu_pressure_pct": 60.0}] * 6, {"background_cpu_pressure_pct": 63.0},
     "testbed too busy: cpu pressure 63 % vs usual 60 % (ceiling 50 %)"),
    ("the ceiling applies without any history",
     [], {"background_cpu_pressure_pct": 63.0},
     "testbed too busy: cpu pressure 63 % (ceiling 50 %)"),
    ("below min_history only the ceiling counts",
     QUIET[:4], {"background_cpu_pressure_pct": 40.0}, None),
    ("a noisy history allows its own spread",
     NOISY, {"cpu_pressure_pct": 60.0}, None),
    ("far beyond a noisy history's spread is too busy",
     NOISY, {"cpu_pressure_pct": 99.0},
     "testbed too busy: cpu pressure during the suites 99 % vs usual 28 %"),
    ("a probe that lost most of its bandwidth is too busy",
     QUIET, {"probe_tcp_gbps": 4.0},
     "testbed too busy: probe bandwidth 4 Gbit/s vs usual 9.9 Gbit/s"),
    ("a probe faster than usual is fine (lower is worse only)",
     QUIET, {"probe_tcp_gbps": 30.0}, None),
    ("a figure the history never had is judged by its ceiling only",
     QUIET, {"cpu_steal_pct": 20.0}, None),
    ("several deviations are all named",
     QUIET, {"background_cpu_pressure_pct": 70.0, "probe_tcp_gbps": 2.0},
     "testbed too busy: cpu pressure 70 % vs usual 2 % (ceiling 50 %); "
     "probe bandwidth 2 Gbit/s vs usual 9.9 Gbit/s"),
])
def test_judgement(name: str, history: list[dict[str, float]], figures: dict[str, float],
                   message: str | None) -> None:
    excuse = judge_environment(figures, history, POLICY)
    assert (excuse.message if excuse else None) == message, name
    if excuse is not None:
        assert (excuse.kind, excuse.subject) == ("infra_error", "environment")


def test_a_disabled_check_excuses_nothing() -> None:
    assert judge_environment({"background_cpu_pressure_pct": 99.0}, [],
                             EnvironmentPolicy(enabled=False)) is None


def test_floors_and_ceilings_can_be_overridden_per_figure() -> None:
    policy = EnvironmentPolicy(floors={"background_cpu_pressure_pct": 1.0},
                               ceilings={"background_cpu_pressure_pct": None})
    assert judge_environment({"background_cpu_pressure_pct": 63.0}, [], policy) is None
    assert judge_environment({"background_cpu_pressure_pct": 5.0}, QUIET, policy) is not None


def test_only_the_newest_window_of_history_counts() -> None:
    history = QUIET + [{"background_cpu_pressure_pct": 45.0}] * 20  # newest first: quiet ones
    policy = EnvironmentPolicy(window=6)
    assert judge_environment({"background_cpu_pressure_pct": 40.0}, history, policy) is not None


def unusual(figures: dict[str, float], history: list[dict[str, float]],
            policy: EnvironmentPolicy, controlled: bool = False) -> list[Deviation]:
    """What the check notes of a run instead of refusing it."""
    return assess(figures, history, policy, controlled)[1]


def test_a_run_with_controls_is_refused_by_ceilings_only_and_the_rest_is_noted() -> None:
    """Its controls share the testbed's load: a figure out of the usual range is noted, not
    refused; a ceiling still refuses; ``controlled="usual"`` judges it as a one-sided run."""
    loud = {"background_cpu_pressure_pct": 40.0, "probe_tcp_gbps": 2.0}
    assert judge_environment(loud, QUIET, POLICY, controlled=True) is None
    assert [d.describe() for d in unusual(loud, QUIET, POLICY, controlled=True)] == [
        "cpu pressure 40 % vs usual 2 %", "probe bandwidth 2 Gbit/s vs usual 9.9 Gbit/s"]
    over = judge_environment({**loud, "background_cpu_pressure_pct": 63.0}, QUIET, POLICY,
                             controlled=True)
    assert over is not None and over.message == ("testbed too busy: cpu pressure 63 % vs usual "
                                                  "2 % (ceiling 50 %)")
    assert unusual({**loud, "background_cpu_pressure_pct": 63.0}, QUIET, POLICY,
                   controlled=True) == []  # refused: nothing is "judged against its controls"
    strict = EnvironmentPolicy(controlled="usual")
    assert judge_environment(loud, QUIET, strict, controlled=True) is not None
    assert unusual(loud, QUIET, strict, controlled=True) == []
    assert unusual(loud, QUIET, POLICY) == []  # a one-sided run: refused, nothing to note
    assert unusual(loud, QUIET, EnvironmentPolicy(enabled=False), controlled=True) == []


def test_only_a_run_refused_for_nothing_but_the_environment_is_too_busy() -> None:
    busy = Excuse("infra_error", "environment", "testbed too busy: cpu pressure 63 %")
    broken = Excuse("infra_error", "testbed", "testbed: could not create namespace")
    assert only_too_busy([busy])
    assert not only_too_busy([broken, busy]) and not only_too_busy([])


def test_the_run_line_adds_what_was_unusual_for_a_run_with_controls() -> None:
    assert run_line({**STORED, "unusual": ["cpu pressure 40 % vs usual 2 %"]}) == (
        summary_line(judged_figures(STORED)) + "; unusual for this testbed, so judged against "
        "its controls only: cpu pressure 40 % vs usual 2 %")
    assert run_line(STORED) == summary_line(judged_figures(STORED))
    assert run_line(None) == "" and run_line({"unusual": "garbage"}) == ""


def test_the_excuse_carries_each_deviation_as_data() -> None:
    excuse = judge_environment({"background_cpu_pressure_pct": 40.0}, QUIET, POLICY)
    assert excuse is not None
    (deviation,) = excuse.data["deviations"]
    assert deviation["figure"] == "background_cpu_pressure_pct"
    assert deviation["value"] == 40.0 and deviation["usual"] == 2.0
    assert deviation["reason"] == "usual range"
    assert excuse.data["history_runs"] == len(QUIET)


BUSY = Excuse("infra_error", "environment", "testbed too busy: cpu pressure 63 %")
FAILED_CHECK = Excuse("check", "ping.reach h1->h2", "ping check 'reach h1->h2' failed")
REGRESSION = Excuse("regression", "bandwidth.throughput_gbps", "bandwidth -31 %")
TOOL = Excuse("infra_error", "storage", "storage: fio missing")


@pytest.mark.parametrize(("before", "excuse", "after"), [
    (RunJudgement(Verdict.PASSED, ()), BUSY, RunJudgement(Verdict.INFRA_ERROR, (BUSY,))),
    (RunJudgement(Verdict.REGRESSED, (REGRESSION,)), BUSY,
     RunJudgement(Verdict.INFRA_ERROR, (BUSY,))),
    (RunJudgement(Verdict.FAILED, (FAILED_CHECK,)), BUSY,
     RunJudgement(Verdict.FAILED, (FAILED_CHECK,))),
    (RunJudgement(Verdict.INFRA_ERROR, (TOOL,)), BUSY,
     RunJudgement(Verdict.INFRA_ERROR, (TOOL, BUSY))),
    (RunJudgement(Verdict.REGRESSED, (REGRESSION,)), None,
     RunJudgement(Verdict.REGRESSED, (REGRESSION,))),
], ids=["passed", "regressed", "failed-check-still-fails", "infra-error", "no-excuse"])
def test_applying_the_excuse_to_a_run_judgement(before: RunJudgement, excuse: Excuse | None,
                                                after: RunJudgement) -> None:
    assert apply(before, excuse) == after


STORED: dict[str, Any] = {
    "version": 1,
    "host": {"cpu_pressure_pct": 12.5, "io_pressure_pct": None, "load_per_core": 0.4,
             "notes": ["io pressure: not available"]},
    "probes": {
        "start": {"probe_tcp_gbps": 9.0, "probe_rtt_ms": 0.05,
                  "background": {"cpu_pressure_pct": 3.0}},
        "end": {"probe_tcp_gbps": 7.0, "probe_rtt_ms": 0.04,
                "background": {"cpu_pressure_pct": 8.0}},
        "broken": "garbage",
    },
}


def test_judged_figures_average_the_probes_and_skip_what_is_missing() -> None:
    assert judged_figures(STORED) == {
        "cpu_pressure_pct": 12.5, "load_per_core": 0.4, "probe_tcp_gbps": 8.0,
        "probe_rtt_ms": 0.045, "background_cpu_pressure_pct": 5.5}


@pytest.mark.parametrize("stored", [None, "text", {"host": [1, 2]}, {"probes": {"a": 3}},
                                    {"host": {"cpu_pressure_pct": "12"}},
                                    {"host": {"cpu_pressure_pct": float("nan")}},
                                    {"host": {"cpu_pressure_pct": True}}])
def test_judged_figures_of_garbage_are_empty(stored: Any) -> None:
    assert judged_figures(stored) == {}


def test_the_summary_line_names_the_main_figures() -> None:
    assert summary_line(judged_figures(STORED)) == (
        "cpu pressure 5.5 %, cpu pressure during the suites 12 %, probe bandwidth 8 Gbit/s, "
        "probe ping rtt 0.045 ms")
