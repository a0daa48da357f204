"""The calibration probe: the same tools on a bare two-host testbed, at the start and end of a run.

Host pressure says the machine was busy; the probe says what that did to the very numbers the
suites measure. It builds a testbed of its own with no recipe at all — two hosts ``p1`` and
``p2`` on one bridge, addresses from ``198.19.255.240/28`` (the top of the benchmarking range,
away from the default testbed subnets; the hosts live in their own namespaces, so it could not
clash with a testbed's addresses anyway) — and runs, briefly, the suites' own code, after half
a second of doing nothing at all, whose host pressure is the machine's *background*: other work
only, since nothing of ours runs yet:

* ping: 20 packets 10 ms apart from ``p1`` to ``p2`` and back (rtt, loss);
* iperf3: one TCP stream ``p1 → p2`` for 1 s (Gbit/s);
* fio: 0.5 s of 4 KiB random writes on a 4 MiB file in the probe's state folder, and the best
  100 ms window of it (IOPS, from fio's IOPS log). A virtual disk's write rate swings within
  half a second even on an idle machine (seen here: 68 to 170 k IOPS for whole 0.5 s runs,
  windows of one run from 34 to 199 k), so the whole run's mean read a slow moment as a busy
  testbed (43 k against a usual 110 k, on an idle machine); the best window is what the disk
  could do. A disk kept busy by others shows in the host's io pressure, and lowers the best
  window too when it stays busy.

Then it tears the testbed down. The probe goes through :func:`create_testbed`, so it is
recorded on disk before the first namespace exists, and a SIGKILL in the middle leaves a record
that the janitor reaps (``workers/testbed/reaper.py``). Its tag is the run's tag prefix with
``00`` before the run id (:func:`workers.testbed.tags.probe_tag`; a control testbed's has one
``0``), inside the prefix the janitor's orphan scan covers, and its testbed name is the run's
testbed's, so the next claim of that testbed clears a probe left behind too.

Per driver: ``netns`` builds namespaces; ``local`` (no root) runs the same tools on loopback —
a machine-wide calibration, comparable only with itself; ``ssh`` testbeds are other machines,
which a probe on the worker says nothing about, so it is skipped with a note. The probe never
raises: whatever goes wrong becomes a note, and the run goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certifier.domain.results import SuiteResult
from workers.environment import Recorder, span_figures
from workers.suites import bandwidth, ping, storage
from workers.testbed.base import InfraError, Testbed, TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed

log = logging.getLogger(__name__)

PROBE_SUBNET = "198.19.255.240/28"
PROBE_HOSTS = ("p1", "p2")


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """How long each tool runs; ``fio: False`` skips the storage part."""

    ping_count: int = 20
    ping_interval: float = 0.01
    tcp_seconds: float = 1.0
    fio: bool = True
    fio_size: str = "4M"
    fio_seconds: float = 0.5
    fio_window_ms: int = 100
    quiet_seconds: float = 0.5


def _values(result: SuiteResult, metric: str) -> list[float]:
    return [m.value for m in result.measurements if m.metric == metric]


def _tools(bed: Testbed, options: ProbeOptions, figures: dict[str, Any], notes: list[str]) -> None:
    pinged = ping.run(bed, ping.PingOptions(count=options.ping_count,
                                            interval=options.ping_interval, mtu_check=False))
    if pinged.infra_error:
        notes.append(f"ping: {pinged.infra_error}")
    rtts, losses = _values(pinged, "rtt_avg_ms"), _values(pinged, "loss_pct")
    figures["probe_rtt_ms"] = round(max(rtts), 4) if rtts else None
    figures["probe_loss_pct"] = round(max(losses), 3) if losses else None
    tcp = bandwidth.run(bed, bandwidth.BandwidthOptions(
        duration_s=options.tcp_seconds, pairs="first", reverse=False, parallel_streams=0,
        udp_rate_mbit=0, retries=1))
    if tcp.infra_error:
        notes.append(f"iperf3: {tcp.infra_error}")
    rates = _values(tcp, "throughput_gbps")
    figures["probe_tcp_gbps"] = round(min(rates), 4) if rates else None
    if not options.fio:
        figures["probe_fio_iops"] = None
        notes.append("fio: skipped (calibration fio turned off)")
        return
    figures["probe_fio_iops"] = _fio(bed, options, notes)


def _fio(bed: Testbed, options: ProbeOptions, notes: list[str]) -> float | None:
    """4 KiB random writes on a small file in the probe's state folder, the best window of
    ``fio_window_ms`` (the whole run's mean where fio wrote no IOPS log): direct I/O, or
    buffered (noted) where the filesystem refuses it. Not the storage suite's scratch ext4:
    making one costs a second, and the probe compares the host with itself only."""
    data = bed.state_dir / "probe.fio"
    log_prefix = bed.state_dir / "probe-iops"
    try:
        for direct in (1, 0):
            argv = ["fio", "--name=probe", f"--filename={data}", f"--size={options.fio_size}",
                    f"--runtime={int(options.fio_seconds * 1000)}ms", "--time_based",
                    "--rw=randwrite", "--bs=4k", "--ioengine=psync" if not direct
                    else "--ioengine=libaio", "--iodepth=16", f"--direct={direct}",
                    f"--write_iops_log={log_prefix}", f"--log_avg_msec={options.fio_window_ms}",
                    "--output-format=json"]
            done = bed.run(argv, timeout=options.fio_seconds + 60)
            try:
                job = storage.parse_fio(done.stdout).jobs.get("probe")
            except storage.FioParseError as exc:
                job, why = None, str(exc)
            else:
                why = "no probe job in the report" if job is None else f"error {job.error}"
            if done.ok and job is not None and not job.error:
                if not direct:
                    notes.append("fio: direct I/O refused here; buffered figure")
                best = best_window(log_prefix)
                if best is None:
                    notes.append("fio: no IOPS log; the whole run's mean")
                return round(job.write_iops if best is None else best, 1)
            notes.append(f"fio (direct={direct}): exit {done.returncode}, {why}: "
                         f"{done.output.strip()[:200]}")
        return None
    finally:
        data.unlink(missing_ok=True)
        for log in log_prefix.parent.glob(log_prefix.name + "_*.log"):
            log.unlink(missing_ok=True)


def best_window(log_prefix: Path) -> float | None:
    """The highest write IOPS of one window in fio's IOPS log (``<prefix>_iops.1.log``: lines
    of "msec, IOPS, direction, block size, offset…", direction 1 for writes); None if there is
    no such log or no write window in it."""
    path = log_prefix.parent / f"{log_prefix.name}_iops.1.log"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    best: float | None = None
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        try:
            value, direction = float(cells[1]), int(cells[2])
        except (IndexError, ValueError):
            continue
        if direction == 1 and value >= 0 and (best is None or value > best):
            best = value
    return best


def probe(recorder: Recorder, which: str, *, testbed: str, driver: str, tag: str | None,
          state_dir: Path, records_dir: Path, options: ProbeOptions | None = None) -> None:
    """Run the probe and store its figures as ``recorder.probes[which]``; never raises.

    The figures: ``background``, the host's pressure during a quiet moment before anything
    starts (only other work on the machine shows there); ``seconds`` (the probe's wall time,
    that moment, build and teardown included); ``probe_rtt_ms``, ``probe_loss_pct``,
    ``probe_tcp_gbps``, ``probe_fio_iops``; the host's pressure during the tools (``host``);
    the driver; and ``notes``.
    """
    options = options or ProbeOptions()
    figures: dict[str, Any] = {"driver": driver}
    notes: list[str] = []
    recorder.probes[which] = figures
    if driver == "ssh":
        figures["skipped"] = ("ssh testbeds are other machines: a probe on the worker would "
                              "say nothing about them")
        return
    quiet = recorder.sample()
    time.sleep(options.quiet_seconds)  # nothing of ours runs: only others' work shows
    figures["background"] = span_figures(quiet, recorder.sample())
    if tag is None:
        figures["skipped"] = "no probe tag left for this run id"
        return
    before = recorder.sample()
    try:
        spec = TestbedSpec(name=testbed, driver="netns" if driver == "netns" else "local",
                           hosts=PROBE_HOSTS, subnet=PROBE_SUBNET)
        with create_testbed(spec, tag=tag, state_dir=state_dir, records_dir=records_dir) as bed:
            _tools(bed, options, figures, notes)
    except (InfraError, TestbedError, OSError) as exc:
        notes.append(f"probe failed: {exc}")
    except Exception as exc:  # a bug in the probe must not end the run
        log.exception("calibration probe %s of testbed %s failed", which, testbed)
        notes.append(f"probe failed unexpectedly: {exc!r}")
    figures["host"] = span_figures(before, recorder.sample())
    figures["seconds"] = round(time.monotonic() - quiet.at, 3)
    figures["notes"] = notes


def describe(which: str, figures: dict[str, Any]) -> str:
    """One line for the run log."""
    if "skipped" in figures:
        return f"environment: probe {which} skipped: {figures['skipped']}"
    parts = []
    for key, label, unit in (("probe_rtt_ms", "rtt", "ms"), ("probe_loss_pct", "loss", "%"),
                             ("probe_tcp_gbps", "tcp", "Gbit/s"),
                             ("probe_fio_iops", "fio", "IOPS")):
        value = figures.get(key)
        parts.append(f"{label} {value:g} {unit}" if isinstance(value, int | float)
                     else f"{label} n/a")
    quiet = figures.get("background") or {}
    cpu = quiet.get("cpu_pressure_pct")
    if isinstance(cpu, int | float):
        parts.append(f"background cpu pressure {cpu:g} %")
    notes = "; ".join(figures.get("notes") or ())
    return (f"environment: probe {which} ({figures.get('seconds', 0):g} s): " + ", ".join(parts)
            + (f" ({notes})" if notes else ""))
