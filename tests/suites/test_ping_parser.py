"""parse_ping on output captured from iputils ping 20221126 (``ping -D -O -n``)."""

from __future__ import annotations

import pytest

from workers.suites.ping import PingParseError, parse_ping

from .conftest import data


def test_all_replies() -> None:
    stats = parse_ping(data("ping_ok.txt"))
    assert (stats.transmitted, stats.received, stats.loss_pct) == (10, 10, 0.0)
    assert len(stats.rtts_ms) == 10
    assert stats.lost_seqs == ()
    assert stats.summary_ms == (0.049, 0.070, 0.089, 0.011)
    assert stats.rtt_avg_ms == 0.070
    assert stats.rtt_max_ms == 0.089
    assert stats.rtt_percentile_ms(99) == 0.089  # nearest rank: with 10 samples, the maximum
    assert stats.rtt_percentile_ms(50) == 0.069
    assert stats.error is None


def test_partial_loss_finds_the_longest_outage() -> None:
    stats = parse_ping(data("ping_partial_loss.txt"))
    assert (stats.transmitted, stats.received, stats.loss_pct) == (20, 14, 30.0)
    assert stats.lost_seqs == (7, 8, 9, 10, 11, 12)
    assert stats.longest_loss_run == 6
    assert len(stats.rtts_ms) == 14


def test_total_loss_has_no_rtt_line() -> None:
    stats = parse_ping(data("ping_total_loss.txt"))
    assert (stats.transmitted, stats.received, stats.loss_pct) == (4, 0, 100.0)
    assert stats.rtts_ms == () and stats.summary_ms is None
    assert stats.rtt_avg_ms is None and stats.rtt_percentile_ms(99) is None


def test_destination_host_unreachable_counts_errors() -> None:
    stats = parse_ping(data("ping_host_unreachable.txt"))
    assert (stats.transmitted, stats.received, stats.errors) == (6, 0, 3)
    assert stats.error == "Destination Host Unreachable"


def test_network_unreachable_is_zero_received() -> None:
    stats = parse_ping(data("ping_unreachable.txt"))
    assert (stats.transmitted, stats.received, stats.loss_pct) == (0, 0, 100.0)
    assert stats.error == "Network is unreachable"


def test_duplicate_replies_do_not_count_twice() -> None:
    text = data("ping_ok.txt").replace(
        "icmp_seq=2 ttl=64 time=0.069 ms\n",
        "icmp_seq=2 ttl=64 time=0.069 ms\n[1.0] 64 bytes from x: icmp_seq=2 ttl=64 "
        "time=9.0 ms (DUP!)\n")
    stats = parse_ping(text)
    assert len(stats.rtts_ms) == 10 and 9.0 not in stats.rtts_ms


@pytest.mark.parametrize("text", [
    "",
    "ping: socket: Operation not permitted\n",
    "ping: 198.18.0.12: Name or service not known\n",
    data("ping_ok.txt")[:300],  # cut before the statistics
])
def test_unrecognised_output_raises_a_parse_error(text: str) -> None:
    with pytest.raises(PingParseError):
        parse_ping(text)


def test_full_size_packet_with_fragmentation_off() -> None:
    stats = parse_ping(data("ping_mtu_fits.txt"))
    assert (stats.transmitted, stats.received) == (1, 1)


def test_one_byte_too_large_is_refused_locally() -> None:
    stats = parse_ping(data("ping_mtu_too_big.txt"))
    assert (stats.transmitted, stats.received, stats.errors) == (1, 0, 1)


def test_the_longest_outage_is_timed_between_the_answers_around_the_losses() -> None:
    stats = parse_ping(data("ping_partial_loss.txt"))
    # seq 6 answered at …730.676822 and seq 13 at …731.068847: 0.392 s apart, less the one
    # interval any two answers have between them. Six losses x 0.05 s would say 0.30 s.
    assert stats.longest_outage_s(0.05) == pytest.approx(0.342, abs=0.001)


def test_without_timestamps_the_outage_is_the_lost_count_times_the_interval() -> None:
    text = "\n".join(line.split("] ", 1)[-1] for line in
                     data("ping_partial_loss.txt").splitlines())
    assert parse_ping(text).longest_outage_s(0.05) == pytest.approx(0.30)
