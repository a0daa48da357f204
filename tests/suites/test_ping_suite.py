"""The ping suite on a scripted testbed fed with captured real output: every target measured,
a cut-off host is a failed check, an MTU mismatch is a failed check, broken tools are infra
errors, never exceptions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from certifier.domain.results import Better
from workers.suites import SUITES, bandwidth, ping, storage
from workers.testbed.base import CommandResult, InfraError, Target, TestbedSpec
from workers.testbed.factory import create_testbed

from .conftest import FakeTestbed, Responder, data, result

MakeFake = Callable[..., FakeTestbed]


def test_registry_maps_each_suite_to_its_runner_and_options() -> None:
    assert SUITES["ping"] == (ping.run, ping.PingOptions)
    assert SUITES["bandwidth"] == (bandwidth.run, bandwidth.BandwidthOptions)
    assert SUITES["storage"] == (storage.run, storage.StorageOptions)


def _ping_with(text: str, returncode: int = 0, *, mtu_fits: bool = True,
               mtu_plus_one_fits: bool = False) -> Responder:
    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[:2] == ["ping", "-V"]:
            return result(argv, "ping from iputils 20221126\n")
        if "-M" in argv:
            size = int(argv[argv.index("-s") + 1])
            fits = mtu_fits if size == 1422 else mtu_plus_one_fits
            return result(argv, data("ping_mtu_fits.txt" if fits else "ping_mtu_too_big.txt"),
                          returncode=0 if fits else 1)
        return result(argv, text, returncode=returncode)
    return respond


def test_ping_all_pairs_measured_with_labels(fake_testbed: MakeFake) -> None:
    bed = fake_testbed(_ping_with(data("ping_ok.txt")))
    res = ping.run(bed, ping.PingOptions())
    assert res.infra_error is None
    assert [c.name for c in res.checks] == ["reach h1->h2", "reach h2->h1"]
    assert all(c.passed for c in res.checks)
    assert sorted((argv[0], host) for argv, host in bed.calls if argv[1] == "-D") == [
        ("ping", "h1"), ("ping", "h2")]
    assert {argv[-1] for argv, host in bed.calls if host == "h1"} == {"198.18.0.12"}
    first = {m.metric: m for m in res.measurements if m.labels["src"] == "h1"}
    assert set(first) == {"loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_p50_ms", "rtt_p99_ms",
                          "rtt_max_ms", "longest_outage_ms"}
    assert (first["loss_pct"].value, first["loss_pct"].unit) == (0.0, "%")
    assert (first["rtt_p99_ms"].unit, first["rtt_p99_ms"].better) == ("ms", Better.LOWER)
    assert first["rtt_p50_ms"].value == 0.069
    assert first["longest_outage_ms"].value == 0.0
    assert first["rtt_avg_ms"].labels == {"src": "h1", "dst": "h2"}
    assert res.tool_versions == {"ping": "iputils 20221126"}


def test_ping_longest_outage_is_the_time_between_the_answers_around_the_losses(
        fake_testbed: MakeFake) -> None:
    res = ping.run(fake_testbed(_ping_with(data("ping_partial_loss.txt"))),
                   ping.PingOptions(interval=0.05))
    outage = next(m for m in res.measurements if m.metric == "longest_outage_ms")
    # seq 6 answered at …730.676822, seq 13 at …731.068847, less one interval: ping really
    # sent every 56 ms, so the six lost packets were 342 ms of silence, not 6 x 50 ms.
    assert outage.value == pytest.approx((731.068847 - 730.676822 - 0.05) * 1000, abs=0.01)
    assert all(c.passed for c in res.checks)  # some loss is a measurement, not a failure


@pytest.mark.parametrize(("fixture", "why"), [
    ("ping_total_loss.txt", "100% loss"),
    ("ping_unreachable.txt", "100% loss (Network is unreachable)"),
])
def test_ping_unreachable_host_is_a_failed_check(fake_testbed: MakeFake, fixture: str,
                                                 why: str) -> None:
    res = ping.run(fake_testbed(_ping_with(data(fixture), returncode=1)), ping.PingOptions())
    assert res.infra_error is None
    check = res.checks[0]
    assert not check.passed
    assert check.message == f"h1 cannot reach h2 (198.18.0.12): {why}"
    assert [m.metric for m in res.measurements if m.labels["src"] == "h1"] == ["loss_pct"]


def _overlay_targets() -> list[Target]:
    return [Target("h1", "h2", "198.18.20.12", "tenant", 1450),
            Target("h2", "h1", "198.18.20.11", "tenant", 1450)]


def test_ping_checks_the_mtu_where_the_testbed_knows_it(fake_testbed: MakeFake) -> None:
    bed = fake_testbed(_ping_with(data("ping_ok.txt")), _overlay_targets())
    res = ping.run(bed, ping.PingOptions())
    assert res.infra_error is None
    assert [(c.name, c.passed) for c in res.checks] == [
        ("reach h1->h2 via tenant", True), ("mtu h1->h2 via tenant", True),
        ("reach h2->h1 via tenant", True), ("mtu h2->h1 via tenant", True)]
    probes = sorted(argv[argv.index("-s") + 1] for argv, _ in bed.calls if "-M" in argv)
    assert probes == ["1422", "1422", "1423", "1423"]
    assert {m.labels["net"] for m in res.measurements} == {"tenant"}


@pytest.mark.parametrize(("fits", "plus_one", "message"), [
    (False, False, "cannot send a 1450-byte packet to h2 (198.18.20.12) unfragmented"),
    (True, True, "its MTU is larger than the planned 1450"),
])
def test_ping_mtu_mismatch_is_a_failed_check(fake_testbed: MakeFake, fits: bool,
                                             plus_one: bool, message: str) -> None:
    responder = _ping_with(data("ping_ok.txt"), mtu_fits=fits, mtu_plus_one_fits=plus_one)
    res = ping.run(fake_testbed(responder, _overlay_targets()), ping.PingOptions())
    failed = [c for c in res.checks if not c.passed]
    assert [c.name for c in failed] == ["mtu h1->h2 via tenant", "mtu h2->h1 via tenant"]
    assert message in failed[0].message


def test_a_full_size_packet_lost_once_is_not_an_mtu_mismatch(fake_testbed: MakeFake) -> None:
    # seen on a busy testbed with a 2 % packet drop: one lost full-size packet read as "the
    # path MTU is smaller than planned", twice in a row, and rejected the candidate for it
    lost = {"h1": 1, "h2": 3}  # h1's first full-size packet is lost; all three of h2's

    def respond(argv: list[str], host: str | None) -> CommandResult:
        if "-M" in argv and argv[argv.index("-s") + 1] == "1422" and host and lost[host]:
            lost[host] -= 1
            return result(argv, data("ping_total_loss.txt"), returncode=1)
        return _ping_with(data("ping_ok.txt"))(argv, host)

    bed = fake_testbed(respond, _overlay_targets())
    res = ping.run(bed, ping.PingOptions())
    checks = {c.name: c for c in res.checks}
    assert checks["mtu h1->h2 via tenant"].passed
    assert not checks["mtu h2->h1 via tenant"].passed
    assert "(3 sent, none came back)" in checks["mtu h2->h1 via tenant"].message
    full = [host for argv, host in bed.calls if "-M" in argv and "1422" in argv]
    assert sorted(full) == ["h1", "h1", "h2", "h2", "h2"]


def test_ping_mtu_check_can_be_turned_off(fake_testbed: MakeFake) -> None:
    bed = fake_testbed(_ping_with(data("ping_ok.txt")), _overlay_targets())
    res = ping.run(bed, ping.PingOptions(mtu_check=False))
    assert [c.name for c in res.checks] == ["reach h1->h2 via tenant", "reach h2->h1 via tenant"]
    assert not any("-M" in argv for argv, _ in bed.calls)


def test_ping_garbage_is_an_infra_error(fake_testbed: MakeFake) -> None:
    res = ping.run(fake_testbed(_ping_with("ping: socket: Operation not permitted\n", 2)),
                   ping.PingOptions())
    assert res.infra_error is not None and "Operation not permitted" in res.infra_error
    assert res.checks == [] and res.measurements == []


def test_ping_timeout_is_an_infra_error(fake_testbed: MakeFake) -> None:
    def respond(argv: list[str], host: str | None) -> CommandResult:
        raise InfraError("ping timed out after 11 s: ping ...")
    res = ping.run(fake_testbed(respond), ping.PingOptions())
    assert res.infra_error == "ping timed out after 11 s: ping ..."


def test_ping_missing_binary_is_an_infra_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without ping on a real testbed
    spec = TestbedSpec(name="t", driver="local")
    with create_testbed(spec, tag="nopath", state_dir=tmp_path / "s",
                        records_dir=tmp_path / "r") as bed:
        res = ping.run(bed, ping.PingOptions(count=1))
    assert res.infra_error is not None and "ping is not installed" in res.infra_error
