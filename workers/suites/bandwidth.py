"""The bandwidth suite: iperf3 TCP throughput and retransmits between hosts.

iperf3 3.12 is fussy in ways that decide the design: a server runs one test at a time and a
second client gets "the server is busy" (so every test gets its own one-off ``-s -1`` server on a
fresh port); a client started before the server listens fails (so we wait until ``ss`` shows the
listening socket); errors come as a top-level ``"error"`` key, often with exit status 0, and
text can follow the JSON (so we decode from the first ``{`` with ``raw_decode`` and always look
for ``error``). The rate we report is the receiver's: the sender's is inflated by socket buffers.

Every failure here is an infra error, including a refused connection after the retries: whether
the hosts can reach each other at all is the ping suite's question, answered as a check.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Literal

from certifier.domain.results import Better, Measurement, SuiteResult
from workers.testbed.base import Host, InfraError, Testbed
from workers.testbed.process import kill_group

SUITE = "bandwidth"
LISTEN_TIMEOUT_S = 5.0
RETRYABLE = ("server is busy", "unable to connect", "Connection refused",
             "control socket has closed", "Address already in use", "did not start listening")


class IperfParseError(ValueError):
    """The output is not a complete iperf3 JSON report (no JSON, truncated, missing keys)."""


@dataclass(frozen=True, slots=True)
class BandwidthOptions:
    """One TCP test per pair: ``pairs="first"`` measures h1->h2 only, ``"all"`` every pair.

    iperf3 takes whole seconds, so durations are rounded up.
    """

    duration_s: float = 2
    omit_s: float = 0
    streams: int = 1
    pairs: Literal["all", "first"] = "first"
    connect_timeout_ms: int = 3000
    retries: int = 2

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.omit_s < 0:
            raise ValueError("duration_s must be positive and omit_s not negative")
        if not 1 <= self.streams <= 128:
            raise ValueError("streams must be between 1 and 128")
        if self.pairs not in ("all", "first"):
            raise ValueError("pairs must be 'all' or 'first'")
        if self.connect_timeout_ms < 1 or self.retries < 0:
            raise ValueError("connect_timeout_ms must be positive and retries not negative")

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
    """The numbers of one iperf3 TCP run; ``error`` is iperf3's own message when it failed."""

    version: str | None
    error: str | None = None
    received_bps: float | None = None
    sent_bps: float | None = None
    retransmits: int | None = None
    cpu_host_pct: float | None = None
    cpu_remote_pct: float | None = None


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


def parse_iperf3(text: str) -> IperfReport:
    """Parse ``iperf3 -c … -J`` output; raises IperfParseError when there is no report."""
    data = decode_json(text)
    start = data.get("start")
    version = start.get("version") if isinstance(start, dict) else None
    version = str(version) if version else None
    if data.get("error"):
        return IperfReport(version=version, error=str(data["error"]))
    received = _number(data, "end", "sum_received", "bits_per_second")
    if received is None:
        raise IperfParseError("iperf3 JSON has no end.sum_received.bits_per_second")
    retransmits = _number(data, "end", "sum_sent", "retransmits")
    return IperfReport(
        version=version, received_bps=received,
        sent_bps=_number(data, "end", "sum_sent", "bits_per_second"),
        retransmits=None if retransmits is None else int(retransmits),
        cpu_host_pct=_number(data, "end", "cpu_utilization_percent", "host_total"),
        cpu_remote_pct=_number(data, "end", "cpu_utilization_percent", "remote_total"))


def _free_port() -> int:
    """A port nobody listens on here; in a namespace every port is free anyway."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(testbed: Testbed, host: str, port: int,
                    server: subprocess.Popen[bytes]) -> str | None:
    """None once ``port`` listens on ``host``; otherwise why not."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"iperf3 server exited with status {server.returncode} before listening"
        probe = testbed.run(["ss", "-tlnH", "sport", "=", f":{port}"], host=host, timeout=5)
        if probe.ok and probe.stdout.strip():
            return None
        time.sleep(0.05)
    return f"iperf3 server did not start listening on port {port} in {LISTEN_TIMEOUT_S:g} s"


def _one_test(testbed: Testbed, src: Host, dst: Host, options: BandwidthOptions,
              attempt: int, logs: list[str]) -> IperfReport | str:
    """One server/client run: the report, or a (possibly retryable) error message."""
    port = _free_port()
    log_path = testbed.state_dir / SUITE / f"server-{src.name}-{dst.name}-{attempt}.log"
    idle = options.seconds + options.omit + options.connect_timeout_ms // 1000 + 30
    server = testbed.spawn(["iperf3", "-s", "-1", "-p", str(port), "--idle-timeout", str(idle)],
                           host=dst.name, log_path=log_path)
    try:
        problem = _wait_listening(testbed, dst.name, port, server)
        if problem:
            return problem
        argv = ["iperf3", "-c", dst.address, "-p", str(port), "-J", "-t", str(options.seconds),
                "-O", str(options.omit), "-P", str(options.streams),
                "--connect-timeout", str(options.connect_timeout_ms)]
        done = testbed.run(argv, host=src.name, timeout=options.client_timeout)
        logs.append(f"$ [{src.name}] {' '.join(argv)}  (exit {done.returncode})")
        try:
            report = parse_iperf3(done.stdout)
        except IperfParseError as exc:
            return f"{exc}; stderr: {done.stderr.strip()[:300]}"
        return report.error if report.error else report
    finally:
        kill_group(server)
        server_log = log_path.read_text(errors="replace").strip() if log_path.exists() else ""
        if server_log:
            logs.append(f"server on {dst.name}:{port}: {server_log[-500:]}")


def _measure(src: Host, dst: Host, streams: int, report: IperfReport) -> list[Measurement]:
    labels = {"src": src.name, "dst": dst.name, "protocol": "tcp", "streams": str(streams)}
    assert report.received_bps is not None  # parse_iperf3 guarantees it without an error
    found = [Measurement(SUITE, "throughput_gbps", report.received_bps / 1e9, "Gbit/s",
                         Better.HIGHER, labels)]
    if report.retransmits is not None:
        found.append(Measurement(SUITE, "retransmits", float(report.retransmits), "count",
                                 Better.LOWER, dict(labels)))
    return found


def _pairs(testbed: Testbed, which: str) -> list[tuple[Host, Host]]:
    pairs = [(a, b) for a in testbed.hosts for b in testbed.hosts if a.name != b.name]
    return pairs[:1] if which == "first" else pairs


def run(testbed: Testbed, options: BandwidthOptions) -> SuiteResult:
    """Measure TCP throughput for the chosen pairs; never raises for tool problems."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    pairs = _pairs(testbed, options.pairs)
    if not pairs:
        logs.append("fewer than two hosts: nothing to measure")
    try:
        for src, dst in pairs:
            outcome: IperfReport | str = "not run"
            for attempt in range(options.retries + 1):
                outcome = _one_test(testbed, src, dst, options, attempt, logs)
                if isinstance(outcome, IperfReport):
                    break
                logs.append(f"{src.name}->{dst.name} attempt {attempt + 1}: {outcome}")
                if not any(marker in outcome for marker in RETRYABLE):
                    break
                time.sleep(0.2 * (attempt + 1))
            if isinstance(outcome, str):
                result.infra_error = f"iperf3 {src.name}->{dst.name}: {outcome}"
                break
            if outcome.version:
                result.tool_versions["iperf3"] = outcome.version
            result.measurements.extend(_measure(src, dst, options.streams, outcome))
            logs.append(f"{src.name}->{dst.name}: {(outcome.received_bps or 0) / 1e9:.3f} Gbit/s"
                        f" received, {outcome.retransmits} retransmits, cpu sender "
                        f"{outcome.cpu_host_pct or 0:.0f}% receiver "
                        f"{outcome.cpu_remote_pct or 0:.0f}%")
    except InfraError as exc:
        result.infra_error = str(exc)
    result.log = "\n".join(logs)
    return result
