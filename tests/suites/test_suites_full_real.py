"""The full suites against the real tools on namespaces: every bandwidth test of the default
profile, a connection that cannot be made (retried, then an infra error), and fio with direct
I/O on the testbed's own loop-mounted ext4."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.requirements import needs_binary, needs_root
from workers.suites import bandwidth, storage
from workers.testbed.base import Testbed
from workers.testbed.process import pids_with_cookie

pytestmark = [pytest.mark.root, needs_root]

MakeTestbed = Callable[..., Testbed]


@needs_binary("ip", "iperf3", "ss")
def test_the_default_profile_measures_both_ways_parallel_streams_and_udp(
        make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(duration_s=1))
    assert res.infra_error is None, res.log
    got = {(m.metric, m.labels["src"], m.labels["dst"], m.labels["streams"]): m.value
           for m in res.measurements}
    for direction in (("h1", "h2"), ("h2", "h1")):
        assert got[("throughput_gbps", *direction, "1")] > 1
    assert got[("throughput_gbps", "h1", "h2", "4")] > 1
    assert got[("udp_throughput_gbps", "h1", "h2", "1")] == pytest.approx(0.1, rel=0.05)
    assert got[("udp_loss_pct", "h1", "h2", "1")] < 5
    assert 0 <= got[("udp_jitter_ms", "h1", "h2", "1")] < 5
    assert 0 < got[("cpu_sender_pct", "h1", "h2", "1")] <= 100
    assert pids_with_cookie(bed.cookie) == []  # every one-off server is gone


@needs_binary("ip", "iperf3", "ss")
def test_a_connection_that_cannot_be_made_is_retried_then_an_infra_error(
        make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    bed.set_link("h2", "lan", up=False)
    res = bandwidth.run(bed, bandwidth.BandwidthOptions(
        duration_s=1, retries=1, connect_timeout_ms=300, reverse=False, parallel_streams=0,
        udp_rate_mbit=0))
    assert res.infra_error is not None and res.infra_error.startswith("iperf3 h1->h2: ")
    assert "unable to connect" in res.infra_error
    assert res.log.count("attempt") == 2
    assert res.measurements == [] and res.checks == []
    assert pids_with_cookie(bed.cookie) == []


@needs_binary("ip", "fio", "losetup", "mkfs.ext4")
def test_fio_runs_with_direct_io_on_the_testbeds_loop_filesystem(
        make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    res = storage.run(bed, storage.StorageOptions(size="16M", runtime_s=1))
    assert res.infra_error is None, res.log
    assert {(m.labels["io"], m.labels["fs"]) for m in res.measurements} == {
        ("direct", "ext4-loop")}
    assert {m.labels["job"] for m in res.measurements} == set(storage.JOBS)
    assert "--direct=1" in res.log and "buffered" not in res.log
    image = bed.state_dir / f"cf-scratch-{bed.tag}.img"
    attached = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True,
                              timeout=10).stdout
    assert attached.startswith("/dev/loop")
    assert not Path(bed.state_dir / f"cf-scratch-{bed.tag}" / "fio.data").exists()
    assert (bed.state_dir / "storage" / "fio-direct.json").exists()
    bed.teardown()
    assert subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True,
                          timeout=10).stdout == ""
