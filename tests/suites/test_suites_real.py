"""The suites against the real tools on a real testbed: namespaces as root, loopback without."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from certifier.domain.results import SuiteResult
from tests.requirements import needs_binary, needs_root
from workers.suites import bandwidth, ping, storage
from workers.testbed.base import Testbed
from workers.testbed.process import pids_with_cookie

MakeTestbed = Callable[..., Testbed]
ONE_TEST: dict[str, Any] = {"reverse": False, "parallel_streams": 0, "udp_rate_mbit": 0}


def _metric(res: SuiteResult, name: str, **labels: str) -> float:
    found = [m.value for m in res.measurements
             if m.metric == name and all(m.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping")
def test_ping_on_namespaces_passes_and_measures(make_testbed: MakeTestbed) -> None:
    bed = make_testbed(hosts=("h1", "h2", "h3"))
    res = ping.run(bed, ping.PingOptions(count=5, interval=0.02))
    assert res.infra_error is None, res.log
    assert all(c.passed for c in res.checks), res.checks
    assert sorted(c.name for c in res.checks if c.name.startswith("reach")) == [
        f"reach {a}->{b}" for a in ("h1", "h2", "h3") for b in ("h1", "h2", "h3") if a != b]
    assert len([c for c in res.checks if c.name.startswith("mtu")]) == 6  # 1500 known
    assert _metric(res, "loss_pct", src="h3", dst="h1") == 0.0
    assert 0 < _metric(res, "rtt_p50_ms", src="h1", dst="h2") <= _metric(
        res, "rtt_p99_ms", src="h1", dst="h2") < 50
    assert _metric(res, "longest_outage_ms", src="h2", dst="h3") == 0.0
    assert res.tool_versions["ping"].startswith("iputils")


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping")
def test_ping_to_a_cut_off_host_is_a_failed_check_not_infra(make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    ns = bed.host("h2").namespace
    assert ns is not None
    assert bed.run(["ip", "-n", ns, "link", "set", "eth0", "down"], timeout=10).ok
    res = ping.run(bed, ping.PingOptions(count=3, interval=0.02))
    assert res.infra_error is None, res.log
    failed = {c.name: c.message for c in res.checks if not c.passed}
    assert set(failed) == {"reach h1->h2", "reach h2->h1"}
    assert failed["reach h1->h2"].startswith(
        f"h1 cannot reach h2 ({bed.host('h2').address}): 100% loss")
    assert _metric(res, "loss_pct", src="h1", dst="h2") == 100.0


@pytest.mark.root
@needs_root
@needs_binary("ip", "iperf3", "ss", "tc")
def test_bandwidth_drops_to_a_tenth_of_a_gigabit_under_tbf(make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    options = bandwidth.BandwidthOptions(duration_s=1, **ONE_TEST)
    free = bandwidth.run(bed, options)
    assert free.infra_error is None, free.log
    assert _metric(free, "throughput_gbps", src="h1", dst="h2") > 1.0
    assert free.tool_versions["iperf3"].startswith("iperf 3")

    shaped = bed.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "100mbit",
                      "burst", "32kbit", "latency", "400ms"], host="h1", timeout=10)
    assert shaped.ok, shaped.output
    slow = bandwidth.run(bed, options)
    assert slow.infra_error is None, slow.log
    assert 0.05 < _metric(slow, "throughput_gbps", src="h1", dst="h2") < 0.12
    assert pids_with_cookie(bed.cookie) == []  # every server was killed


@needs_binary("iperf3", "ss", "ping")
def test_ping_and_bandwidth_work_on_the_local_driver(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local")
    pinged = ping.run(bed, ping.PingOptions(count=3, interval=0.2))
    assert pinged.infra_error is None, pinged.log
    assert all(c.passed for c in pinged.checks)
    measured = bandwidth.run(bed, bandwidth.BandwidthOptions(duration_s=1, **ONE_TEST))
    assert measured.infra_error is None, measured.log
    assert _metric(measured, "throughput_gbps", src="h1", dst="h2") > 0.1


@needs_binary("fio")
def test_storage_runs_fio_in_the_state_folder(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local")
    res = storage.run(bed, storage.StorageOptions(size="16M", runtime_s=1,
                                                  jobs=("seq_write", "rand_read")))
    assert res.infra_error is None, res.log
    assert _metric(res, "seq_write_mbps") > 0
    assert _metric(res, "rand_read_iops") > 0
    assert _metric(res, "rand_read_clat_p99_us") > 0
    assert res.tool_versions["fio"].startswith("fio-")
    assert not (bed.state_dir / "storage" / "fio.data").exists()
    assert (bed.state_dir / "storage" / "fio-direct.json").exists() or "buffered" in res.log
