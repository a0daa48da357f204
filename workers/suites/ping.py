"""The ping suite: can every host reach every other host, and with what loss and latency.

Each target — an ordered pair of hosts on a network they share, or reaching each other through a
router (:meth:`Testbed.targets`) — is pinged from the source with ``ping -D -O``: timestamps and
"no answer yet" lines give per-packet RTTs and which sequence numbers were lost, so the parser
reports p50, p99 and the longest outage (measured between the timestamps of the answers around
it, not counted in lost packets), not only the summary line. Targets are pinged
concurrently (``concurrency`` at a time): ping is light, and a big topology would otherwise take
minutes. Where the testbed knows the MTU of a network, one full-size ``ping -M do`` must get
through and one byte more must not: a host with a wrong MTU still answers 64-byte pings.

A host that cannot reach another is a failed check — that is the candidate's doing (a routing
change, a firewall rule); only a tool that cannot run or prints something unrecognisable is an
infra error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.settings_policy import PingSuiteConfig
from workers.suites.options import within
from workers.testbed.base import InfraError, Target, Testbed

SUITE = "ping"

_TRANSMITTED = re.compile(
    r"(\d+) packets transmitted, (\d+) (?:packets )?received"
    r"(?:, \+(\d+) duplicates)?(?:, \+(\d+) errors)?, ([\d.]+)% packet loss")
_REPLY = re.compile(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms")
_SUMMARY = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
# ``ping -D``: every line starts with the Unix time it was printed, "[1733412345.123456] 64 by…"
_STAMP = re.compile(r"^\[(\d+(?:\.\d+)?)\]", re.MULTILINE)
_STAMPED_REPLY = re.compile(r"^\[(\d+(?:\.\d+)?)\] [^\n]*?icmp_seq=(\d+) ttl=\d+ time=",
                            re.MULTILINE)
_NETWORK_ERRORS = ("Network is unreachable", "No route to host", "Destination Host Unreachable",
                   "Destination Net Unreachable")


class PingParseError(ValueError):
    """ping printed something this parser does not recognise (not a ping statistics report)."""


_CONFIG = PingSuiteConfig()


@dataclass(frozen=True, slots=True)
class PingOptions:
    """How hard to ping. ``timeout_s`` bounds one target; None derives it from count and
    interval. ``mtu_check`` adds the full-size ``-M do`` probes; ``concurrency`` is how many
    targets are pinged at once. Defaults and bounds: ``suites.ping``
    (``workers/suites/options``)."""

    count: int = _CONFIG.count
    interval: float = _CONFIG.interval
    timeout_s: float | None = None
    mtu_check: bool = _CONFIG.mtu_check
    concurrency: int = _CONFIG.concurrency

    def __post_init__(self) -> None:
        within(PingSuiteConfig, self)

    @property
    def pair_timeout(self) -> float:
        return self.timeout_s or self.count * self.interval + 10.0


@dataclass(frozen=True, slots=True)
class PingStats:
    """One ping run, as parsed. ``rtts_ms`` holds the first reply of each answered packet."""

    transmitted: int
    received: int
    loss_pct: float
    rtts_ms: tuple[float, ...] = ()
    lost_seqs: tuple[int, ...] = ()
    errors: int = 0
    error: str | None = None  # e.g. "Network is unreachable" when no packet could be sent
    summary_ms: tuple[float, float, float, float] | None = None  # min/avg/max/mdev
    reply_stamps: Mapping[int, float] = field(default_factory=dict)  # seq -> ``-D`` time
    last_stamp: float | None = None

    @property
    def longest_loss_run(self) -> int:
        """Most consecutive lost packets."""
        return max((last - first + 1 for first, last in loss_runs(self.lost_seqs)), default=0)

    def longest_outage_s(self, interval: float) -> float:
        return longest_outage_s(self.lost_seqs, interval, self.reply_stamps, self.last_stamp)

    @property
    def rtt_avg_ms(self) -> float | None:
        if self.summary_ms:
            return self.summary_ms[1]
        return sum(self.rtts_ms) / len(self.rtts_ms) if self.rtts_ms else None

    @property
    def rtt_min_ms(self) -> float | None:
        return min(self.rtts_ms) if self.rtts_ms else None

    @property
    def rtt_max_ms(self) -> float | None:
        return max(self.rtts_ms) if self.rtts_ms else None

    def rtt_percentile_ms(self, pct: float) -> float | None:
        """Nearest-rank percentile: with few samples p99 is the maximum, never interpolated."""
        if not self.rtts_ms:
            return None
        ordered = sorted(self.rtts_ms)
        rank = max(1, math.ceil(pct / 100 * len(ordered)))
        return ordered[rank - 1]


def reply_stamps(text: str) -> dict[int, float]:
    """When each answered packet's (first) reply was printed, from ``ping -D`` output."""
    found: dict[int, float] = {}
    for match in _STAMPED_REPLY.finditer(text):
        found.setdefault(int(match.group(2)), float(match.group(1)))
    return found


def last_stamp(text: str) -> float | None:
    """The time of the last ``-D`` line: how long a trailing loss lasted at least."""
    stamps = _STAMP.findall(text)
    return float(stamps[-1]) if stamps else None


def loss_runs(lost: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive lost sequence numbers as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(lost):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def longest_outage_s(lost: Sequence[int], interval: float, stamps: Mapping[int, float],
                     end: float | None = None) -> float:
    """The longest time the target did not answer, in seconds, from ``ping -D`` timestamps.

    For a run of lost packets between two answers: the time between those answers, less the
    one interval any two consecutive answers are apart anyway. Counting lost packets times the
    nominal interval instead under-measures: ping sends less often than ``-i`` asks (each
    round costs time), so a 3.0 s cut loses fewer than 3.0 / interval packets. A run at the
    start (no answer before it) falls back to the count; one at the end lasts at least until
    the last line ping printed. Without timestamps (no ``-D``), the count times the interval.
    """
    best = 0.0
    for first, last in loss_runs(lost):
        counted = (last - first + 1) * interval
        before, after = stamps.get(first - 1), stamps.get(last + 1)
        if before is not None and after is not None:
            span = after - before - interval
        elif before is not None and end is not None:
            span = max(counted, end - before)
        else:
            span = counted
        best = max(best, span)
    return max(best, 0.0)


def parse_ping(text: str) -> PingStats:
    """Parse the output of iputils ``ping -D -O -n``; raises PingParseError on anything else."""
    rtts: dict[int, float] = {}
    for match in _REPLY.finditer(text):
        # A duplicate reply (DUP!) never replaces the first one.
        rtts.setdefault(int(match.group(1)), float(match.group(2)))
    error = next((e for e in _NETWORK_ERRORS if e in text), None)
    stats = _TRANSMITTED.search(text)
    if stats is None:
        if error:
            return PingStats(transmitted=0, received=0, loss_pct=100.0, error=error)
        raise PingParseError(f"no ping statistics in output: {text.strip()[:300]!r}")
    transmitted, received = int(stats.group(1)), int(stats.group(2))
    summary = _SUMMARY.search(text, stats.end())
    rtt_summary = None
    if summary:
        low, avg, high, mdev = (float(g) for g in summary.groups())
        rtt_summary = (low, avg, high, mdev)
    lost = tuple(seq for seq in range(1, transmitted + 1) if seq not in rtts)
    return PingStats(
        transmitted=transmitted, received=received, loss_pct=float(stats.group(5)),
        rtts_ms=tuple(rtts[s] for s in sorted(rtts)), lost_seqs=lost,
        errors=int(stats.group(4) or 0), error=error,
        summary_ms=rtt_summary, reply_stamps=reply_stamps(text), last_stamp=last_stamp(text))


def _labels(target: Target) -> dict[str, str]:
    labels = {"src": target.src, "dst": target.dst}
    if target.net:
        labels["net"] = target.net
    return labels


def _name(kind: str, target: Target) -> str:
    return f"{kind} {target.src}->{target.dst}" + (f" via {target.net}" if target.net else "")


def _pair_result(target: Target, stats: PingStats, interval: float) -> tuple[
        Check, list[Measurement]]:
    labels = _labels(target)
    name = _name("reach", target)
    src, dst = target.src, target.dst
    if stats.received == 0:
        why = f"{stats.loss_pct:g}% loss" + (f" ({stats.error})" if stats.error else "")
        check = Check(SUITE, name, False, f"{src} cannot reach {dst} ({target.address}): {why}")
    else:
        check = Check(SUITE, name, True, f"{stats.received}/{stats.transmitted} replies, "
                                         f"{stats.loss_pct:g}% loss")
    # The counts behind the rate (none when ping sent nothing, e.g. "Network is unreachable").
    sent = stats.transmitted or None
    measurements = [Measurement(SUITE, "loss_pct", stats.loss_pct, "%", Better.LOWER, labels,
                                events=None if sent is None else sent - stats.received,
                                trials=sent)]
    values = {"rtt_min_ms": stats.rtt_min_ms, "rtt_avg_ms": stats.rtt_avg_ms,
              "rtt_p50_ms": stats.rtt_percentile_ms(50),
              "rtt_p99_ms": stats.rtt_percentile_ms(99), "rtt_max_ms": stats.rtt_max_ms}
    for metric, value in values.items():
        if value is not None:
            measurements.append(Measurement(SUITE, metric, value, "ms", Better.LOWER,
                                            dict(labels)))
    if stats.received:
        measurements.append(Measurement(SUITE, "longest_outage_ms",
                                        stats.longest_outage_s(interval) * 1000, "ms",
                                        Better.LOWER, dict(labels)))
    return check, measurements


def _version(testbed: Testbed) -> str | None:
    try:
        result = testbed.run(["ping", "-V"], timeout=10)
    except InfraError:
        return None
    match = re.search(r"iputils[- ](\S+)", result.output)
    return f"iputils {match.group(1)}" if match else None


@dataclass(slots=True)
class _Outcome:
    checks: list[Check] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    infra_error: str | None = None


MTU_TRIES = 3
"""Full-size packets sent, one after another, before the path counts as too small for them: a
single one lost to a lossy link (a 2 % drop) or to a reply that took over a second on a busy
host is not an MTU mismatch. One byte more is sent once: the kernel refuses it locally ("message
too long") where the MTU is right."""


def _mtu_check(testbed: Testbed, target: Target, out: _Outcome) -> None:
    """A full-size packet with fragmentation off must pass (one of ``MTU_TRIES``), and one byte
    more must not."""
    assert target.mtu is not None
    size = target.mtu - 28  # IPv4 and ICMP headers
    fits = False
    tries = 0
    while not fits and tries < MTU_TRIES:
        tries += 1
        fits = _one_unfragmented(testbed, target, size, out)
    too_big = _one_unfragmented(testbed, target, size + 1, out)
    name = _name("mtu", target)
    if fits and not too_big:
        out.checks.append(Check(SUITE, name, True, f"{target.mtu}-byte packets pass "
                                                   "unfragmented, one byte more does not"))
    elif not fits:
        out.checks.append(Check(SUITE, name, False,
                                f"{target.src} cannot send a {target.mtu}-byte packet to "
                                f"{target.dst} ({target.address}) unfragmented ({tries} sent, "
                                "none came back): the path MTU is smaller than planned"))
    else:
        out.checks.append(Check(SUITE, name, False,
                                f"{target.src} sends {target.mtu + 1}-byte packets to "
                                f"{target.dst} ({target.address}): its MTU is larger than the "
                                f"planned {target.mtu} (an MTU mismatch drops large packets)"))


def _one_unfragmented(testbed: Testbed, target: Target, payload: int, out: _Outcome) -> bool:
    """Whether one packet of ``payload`` bytes with fragmentation off came back."""
    argv = ["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(payload), target.address]
    done = testbed.run(argv, host=target.src, timeout=10)
    out.logs.append(f"$ [{target.src}] {' '.join(argv)}  (exit {done.returncode})\n"
                    f"{done.output.strip()}")
    try:
        return parse_ping(done.output).received > 0
    except PingParseError:
        # "message too long" is printed instead of statistics by some versions
        return False


def _ping_target(testbed: Testbed, target: Target, options: PingOptions) -> _Outcome:
    out = _Outcome()
    try:
        argv = ["ping", "-D", "-O", "-n", "-c", str(options.count), "-i",
                f"{options.interval:g}", "-W", "1", target.address]
        done = testbed.run(argv, host=target.src, timeout=options.pair_timeout)
        out.logs.append(f"$ [{target.src}] {' '.join(argv)}  (exit {done.returncode})\n"
                        f"{done.output.strip()}")
        try:
            stats = parse_ping(done.output)
        except PingParseError as exc:
            out.infra_error = f"ping {target.src}->{target.dst}: {exc}"
            return out
        check, measurements = _pair_result(target, stats, options.interval)
        out.checks.append(check)
        out.measurements.extend(measurements)
        if options.mtu_check and target.mtu and check.passed:
            _mtu_check(testbed, target, out)
    except InfraError as exc:
        out.infra_error = str(exc)
        if exc.result is not None:
            out.logs.append(exc.result.output.strip())
    return out


def run(testbed: Testbed, options: PingOptions) -> SuiteResult:
    """Ping every target of the testbed; never raises for tool problems."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    targets = testbed.targets()
    with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
        outcomes = list(pool.map(lambda t: _ping_target(testbed, t, options), targets))
    for outcome in outcomes:
        logs.extend(outcome.logs)
        if outcome.infra_error and result.infra_error is None:
            result.infra_error = outcome.infra_error
        result.checks.extend(outcome.checks)
        result.measurements.extend(outcome.measurements)
    if result.infra_error is None:
        version = _version(testbed)
        if version:
            result.tool_versions["ping"] = version
    else:
        result.checks.clear()  # a half-measured run says nothing reliable about the candidate
        result.measurements.clear()
    result.log = "\n".join(logs)
    return result
