"""The bandwidth suite on a scripted testbed fed with captured iperf3 3.12 output: which tests it
runs, how it labels them, and how busy servers, refused connections, garbage and timeouts end —
retried with backoff, then an infra error, never an exception."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from certifier.domain.results import Better
from workers.suites import bandwidth
from workers.testbed.base import CommandResult, InfraError, Target

from .conftest import FakeTestbed, Responder, data, result

MakeFake = Callable[..., FakeTestbed]
ONE_TEST: dict[str, Any] = {"reverse": False, "parallel_streams": 0, "udp_rate_mbit": 0}


def _iperf_with(*client_outputs: str, udp: str | None = None,
                listening: bool = True) -> tuple[Responder, list[str]]:
    """Answers ss with "listening" and successive TCP clients with ``client_outputs``
    (the last one repeats), UDP clients with ``udp``."""
    queue = list(client_outputs)
    clients: list[str] = []
    before_server = [True]  # the first ss of a test asks whether the port is free

    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[0] == "ss":
            free = before_server[0] or not listening
            before_server[0] = False
            return result(argv, "" if free else "LISTEN 0 4096 *:5201 *:*\n")
        before_server[0] = True
        clients.append(f"[{host}] " + " ".join(argv))
        if "-u" in argv and udp is not None:
            return result(argv, udp)
        return result(argv, queue.pop(0) if len(queue) > 1 else queue[0])
    return respond, clients


def test_bandwidth_measures_receiver_rate_and_retransmits(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"))
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(duration_s=1, **ONE_TEST))
    assert res.infra_error is None
    metrics = {m.metric: m for m in res.measurements}
    assert set(metrics) == {"throughput_gbps", "retransmits", "cpu_sender_pct",
                            "cpu_receiver_pct"}
    assert metrics["throughput_gbps"].value == pytest.approx(14.966, rel=1e-3)
    assert (metrics["throughput_gbps"].unit, metrics["throughput_gbps"].better) == (
        "Gbit/s", Better.HIGHER)
    assert (metrics["retransmits"].value, metrics["retransmits"].unit) == (1836, "count")
    assert metrics["retransmits"].better is Better.LOWER
    assert (metrics["cpu_sender_pct"].unit, metrics["cpu_sender_pct"].better) == (
        "%", Better.LOWER)
    assert metrics["throughput_gbps"].labels == {"src": "h1", "dst": "h2", "protocol": "tcp",
                                                 "streams": "1"}
    assert res.tool_versions == {"iperf3": "iperf 3.12"}
    assert len(clients) == 1 and re.search(r"^\[h1\] iperf3 -c 198\.18\.0\.12 -p \d+ -J -t 1",
                                           clients[0])
    assert all(proc.poll() is not None for proc in bed.spawned)  # the server was killed


def test_bandwidth_default_profile_runs_both_directions_parallel_and_udp(
        fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"), udp=data("iperf3_udp_lossy.json"))
    res = bandwidth.run(fake_testbed(respond), bandwidth.BandwidthOptions(duration_s=1))
    assert res.infra_error is None
    assert [c.split(" -p")[0] for c in clients] == ["[h1] iperf3 -c 198.18.0.12"] * 3 + [
        "[h2] iperf3 -c 198.18.0.11"]  # the reverse swaps the roles
    assert "-P 4" in clients[1] and clients[2].endswith("-u -b 100M")
    series = {(m.metric, m.labels["src"], m.labels["dst"], m.labels["protocol"],
               m.labels["streams"]) for m in res.measurements}
    assert {("throughput_gbps", "h1", "h2", "tcp", "1"),
            ("throughput_gbps", "h2", "h1", "tcp", "1"),
            ("throughput_gbps", "h1", "h2", "tcp", "4"),
            ("udp_throughput_gbps", "h1", "h2", "udp", "1"),
            ("udp_jitter_ms", "h1", "h2", "udp", "1"),
            ("udp_loss_pct", "h1", "h2", "udp", "1")} <= series
    udp = {m.metric: m for m in res.measurements if m.labels["protocol"] == "udp"}
    assert udp["udp_loss_pct"].value == pytest.approx(48.6, abs=0.1)
    assert (udp["udp_jitter_ms"].unit, udp["udp_jitter_ms"].better) == ("ms", Better.LOWER)
    assert udp["udp_throughput_gbps"].value == pytest.approx(0.0974, rel=1e-2)
    assert "retransmits" not in {m.metric for m in res.measurements
                                 if m.labels["protocol"] == "udp"}


def _ports(clients: list[str]) -> list[int]:
    return [int(re.search(r"-p (\d+)", c).group(1)) for c in clients]  # type: ignore[union-attr]


def test_every_test_gets_its_own_port_from_the_tags_window(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"))
    bed = fake_testbed(respond)
    bandwidth.run(bed, bandwidth.BandwidthOptions(pairs="all"))
    ports = _ports(clients)
    assert len(ports) == len(set(ports)) == 4  # 2 pairs both ways, parallel and udp forward
    assert all(bed._port_base <= p < bed._port_base + 32 for p in ports)


def test_bandwidth_all_pairs_tests_both_directions_once(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"))
    res = bandwidth.run(fake_testbed(respond),
                        bandwidth.BandwidthOptions(pairs="all", parallel_streams=0,
                                                   udp_rate_mbit=0))
    assert len(clients) == 2
    assert [(m.labels["src"], m.labels["dst"]) for m in res.measurements
            if m.metric == "throughput_gbps"] == [("h1", "h2"), ("h2", "h1")]


def test_bandwidth_named_pairs_pick_the_network(fake_testbed: MakeFake) -> None:
    targets = [Target("h1", "h2", "198.18.11.12", "data", 1500),
               Target("h1", "h2", "198.18.20.12", "tenant", 1450)]
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"))
    res = bandwidth.run(fake_testbed(respond, targets), bandwidth.BandwidthOptions(
        pairs=("h1->h2@tenant",), **ONE_TEST))
    assert "-c 198.18.20.12" in clients[0]
    assert res.measurements[0].labels["net"] == "tenant"
    missing = bandwidth.run(fake_testbed(respond, targets), bandwidth.BandwidthOptions(
        pairs=("h2->h1@data",), **ONE_TEST))
    assert missing.infra_error is not None and "no such path" in missing.infra_error


def test_bandwidth_busy_server_is_retried_then_succeeds(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_busy.json"), data("iperf3_tcp_ok.json"))
    res = bandwidth.run(fake_testbed(respond),
                        bandwidth.BandwidthOptions(retries=2, **ONE_TEST))
    assert res.infra_error is None and len(clients) == 2
    assert "server is busy" in res.log
    assert _ports(clients)[0] != _ports(clients)[1]  # a retry uses a fresh server and port


@pytest.mark.parametrize("fixture", ["iperf3_busy.json", "iperf3_refused.json"])
def test_bandwidth_gives_up_after_the_retries_with_backoff(
        fake_testbed: MakeFake, fixture: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(bandwidth, "_pause", sleeps.append)
    respond, clients = _iperf_with(data(fixture))
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(retries=3, **ONE_TEST))
    assert len(clients) == 4
    assert sleeps == [0.2, 0.4, 0.8]
    assert res.infra_error is not None and res.infra_error.startswith("iperf3 h1->h2: ")
    assert res.measurements == []
    assert all(proc.poll() is not None for proc in bed.spawned)


def test_a_server_that_never_listens_is_retried_then_an_infra_error(
        fake_testbed: MakeFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bandwidth, "LISTEN_TIMEOUT_S", 0.1)
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"), listening=False)
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(retries=1, **ONE_TEST))
    assert clients == [] and len(bed.spawned) == 2
    assert res.infra_error is not None and "did not start listening" in res.infra_error


def test_a_port_someone_else_listens_on_is_skipped(fake_testbed: MakeFake) -> None:
    asked: list[int] = []

    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[0] == "ss":
            port = int(argv[-1].lstrip(":"))
            taken = not asked  # the first port asked about is someone else's
            asked.append(port)
            return result(argv, "LISTEN 0 4096 *:x *:*\n" if taken or asked.count(port) > 1
                          else "")
        return result(argv, data("iperf3_tcp_ok.json"))
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(**ONE_TEST))
    assert res.infra_error is None, res.log
    assert asked[1] == asked[0] + 1 and asked[2] == asked[1]  # skipped, then waited on


@pytest.mark.parametrize("output", [
    "",
    "garbage\n",
    data("iperf3_tcp_ok.json")[:1000],
])
def test_bandwidth_bad_output_is_an_infra_error_without_retry(fake_testbed: MakeFake,
                                                              output: str) -> None:
    respond, clients = _iperf_with(output)
    res = bandwidth.run(fake_testbed(respond), bandwidth.BandwidthOptions())
    assert res.infra_error is not None and "JSON" in res.infra_error
    assert len(clients) == 1


def test_bandwidth_client_timeout_is_an_infra_error_and_kills_the_server(
        fake_testbed: MakeFake) -> None:
    calls = [0]

    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[0] == "ss":
            calls[0] += 1
            return result(argv, "" if calls[0] == 1 else "LISTEN 0 4096 *:5201 *:*\n")
        raise InfraError("iperf3 timed out after 19 s: iperf3 -c ...")
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions())
    assert res.infra_error is not None and "timed out" in res.infra_error
    assert all(proc.poll() is not None for proc in bed.spawned)


@pytest.mark.parametrize("bad", [
    {"pairs": "some"}, {"pairs": ("h1-h2",)}, {"streams": 0}, {"parallel_streams": -1},
    {"udp_rate_mbit": -1}, {"duration_s": 0}, {"retries": -1},
])
def test_bad_options_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        bandwidth.BandwidthOptions(**bad)  # type: ignore[arg-type]
