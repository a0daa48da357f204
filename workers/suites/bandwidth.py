"""The bandwidth suite: iperf3 TCP (both directions, single and parallel streams) and UDP at a
target rate, between pairs of hosts.

iperf3 3.12 is fussy in ways that decide the design: a server runs one test at a time and a
second client gets "the server is busy" (so every test gets its own one-off ``-s -1`` server on a
port of its own, from a window derived from the testbed's tag, so testbeds side by side do not
meet); a client started before the server listens fails (so we wait until ``ss`` shows the
listening socket); errors come as a top-level ``"error"`` key, often with exit status 0, and text
can follow the JSON (so we decode from the first ``{`` with ``raw_decode`` and always look for
``error``). The rate we report is the receiver's: the sender's is inflated by socket buffers.

Per pair, with the defaults: TCP ``src→dst`` and, swapping the roles rather than using ``-R``
(so both directions are measured the same way), TCP ``dst→src``; TCP ``src→dst`` with
``parallel_streams`` streams; UDP ``src→dst`` at ``udp_rate_mbit``. Labels name the direction the
data flows (``src``, ``dst``), ``protocol``, ``streams`` and, on a testbed with several networks,
``net``. 3.12 is single-threaded and over veth the CPU is the bottleneck, so the CPU use of both
ends is measured too.

Every failure here is an infra error, including a refused connection after the retries (with
backoff): whether the hosts can reach each other at all is the ping suite's question, answered
as a check.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from certifier.domain.results import Better, Measurement, SuiteResult
from certifier.settings_policy import BandwidthSuiteConfig
from workers.suites.options import within
from workers.testbed.base import InfraError, Target, Testbed

SUITE = "bandwidth"
LISTEN_TIMEOUT_S = 5.0
BACKOFF_S = 0.2
RETRYABLE = ("server is busy", "unable to connect", "Connection refused",
             "control socket has closed", "Address already in use", "did not start listening",
             "unable to start listener", "unable to receive control message")


class IperfParseError(ValueError):
    """The output is not a complete iperf3 JSON report (no JSON, truncated, missing keys)."""


_CONFIG = BandwidthSuiteConfig()


@dataclass(frozen=True, slots=True)
class BandwidthOptions:
    """Which tests per pair, and for how long (iperf3 takes whole seconds: rounded up).

    ``pairs``: ``"first"`` (the testbed's first pair), ``"all"``, or ``"src->dst"`` /
    ``"src->dst@net"`` entries. ``reverse`` also measures each pair's other direction;
    ``parallel_streams`` (0: off) adds a TCP test with that many streams; ``udp_rate_mbit``
    (0: off) adds a UDP test at that rate. Defaults and bounds: ``suites.bandwidth``
    (``workers/suites/options``); ``connect_timeout_ms`` is the code's alone.
    """

    duration_s: float = _CONFIG.duration_s
    omit_s: float = _CONFIG.omit_s
    streams: int = _CONFIG.streams
    pairs: str | tuple[str, ...] = _CONFIG.pairs
    reverse: bool = _CONFIG.reverse
    parallel_streams: int = _CONFIG.parallel_streams
    udp_rate_mbit: float = _CONFIG.udp_rate_mbit
    connect_timeout_ms: int = 3000
    retries: int = _CONFIG.retries

    def __post_init__(self) -> None:
        if isinstance(self.pairs, list):
            object.__setattr__(self, "pairs", tuple(self.pairs))
        within(BandwidthSuiteConfig, self)
        if self.connect_timeout_ms < 1:
            raise ValueError("connect_timeout_ms must be positive")

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.duration_s))

    @property
    def omit(self) -> int:
        return math.ceil(self.omit_s)

    @property
    def client_timeout(self) -> float:
        return self.seconds + self.omit + self.connect_timeout_ms / 1000 + 15


@dataclass(frozen=True, slots=True)
class IperfReport:
    """The numbers of one iperf3 run; ``error`` is iperf3's own message when it failed."""

    version: str | None
    error: str | None = None
    protocol: str = "TCP"
    received_bps: float | None = None
    sent_bps: float | None = None
    retransmits: int | None = None
    cpu_host_pct: float | None = None
    cpu_remote_pct: float | None = None
    jitter_ms: float | None = None
    lost_packets: int | None = None
    packets: int | None = None
    lost_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Test:
    """One iperf3 run: data flows from ``client`` to ``server`` (the server's address)."""

    client: str
    server: str
    address: str
    net: str | None
    protocol: str  # tcp | udp
    streams: int

    def describe(self) -> str:
        where = f" via {self.net}" if self.net else ""
        return f"{self.client}->{self.server}{where} ({self.protocol}, {self.streams} " \
               f"stream{'s' if self.streams > 1 else ''})"


def decode_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``, ignoring whatever precedes or follows it."""
    start = text.find("{")
    if start < 0:
        raise IperfParseError(f"no JSON in iperf3 output: {text.strip()[:300]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise IperfParseError(f"truncated or invalid iperf3 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise IperfParseError("iperf3 JSON is not an object")
    return value


def _number(data: dict[str, Any], *path: str) -> float | None:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _integer(data: dict[str, Any], *path: str) -> int | None:
    value = _number(data, *path)
    return None if value is None else int(value)


def parse_iperf3(text: str) -> IperfReport:
    """Parse ``iperf3 -c … -J`` output (TCP or UDP); raises IperfParseError without a report."""
    data = decode_json(text)
    start = data.get("start")
    version = start.get("version") if isinstance(start, dict) else None
    version = str(version) if version else None
    if data.get("error"):
        return IperfReport(version=version, error=str(data["error"]))
    test = start.get("test_start") if isinstance(start, dict) else None
    protocol = str(test.get("protocol", "TCP")) if isinstance(test, dict) else "TCP"
    received = _number(data, "end", "sum_received", "bits_per_second")
    if received is None:
        raise IperfParseError("iperf3 JSON has no end.sum_received.bits_per_second")
    host_cpu = _number(data, "end", "cpu_utilization_percent", "host_total")
    remote_cpu = _number(data, "end", "cpu_utilization_percent", "remote_total")
    sent = _number(data, "end", "sum_sent", "bits_per_second")
    if protocol == "UDP":
        # The receiver's view: end.sum_received (end.sum mixes sender and receiver fields).
        return IperfReport(
            version=version, protocol="UDP", received_bps=received, sent_bps=sent,
            jitter_ms=_number(data, "end", "sum_received", "jitter_ms"),
            lost_packets=_integer(data, "end", "sum_received", "lost_packets"),
            packets=_integer(data, "end", "sum_received", "packets"),
            lost_pct=_number(data, "end", "sum_received", "lost_percent"),
            cpu_host_pct=host_cpu, cpu_remote_pct=remote_cpu)
    return IperfReport(version=version, received_bps=received, sent_bps=sent,
                       retransmits=_integer(data, "end", "sum_sent", "retransmits"),
                       cpu_host_pct=host_cpu, cpu_remote_pct=remote_cpu)


def _pause(seconds: float) -> None:
    """The backoff between attempts (a seam for tests)."""
    time.sleep(seconds)


def _wait_listening(testbed: Testbed, host: str, port: int,
                    server: subprocess.Popen[bytes]) -> str | None:
    """None once ``port`` listens on ``host``; otherwise why not."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    delay = 0.01
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"iperf3 server exited with status {server.returncode} before listening"
        if testbed.listening(host, port):
            if server.poll() is not None:  # someone else's socket, and ours failed to bind
                continue
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return f"iperf3 server did not start listening on port {port} in {LISTEN_TIMEOUT_S:g} s"


def _one_test(testbed: Testbed, test: Test, options: BandwidthOptions, attempt: int,
              logs: list[str]) -> IperfReport | str:
    """One server/client run: the report, or a (possibly retryable) error message."""
    port = testbed.next_port()
    for _ in range(8):  # on a shared host (local, ssh) skip ports someone else listens on
        if not testbed.listening(test.server, port):
            break
        port = testbed.next_port()
    log_path = (testbed.state_dir / SUITE /
                f"server-{test.client}-{test.server}-{test.protocol}{test.streams}-{attempt}.log")
    idle = options.seconds + options.omit + options.connect_timeout_ms // 1000 + 30
    server = testbed.spawn(["iperf3", "-s", "-1", "-p", str(port), "--idle-timeout", str(idle)],
                           host=test.server, log_path=log_path)
    server_log = ""
    try:
        problem = _wait_listening(testbed, test.server, port, server)
        if problem:
            server_log = log_path.read_text(errors="replace") if log_path.exists() else ""
            return problem + (f": {server_log.strip()[-300:]}" if server_log.strip() else "")
        argv = ["iperf3", "-c", test.address, "-p", str(port), "-J", "-t", str(options.seconds),
                "-O", str(options.omit), "-P", str(test.streams),
                "--connect-timeout", str(options.connect_timeout_ms)]
        if test.protocol == "udp":
            argv += ["-u", "-b", f"{options.udp_rate_mbit:g}M"]
        done = testbed.run(argv, host=test.client, timeout=options.client_timeout)
        logs.append(f"$ [{test.client}] {' '.join(argv)}  (exit {done.returncode})")
        try:
            report = parse_iperf3(done.stdout)
        except IperfParseError as exc:
            return f"{exc}; stderr: {done.stderr.strip()[:300]}"
        return report.error if report.error else report
    finally:
        testbed.stop(server)
        if not server_log and log_path.exists():
            server_log = log_path.read_text(errors="replace")
        if server_log.strip():
            logs.append(f"server on {test.server}:{port}: {server_log.strip()[-500:]}")


def _measure(test: Test, report: IperfReport) -> list[Measurement]:
    labels = {"src": test.client, "dst": test.server, "protocol": test.protocol,
              "streams": str(test.streams)}
    if test.net:
        labels["net"] = test.net
    assert report.received_bps is not None  # parse_iperf3 guarantees it without an error
    found: list[Measurement] = []

    def add(metric: str, value: float | None, unit: str, better: Better,
            events: int | None = None, trials: int | None = None) -> None:
        if value is not None:
            found.append(Measurement(SUITE, metric, value, unit, better, dict(labels),
                                     events=events, trials=trials))

    if test.protocol == "udp":
        add("udp_throughput_gbps", report.received_bps / 1e9, "Gbit/s", Better.HIGHER)
        add("udp_jitter_ms", report.jitter_ms, "ms", Better.LOWER)
        # The counts behind the rate, so loss is judged as lost datagrams of those sent.
        add("udp_loss_pct", report.lost_pct, "%", Better.LOWER, report.lost_packets,
            report.packets)
    else:
        add("throughput_gbps", report.received_bps / 1e9, "Gbit/s", Better.HIGHER)
        add("retransmits", None if report.retransmits is None else float(report.retransmits),
            "count", Better.LOWER)
    add("cpu_sender_pct", report.cpu_host_pct, "%", Better.LOWER)
    add("cpu_receiver_pct", report.cpu_remote_pct, "%", Better.LOWER)
    return found


def _pairs(testbed: Testbed, which: str | tuple[str, ...],
           reverse: bool) -> list[tuple[Target, bool]]:
    """(target, forward?) for every direction to measure; reverse ones swap the roles."""
    targets = testbed.targets()
    if isinstance(which, tuple):
        chosen = []
        for entry in which:
            pair, _, net = entry.partition("@")
            src, _, dst = pair.partition("->")
            match = [t for t in targets if (t.src, t.dst) == (src, dst)
                     and (not net or t.net == net or (t.net is None and net == "lan"))]
            if not match:
                raise InfraError(f"bandwidth pair {entry!r}: no such path on testbed "
                                 f"{testbed.name}")
            chosen.append(match[0])
    else:
        order = {h.name: i for i, h in enumerate(testbed.hosts)}
        chosen = [t for t in targets if not reverse or order[t.src] < order[t.dst]]
        if which == "first":
            chosen = chosen[:1]
    directions = [(t, True) for t in chosen]
    if reverse:
        directions = [d for t in chosen for d in ((t, True), (t, False))]
    return directions


def _address_of(testbed: Testbed, target: Target) -> str:
    """The source's address on the target's network: where reverse traffic goes."""
    if target.net and target.net != "routed":
        found = testbed.host_networks(target.src).get(target.net)
        if found:
            return found[0]
    return testbed.host(target.src).address


def _tests(testbed: Testbed, options: BandwidthOptions) -> list[Test]:
    tests: list[Test] = []
    for target, forward in _pairs(testbed, options.pairs, options.reverse):
        if forward:
            client, server, address = target.src, target.dst, target.address
        else:
            client, server, address = target.dst, target.src, _address_of(testbed, target)
        tests.append(Test(client, server, address, target.net, "tcp", options.streams))
        if not forward:
            continue
        if options.parallel_streams and options.parallel_streams != options.streams:
            tests.append(Test(client, server, address, target.net, "tcp",
                              options.parallel_streams))
        if options.udp_rate_mbit:
            tests.append(Test(client, server, address, target.net, "udp", 1))
    return tests


def run(testbed: Testbed, options: BandwidthOptions) -> SuiteResult:
    """Measure the chosen pairs; never raises for tool problems."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    try:
        tests = _tests(testbed, options)
        if not tests:
            logs.append("fewer than two hosts: nothing to measure")
        for test in tests:
            outcome: IperfReport | str = "not run"
            for attempt in range(options.retries + 1):
                outcome = _one_test(testbed, test, options, attempt, logs)
                if isinstance(outcome, IperfReport):
                    break
                logs.append(f"{test.describe()} attempt {attempt + 1}: {outcome}")
                if not any(marker in outcome for marker in RETRYABLE):
                    break
                if attempt < options.retries:
                    _pause(BACKOFF_S * 2 ** attempt)
            if isinstance(outcome, str):
                result.infra_error = f"iperf3 {test.client}->{test.server}: {outcome}"
                break
            if outcome.version:
                result.tool_versions["iperf3"] = outcome.version
            result.measurements.extend(_measure(test, outcome))
            rate = (outcome.received_bps or 0) / 1e9
            extra = (f"jitter {outcome.jitter_ms or 0:.3f} ms, loss {outcome.lost_pct or 0:g}%"
                     if test.protocol == "udp" else f"{outcome.retransmits} retransmits")
            logs.append(f"{test.describe()}: {rate:.3f} Gbit/s received, {extra}, cpu sender "
                        f"{outcome.cpu_host_pct or 0:.0f}% receiver "
                        f"{outcome.cpu_remote_pct or 0:.0f}%")
    except InfraError as exc:
        result.infra_error = str(exc)
    if result.infra_error:
        result.measurements.clear()
    result.log = "\n".join(logs)
    return result
