"""Suites turn broken tools into infra_error, never an exception, and a cut-off host into a
failed check. The tools are scripted through a fake testbed, fed with captured real output."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from certifier.domain.results import Better
from workers.suites import SUITES, bandwidth, ping, storage
from workers.testbed.base import CommandResult, InfraError, TestbedSpec, create_testbed

from .conftest import DATA, FakeTestbed, Responder, data, result

MakeFake = Callable[[Responder], FakeTestbed]


def test_registry_maps_each_suite_to_its_runner_and_options() -> None:
    assert SUITES["ping"] == (ping.run, ping.PingOptions)
    assert SUITES["bandwidth"] == (bandwidth.run, bandwidth.BandwidthOptions)
    assert SUITES["storage"] == (storage.run, storage.StorageOptions)


# -- ping --------------------------------------------------------------------------------------

def _ping_with(text: str, returncode: int = 0) -> Responder:
    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[:2] == ["ping", "-V"]:
            return result(argv, "ping from iputils 20221126\n")
        return result(argv, text, returncode=returncode)
    return respond


def test_ping_all_pairs_measured_with_labels(fake_testbed: MakeFake) -> None:
    bed = fake_testbed(_ping_with(data("ping_ok.txt")))
    res = ping.run(bed, ping.PingOptions())
    assert res.infra_error is None
    assert [c.name for c in res.checks] == ["reach h1->h2", "reach h2->h1"]
    assert all(c.passed for c in res.checks)
    assert [(argv[0], host) for argv, host in bed.calls[:2]] == [("ping", "h1"), ("ping", "h2")]
    assert bed.calls[0][0][-1] == "198.18.0.12"
    first = {m.metric: m for m in res.measurements if m.labels["src"] == "h1"}
    assert set(first) >= {"loss_pct", "rtt_avg_ms", "rtt_p99_ms", "rtt_max_ms"}
    assert (first["loss_pct"].value, first["loss_pct"].unit) == (0.0, "%")
    assert (first["rtt_p99_ms"].unit, first["rtt_p99_ms"].better) == ("ms", Better.LOWER)
    assert first["rtt_avg_ms"].labels == {"src": "h1", "dst": "h2"}
    assert res.tool_versions == {"ping": "iputils 20221126"}


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


def test_ping_garbage_is_an_infra_error(fake_testbed: MakeFake) -> None:
    res = ping.run(fake_testbed(_ping_with("ping: socket: Operation not permitted\n", 2)),
                   ping.PingOptions())
    assert res.infra_error is not None and "Operation not permitted" in res.infra_error
    assert res.checks == []


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


# -- bandwidth -------------------------------------------------------------------------------

def _iperf_with(*client_outputs: str) -> tuple[Responder, list[str]]:
    """Answers ss with "listening" and successive iperf3 clients with ``client_outputs``."""
    queue = list(client_outputs)
    clients: list[str] = []

    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[0] == "ss":
            return result(argv, "LISTEN 0 4096 *:5201 *:*\n")
        clients.append(" ".join(argv))
        return result(argv, queue.pop(0) if len(queue) > 1 else queue[0])
    return respond, clients


def test_bandwidth_measures_receiver_rate_and_retransmits(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"))
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(duration_s=1))
    assert res.infra_error is None
    metrics = {m.metric: m for m in res.measurements}
    assert metrics["throughput_gbps"].value == pytest.approx(14.966, rel=1e-3)
    assert (metrics["throughput_gbps"].unit, metrics["throughput_gbps"].better) == (
        "Gbit/s", Better.HIGHER)
    assert (metrics["retransmits"].value, metrics["retransmits"].unit) == (1836, "count")
    assert metrics["retransmits"].better is Better.LOWER
    assert metrics["throughput_gbps"].labels == {"src": "h1", "dst": "h2", "protocol": "tcp",
                                                 "streams": "1"}
    assert res.tool_versions == {"iperf3": "iperf 3.12"}
    assert len(clients) == 1 and re.search(r"-c 198\.18\.0\.12 -p \d+ -J -t 1", clients[0])
    assert all(proc.poll() is not None for proc in bed.spawned)  # the server was killed


def test_bandwidth_all_pairs_tests_both_directions(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_tcp_ok.json"))
    res = bandwidth.run(fake_testbed(respond), bandwidth.BandwidthOptions(pairs="all"))
    assert len(clients) == 2
    assert [(m.labels["src"], m.labels["dst"]) for m in res.measurements
            if m.metric == "throughput_gbps"] == [("h1", "h2"), ("h2", "h1")]


def test_bandwidth_busy_server_is_retried_then_succeeds(fake_testbed: MakeFake) -> None:
    respond, clients = _iperf_with(data("iperf3_busy.json"), data("iperf3_tcp_ok.json"))
    res = bandwidth.run(fake_testbed(respond), bandwidth.BandwidthOptions(retries=2))
    assert res.infra_error is None and len(clients) == 2
    assert "server is busy" in res.log


@pytest.mark.parametrize("fixture", ["iperf3_busy.json", "iperf3_refused.json"])
def test_bandwidth_gives_up_after_the_retries(fake_testbed: MakeFake, fixture: str) -> None:
    respond, clients = _iperf_with(data(fixture))
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(retries=2))
    assert len(clients) == 3
    assert res.infra_error is not None and res.infra_error.startswith("iperf3 h1->h2: ")
    assert res.measurements == []
    assert all(proc.poll() is not None for proc in bed.spawned)


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
    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[0] == "ss":
            return result(argv, "LISTEN 0 4096 *:5201 *:*\n")
        raise InfraError("iperf3 timed out after 19 s: iperf3 -c ...")
    bed = fake_testbed(respond)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions())
    assert res.infra_error is not None and "timed out" in res.infra_error
    assert all(proc.poll() is not None for proc in bed.spawned)


# -- storage ---------------------------------------------------------------------------------

def _fio_with(*reports: tuple[str | None, str, int]) -> tuple[Responder, list[list[str]]]:
    """Successive fio runs write ``report`` (a fixture name or None) to --output, print
    ``stderr`` and exit with ``code``."""
    queue = list(reports)
    runs: list[list[str]] = []

    def respond(argv: list[str], host: str | None) -> CommandResult:
        assert host is None  # storage runs on the controller
        if argv[1:] == ["--enghelp"]:
            return result(argv, "Available IO engines:\n\tpsync\n\tlibaio\n")
        runs.append(argv)
        fixture, stderr, code = queue.pop(0)
        output = Path(next(a for a in argv if a.startswith("--output=")).split("=", 1)[1])
        if fixture is not None:
            output.write_text((DATA / fixture).read_text())
        data_file = Path(next(a for a in argv if a.startswith("--filename=")).split("=", 1)[1])
        data_file.write_text("x")
        return result(argv, "", stderr, code)
    return respond, runs


def test_storage_measures_throughput_iops_and_latency(fake_testbed: MakeFake) -> None:
    respond, runs = _fio_with(("fio_libaio_direct.json", "", 0))
    bed = fake_testbed(respond)
    res = storage.run(bed, storage.StorageOptions())
    assert res.infra_error is None
    metrics = {m.metric: m for m in res.measurements}
    assert set(metrics) == {"seq_write_mbps", "rand_read_iops", "rand_read_clat_p99_us",
                            "seq_write_clat_p99_us"}
    assert (metrics["seq_write_mbps"].unit, metrics["seq_write_mbps"].better) == (
        "MB/s", Better.HIGHER)
    assert (metrics["rand_read_iops"].unit, metrics["rand_read_clat_p99_us"].unit) == (
        "IOPS", "µs")
    assert metrics["rand_read_clat_p99_us"].better is Better.LOWER
    assert metrics["seq_write_mbps"].labels == {"job": "seq_write", "io": "direct"}
    assert res.tool_versions == {"fio": "fio-3.33"}
    argv = runs[0]
    assert "--ioengine=libaio" in argv and "--direct=1" in argv
    assert "--percentile_list=50:99" in argv and argv.count("--stonewall") == 2
    assert not (bed.state_dir / "storage" / "fio.data").exists()


def test_storage_falls_back_to_buffered_when_direct_is_refused(fake_testbed: MakeFake) -> None:
    refused = data("fio_direct_refused.stderr.txt")
    respond, runs = _fio_with(("fio_direct_refused.json", refused, 1),
                              ("fio_psync_buffered.json", "", 0))
    res = storage.run(fake_testbed(respond), storage.StorageOptions())
    assert res.infra_error is None
    assert ["--direct=1" in runs[0], "--direct=0" in runs[1]] == [True, True]
    assert {m.labels["io"] for m in res.measurements} == {"buffered"}
    assert "direct I/O refused" in res.log


@pytest.mark.parametrize(("report", "stderr", "code", "expected"), [
    (None, "fio: engine libaio not loadable\n", 1, "no JSON"),
    ("fio_failed_create_dir.txt", "fio: failed to create dir\n", 1, "exited with status 1"),
    ("fio_psync_buffered.json", "", 0, None),
])
def test_storage_broken_runs_are_infra_errors(fake_testbed: MakeFake, report: str | None,
                                              stderr: str, code: int,
                                              expected: str | None) -> None:
    respond, _ = _fio_with((report, stderr, code))
    res = storage.run(fake_testbed(respond), storage.StorageOptions())
    if expected is None:
        assert res.infra_error is None
    else:
        assert res.infra_error is not None and expected in res.infra_error
        assert res.measurements == []


def test_storage_job_error_is_an_infra_error(fake_testbed: MakeFake, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(data("fio_psync_buffered.json").replace('"error" : 0', '"error" : 5', 1))
    respond, _ = _fio_with((str(broken), "", 1))
    res = storage.run(fake_testbed(respond), storage.StorageOptions(direct=False))
    assert res.infra_error is not None and "seq_write': 5" in res.infra_error


def test_storage_timeout_is_an_infra_error(fake_testbed: MakeFake) -> None:
    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[1:] == ["--enghelp"]:
            return result(argv, "\tpsync\n")
        raise InfraError("fio timed out after 124 s: fio ...")
    res = storage.run(fake_testbed(respond), storage.StorageOptions())
    assert res.infra_error is not None and "timed out" in res.infra_error
