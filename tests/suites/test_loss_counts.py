"""Loss measurements carry their counts (events lost of trials sent), from the real tools.

Loss-type series are judged as counts (issue #12): a loss percentage alone cannot say whether
"0 %" was 0 of 20 pings or 0 of 200,000 datagrams. Real ping and iperf3 on real namespaces.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from certifier.domain.results import Measurement, SuiteResult
from tests.requirements import needs_binary, needs_root
from workers.suites import bandwidth, ping
from workers.testbed.base import Testbed

MakeTestbed = Callable[..., Testbed]


def _loss(res: SuiteResult, metric: str, src: str, dst: str) -> Measurement:
    found = [m for m in res.measurements if m.metric == metric
             and (m.labels.get("src"), m.labels.get("dst")) == (src, dst)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping")
def test_ping_loss_counts_the_packets_sent_and_none_lost(make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    res = ping.run(bed, ping.PingOptions(count=7, interval=0.02, mtu_check=False))
    assert res.infra_error is None, res.log
    loss = _loss(res, "loss_pct", "h1", "h2")
    assert (loss.value, loss.events, loss.trials) == (0.0, 0, 7)


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping")
def test_ping_loss_to_a_cut_off_host_counts_every_packet_lost(make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    ns = bed.host("h2").namespace
    assert ns is not None
    assert bed.run(["ip", "-n", ns, "link", "set", "eth0", "down"], timeout=10).ok
    res = ping.run(bed, ping.PingOptions(count=3, interval=0.02, mtu_check=False))
    loss = _loss(res, "loss_pct", "h1", "h2")
    assert (loss.value, loss.events, loss.trials) == (100.0, 3, 3)


@pytest.mark.root
@needs_root
@needs_binary("ip", "iperf3", "ss", "tc")
def test_udp_loss_counts_the_datagrams_a_shaped_link_dropped(make_testbed: MakeTestbed) -> None:
    bed = make_testbed()
    # 100 Mbit/s of UDP into a 10 Mbit/s bucket with a small queue: most datagrams are dropped.
    shaped = bed.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "10mbit",
                      "burst", "32kbit", "latency", "20ms"], host="h1", timeout=10)
    assert shaped.ok, shaped.output
    options = bandwidth.BandwidthOptions(duration_s=1, reverse=False, parallel_streams=0,
                                         udp_rate_mbit=100)
    res = bandwidth.run(bed, options)
    assert res.infra_error is None, res.log
    loss = _loss(res, "udp_loss_pct", "h1", "h2")
    assert loss.events is not None and loss.trials is not None
    assert 0 < loss.events < loss.trials
    assert loss.value == pytest.approx(100 * loss.events / loss.trials, abs=0.5)
    tcp = _loss(res, "throughput_gbps", "h1", "h2")
    assert (tcp.events, tcp.trials) == (None, None)  # not a loss-type series
