"""The A/B round loop (workers/abrounds.py) with scripted suites: which side goes first, how
many rounds, what a failure on either side becomes, and which runs are A/B at all."""

from __future__ import annotations

from certifier.domain.results import Better, Check, Measurement, Side, SuiteResult
from certifier.settings import AbConfig
from certifier.topology import parse as parse_topology
from workers import abrounds
from workers.suites.bandwidth import BandwidthOptions
from workers.suites.ping import PingOptions
from workers.suites.storage import StorageOptions
from workers.testbed.base import TestbedSpec


class Suites:
    """Scripted suites: each call is recorded; ``fail`` makes one side's check fail."""

    def __init__(self, fail: dict[Side, str] | None = None, infra: Side | None = None) -> None:
        self.calls: list[tuple[str, Side]] = []
        self.fail = fail or {}
        self.infra = infra

    def __call__(self, name: str, side: Side) -> SuiteResult:
        self.calls.append((name, side))
        value = 1.0 if side is Side.CANDIDATE else 2.0
        broken = self.fail.get(side)
        return SuiteResult(
            name,
            [Check(name, "reach h1->h2", broken is None, broken or "")],
            [Measurement(name, "rtt_avg_ms", value, "ms", Better.LOWER, {"src": "h1"})],
            infra_error="iperf3 is missing" if side is self.infra else None)


def _measure(suites: Suites, rounds: abrounds.Rounds,
             names: tuple[str, ...] = ("ping", "bandwidth")) -> tuple[list[SuiteResult], int]:
    return abrounds.measure(names, suites, rounds, lambda _: None)


def test_rounds_alternate_which_side_goes_first_and_tag_every_measurement() -> None:
    suites = Suites()
    results, done = _measure(suites, abrounds.Rounds(3, 3))
    c, k = Side.CANDIDATE, Side.CONTROL
    assert done == 3
    assert suites.calls == [("ping", c), ("ping", k), ("bandwidth", c), ("bandwidth", k),
                            ("ping", k), ("ping", c), ("bandwidth", k), ("bandwidth", c),
                            ("ping", c), ("ping", k), ("bandwidth", c), ("bandwidth", k)]
    tagged = [(r.suite, m.side, m.round) for r in results for m in r.measurements]
    assert tagged[:4] == [("ping", c, 0), ("control.ping", k, 0), ("bandwidth", c, 0),
                          ("control.bandwidth", k, 0)]
    assert tagged[4:6] == [("control.ping", k, 1), ("ping", c, 1)]
    assert {m.suite for r in results for m in r.measurements} == {"ping", "bandwidth"}


def test_later_rounds_keep_only_the_candidate_s_failed_checks_and_never_the_control_s_passes(
) -> None:
    results, _ = _measure(Suites(), abrounds.Rounds(2, 2), names=("ping",))
    checks = [(r.suite, len(r.checks)) for r in results]
    assert checks == [("ping", 1), ("control.ping", 0), ("control.ping", 0), ("ping", 0)]


def test_after_min_rounds_the_callback_decides_and_max_rounds_caps_it() -> None:
    asked: list[tuple[int, int]] = []

    def more(measurements: list[Measurement], rounds_done: int) -> bool:
        asked.append((rounds_done, len(measurements)))
        return True

    _, done = _measure(Suites(), abrounds.Rounds(2, 4, more), names=("ping",))
    assert done == 4
    assert asked == [(2, 4), (3, 6)]  # both sides' measurements so far; never past the cap


def test_the_callback_stops_the_rounds_when_it_says_no() -> None:
    _, done = _measure(Suites(), abrounds.Rounds(2, 6, lambda ms, n: n < 3), names=("ping",))
    assert done == 3


def test_rounds_past_the_minimum_measure_only_the_suites_the_callback_names() -> None:
    notes: list[str] = []
    suites = Suites()
    rounds = abrounds.Rounds(2, 3, lambda ms, n: frozenset({"bandwidth"}))
    results, done = abrounds.measure(("ping", "bandwidth", "storage"), suites, rounds,
                                     notes.append)
    assert done == 3
    third = [(name, side) for name, side in suites.calls[12:]]
    assert third == [("bandwidth", Side.CANDIDATE), ("bandwidth", Side.CONTROL)]
    assert {(m.suite, m.round) for r in results for m in r.measurements} == {
        (s, r) for s in ("ping", "bandwidth", "storage") for r in (0, 1)} | {("bandwidth", 2)}
    assert ("A/B: round 2 measures bandwidth only: the series of ping, storage are decided, "
            "or left to the soak" in notes)


def test_an_empty_set_of_suites_ends_the_rounds() -> None:
    suites = Suites()
    _, done = _measure(suites, abrounds.Rounds(2, 5, lambda ms, n: frozenset()))
    assert done == 2 and len(suites.calls) == 8


def test_soak_runs_measure_a_fixed_number_of_rounds_without_asking() -> None:
    config = AbConfig(soak_rounds=3, min_rounds=1, max_rounds=6)

    def never(measurements: list[Measurement], rounds_done: int) -> bool:
        raise AssertionError("soak rounds are fixed")

    rounds = abrounds.rounds_for(config, "soak", never)
    _, done = _measure(Suites(), rounds, names=("ping",))
    assert done == 3


def test_a_failed_candidate_check_stops_after_its_round_and_stays_the_candidate_s() -> None:
    results, done = _measure(Suites(fail={Side.CANDIDATE: "100% loss"}), abrounds.Rounds(2, 6))
    assert done == 1
    failed = [(r.suite, c.name) for r in results for c in r.checks if not c.passed]
    assert failed == [("ping", "reach h1->h2"), ("bandwidth", "reach h1->h2")]
    assert all(r.infra_error is None for r in results)


def test_a_failed_control_check_is_an_infra_error_of_the_control_not_a_failed_check() -> None:
    results, done = _measure(Suites(fail={Side.CONTROL: "100% loss"}), abrounds.Rounds(2, 6),
                             names=("ping",))
    assert done == 1
    control = next(r for r in results if r.suite == "control.ping")
    assert control.infra_error == ("the known-good failed on the control testbed, so the "
                                   "testbed is broken, not the candidate: reach h1->h2 "
                                   "(100% loss)")
    assert [c.suite for c in control.checks] == ["control.ping"]


def test_a_tool_failure_on_the_control_is_an_infra_error_naming_the_control() -> None:
    results, _ = _measure(Suites(infra=Side.CONTROL), abrounds.Rounds(2, 6), names=("ping",))
    control = next(r for r in results if r.suite == "control.ping")
    assert control.infra_error == "control testbed: iperf3 is missing"


def test_gate_soak_and_bisect_runs_on_a_known_good_are_ab_and_baseline_bootstrap_are_not(
) -> None:
    config, spec = AbConfig(), TestbedSpec(name="bed")
    assert [abrounds.single_sided_because(config, kind, True, spec)
            for kind in ("gate", "soak", "bisect")] == [None, None, None]
    assert abrounds.single_sided_because(config, "baseline", True, spec) == (
        "baseline runs are not A/B runs (ab.run_kinds)")
    assert abrounds.single_sided_because(config, "gate", False, spec) == (
        "there is no known-good to compare with yet")
    assert abrounds.single_sided_because(AbConfig(enabled=False), "gate", True, spec) == (
        "A/B runs are off (ab.enabled: false)")


def test_a_topology_with_a_root_namespace_controller_link_stays_single_sided() -> None:
    topology = parse_topology({"hosts": ["a", "b"], "controller": {"network": "lan"},
                               "networks": [{"name": "lan", "subnet": "198.18.40.0/24",
                                             "links": ["a", "b"]}]})
    reason = abrounds.single_sided_because(AbConfig(), "gate", True,
                                           TestbedSpec(name="bed", topology=topology))
    assert reason is not None and "root namespace" in reason


def test_split_rounds_each_measure_their_share_of_the_configured_time() -> None:
    rounds = abrounds.rounds_for(AbConfig(min_rounds=2), "gate", abrounds.stop_at_min)
    assert rounds.share == 2
    assert abrounds.round_options("ping", PingOptions(count=20), rounds.share).count == 10
    assert abrounds.round_options("bandwidth", BandwidthOptions(duration_s=10),
                                  rounds.share).duration_s == 5
    assert abrounds.round_options("storage", StorageOptions(runtime_s=2),
                                  rounds.share).runtime_s == 1


def test_a_split_round_measures_whole_seconds_rounded_down() -> None:
    # iperf3 measures whole seconds: 1.5 s would be 2 s, and 2 rounds would cost 4 s a side.
    assert abrounds.round_options("bandwidth", BandwidthOptions(duration_s=3), 2).duration_s == 1
    assert abrounds.round_options("ping", PingOptions(count=25), 2).count == 12


def test_a_split_round_never_measures_less_than_its_floor() -> None:
    assert abrounds.round_options("ping", PingOptions(count=6), 3).count == 5
    assert abrounds.round_options("bandwidth", BandwidthOptions(duration_s=2),
                                  3).duration_s == 1


def test_a_configured_time_below_the_floor_is_kept_as_it_is() -> None:
    assert abrounds.round_options("ping", PingOptions(count=3), 2).count == 3


def test_full_round_time_and_soak_rounds_set_the_share() -> None:
    full = AbConfig(round_time="full")
    assert abrounds.rounds_for(full, "gate", abrounds.stop_at_min).share == 1
    assert abrounds.rounds_for(AbConfig(soak_rounds=3), "soak", abrounds.stop_at_min).share == 3
    options = BandwidthOptions(duration_s=3)
    assert abrounds.round_options("bandwidth", options, 1) is options
