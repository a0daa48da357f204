"""The ping suite: can every host reach every other host, and with what loss and latency.

Each ordered pair is pinged from inside the source's namespace with ``ping -D -O``: timestamps
and "no answer yet" lines give per-packet RTTs and which sequence numbers were lost, so the
parser reports p99 and the longest outage, not only the summary line. A host that cannot reach
another is a failed check — that is the candidate's doing (a routing change, a firewall rule);
only a tool that cannot run or prints something unrecognisable is an infra error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from certifier.domain.results import Better, Check, Measurement, SuiteResult
from workers.testbed.base import InfraError, Testbed

SUITE = "ping"

_TRANSMITTED = re.compile(
    r"(\d+) packets transmitted, (\d+) (?:packets )?received"
    r"(?:, \+(\d+) duplicates)?(?:, \+(\d+) errors)?, ([\d.]+)% packet loss")
_REPLY = re.compile(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms")
_SUMMARY = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_NETWORK_ERRORS = ("Network is unreachable", "No route to host", "Destination Host Unreachable",
                   "Destination Net Unreachable")


class PingParseError(ValueError):
    """ping printed something this parser does not recognise (not a ping statistics report)."""


@dataclass(frozen=True, slots=True)
class PingOptions:
    """How hard to ping. ``timeout_s`` bounds one pair; None derives it from count and interval."""

    count: int = 10
    interval: float = 0.05
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("ping count must be at least 1")
        if not 0.002 <= self.interval <= 60:
            raise ValueError("ping interval must be between 0.002 and 60 s")

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

    @property
    def longest_loss_run(self) -> int:
        """Most consecutive lost packets; times the interval, it is the longest outage."""
        best = run = 0
        previous = None
        for seq in self.lost_seqs:
            run = run + 1 if previous is not None and seq == previous + 1 else 1
            best = max(best, run)
            previous = seq
        return best

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
        summary_ms=rtt_summary)


def _pair_result(src: str, dst: str, address: str, stats: PingStats) -> tuple[
        Check, list[Measurement]]:
    labels = {"src": src, "dst": dst}
    name = f"reach {src}->{dst}"
    if stats.received == 0:
        why = f"{stats.loss_pct:g}% loss" + (f" ({stats.error})" if stats.error else "")
        check = Check(SUITE, name, False, f"{src} cannot reach {dst} ({address}): {why}")
    else:
        check = Check(SUITE, name, True, f"{stats.received}/{stats.transmitted} replies, "
                                         f"{stats.loss_pct:g}% loss")
    measurements = [Measurement(SUITE, "loss_pct", stats.loss_pct, "%", Better.LOWER, labels)]
    values = {"rtt_min_ms": stats.rtt_min_ms, "rtt_avg_ms": stats.rtt_avg_ms,
              "rtt_p99_ms": stats.rtt_percentile_ms(99), "rtt_max_ms": stats.rtt_max_ms}
    for metric, value in values.items():
        if value is not None:
            measurements.append(Measurement(SUITE, metric, value, "ms", Better.LOWER,
                                            dict(labels)))
    return check, measurements


def _version(testbed: Testbed) -> str | None:
    try:
        result = testbed.run(["ping", "-V"], timeout=10)
    except InfraError:
        return None
    match = re.search(r"iputils[- ](\S+)", result.output)
    return f"iputils {match.group(1)}" if match else None


def run(testbed: Testbed, options: PingOptions) -> SuiteResult:
    """Ping every ordered pair of hosts; never raises for tool problems."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    try:
        for src in testbed.hosts:
            for dst in testbed.hosts:
                if src.name == dst.name:
                    continue
                argv = ["ping", "-D", "-O", "-n", "-c", str(options.count), "-i",
                        f"{options.interval:g}", "-W", "1", dst.address]
                done = testbed.run(argv, host=src.name, timeout=options.pair_timeout)
                logs.append(f"$ [{src.name}] {' '.join(argv)}  (exit {done.returncode})\n"
                            f"{done.output.strip()}")
                try:
                    stats = parse_ping(done.output)
                except PingParseError as exc:
                    result.infra_error = f"ping {src.name}->{dst.name}: {exc}"
                    break
                check, measurements = _pair_result(src.name, dst.name, dst.address, stats)
                result.checks.append(check)
                result.measurements.extend(measurements)
            if result.infra_error:
                break
        version = _version(testbed)
        if version:
            result.tool_versions["ping"] = version
    except InfraError as exc:
        result.infra_error = str(exc)
        if exc.result is not None:
            logs.append(exc.result.output.strip())
    result.log = "\n".join(logs)
    return result
