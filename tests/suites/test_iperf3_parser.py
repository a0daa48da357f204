"""parse_iperf3 on JSON captured from iperf3 3.12 between two namespaces."""

from __future__ import annotations

import pytest

from workers.suites.bandwidth import IperfParseError, parse_iperf3

from .conftest import data


def test_single_stream_report_uses_the_receiver_rate() -> None:
    report = parse_iperf3(data("iperf3_tcp_ok.json"))
    assert report.error is None
    assert report.version == "iperf 3.12"
    assert report.received_bps == pytest.approx(14.966e9, rel=1e-3)  # sum_received, not sent
    assert report.sent_bps is not None and report.received_bps is not None
    assert report.sent_bps >= report.received_bps
    assert report.retransmits == 1836
    assert report.cpu_host_pct is not None and report.cpu_remote_pct is not None


def test_parallel_streams_report_their_sum() -> None:
    report = parse_iperf3(data("iperf3_tcp_p2.json"))
    assert report.received_bps is not None and report.received_bps > 1e9


def test_shaped_link_reports_about_a_tenth_of_a_gigabit() -> None:
    report = parse_iperf3(data("iperf3_tcp_shaped.json"))
    assert report.received_bps == pytest.approx(0.095e9, rel=0.05)


@pytest.mark.parametrize(("fixture", "message"), [
    ("iperf3_busy.json", "the server is busy running a test. try again later"),
    ("iperf3_refused.json", "unable to connect to server: Connection refused"),
])
def test_error_key_is_reported_not_raised(fixture: str, message: str) -> None:
    report = parse_iperf3(data(fixture))
    assert report.error == message
    assert report.version == "iperf 3.12"
    assert report.received_bps is None


def test_text_around_the_json_is_ignored() -> None:
    text = ("warning: something\n" + data("iperf3_tcp_ok.json")
            + "iperf3: error - control socket has closed unexpectedly\n")
    assert parse_iperf3(text).retransmits == 1836


@pytest.mark.parametrize("text", [
    "",
    "iperf3: error - unable to connect to server: Connection refused\n",
    data("iperf3_tcp_ok.json")[:1500],  # a client killed mid-write
    '{"start": {"version": "iperf 3.12"}, "end": {}}',  # no sum_received
    "[1, 2, 3]",
])
def test_missing_or_broken_json_raises_a_parse_error(text: str) -> None:
    with pytest.raises(IperfParseError):
        parse_iperf3(text)


def test_udp_report_takes_jitter_and_loss_from_the_receiver() -> None:
    report = parse_iperf3(data("iperf3_udp_ok.json"))
    assert report.protocol == "UDP"
    assert report.received_bps == pytest.approx(50e6, rel=0.01)
    assert report.lost_pct == 0 and report.lost_packets == 0 and report.packets
    assert report.jitter_ms is not None and report.jitter_ms < 1
    assert report.retransmits is None


def test_udp_report_beyond_a_shaped_link_shows_the_loss() -> None:
    # 200 Mbit/s sent into a 100 Mbit/s tbf: about half is lost, the receiver gets the rate.
    report = parse_iperf3(data("iperf3_udp_lossy.json"))
    assert report.sent_bps is not None and report.sent_bps == pytest.approx(200e6, rel=0.01)
    assert report.received_bps == pytest.approx(97.4e6, rel=0.01)
    assert report.lost_pct == pytest.approx(48.6, abs=0.1)
    assert report.lost_packets == 8386 and report.packets == 17247
