"""The storage suite: fio sequential read and write, 4 KiB random read and write.

Four jobs separated by ``stonewall`` so they never overlap: 1 MiB sequential write (which lays out
the data file), 1 MiB sequential read, 4 KiB random write, 4 KiB random read, each at the same
queue depth. Each yields MB/s, IOPS and completion latency p50 and p99 in µs.

The jobs run on a scratch filesystem the testbed makes in its state folder — ext4 on a loop
device (:meth:`Testbed.scratch`) — so that ``direct=1`` works (tmpfs refuses it) and the numbers
do not depend on what the worker's own disk is formatted with; without direct I/O (and without a
file much larger than RAM) fio would measure the page cache. A filesystem that still refuses
``direct=1`` gets a buffered rerun, and its measurements are labelled ``io=buffered`` so they are
never compared with direct-I/O numbers; ``fs`` says which filesystem it was.

fio writes its JSON report to a file (``--output``) because notes like "fio: …" can land in the
output stream; the parser still skips any text around the JSON object.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from certifier.domain.results import Better, Measurement, SuiteResult
from certifier.settings_policy import StorageSuiteConfig
from workers.suites.options import within
from workers.testbed.base import InfraError, Testbed

SUITE = "storage"
EINVAL = 22
DIRECT_REFUSED = ("does not support direct=1", "does not support O_DIRECT")
SIZE_RE = re.compile(r"^([1-9][0-9]{0,5})([KMG])$")
JOBS: dict[str, tuple[str, str, str]] = {  # name: (fio rw, block size, direction)
    "seq_write": ("write", "1M", "write"),
    "seq_read": ("read", "1M", "read"),
    "rand_write": ("randwrite", "4k", "write"),
    "rand_read": ("randread", "4k", "read"),
}


class FioParseError(ValueError):
    """The fio output holds no complete JSON report."""


_CONFIG = StorageSuiteConfig()


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """Data-file size (fio syntax, e.g. "64M"), seconds per job, which jobs, and whether to
    bypass caches. Defaults and bounds: ``suites.storage`` (``workers/suites/options``); at least
    one job."""

    size: str = _CONFIG.size
    runtime_s: float = _CONFIG.runtime_s
    direct: bool = _CONFIG.direct
    timeout_s: float | None = None
    jobs: tuple[str, ...] = _CONFIG.jobs
    iodepth: int = _CONFIG.iodepth

    def __post_init__(self) -> None:
        object.__setattr__(self, "jobs", tuple(self.jobs))
        within(StorageSuiteConfig, self)
        if not self.jobs:
            raise ValueError(f"jobs must be some of {', '.join(JOBS)}")

    @property
    def seconds(self) -> int:
        return max(1, round(self.runtime_s))

    @property
    def size_bytes(self) -> int:
        match = SIZE_RE.match(self.size)
        assert match is not None  # checked in __post_init__
        return int(match.group(1)) << {"K": 10, "M": 20, "G": 30}[match.group(2)]

    @property
    def fio_timeout(self) -> float:
        # The jobs, plus laying out the file, plus a generous margin for slow disks.
        return self.timeout_s or len(self.jobs) * self.seconds + 120.0


@dataclass(frozen=True, slots=True)
class FioJob:
    """One job's numbers in the units fio reports (bytes/s, IOPS, nanoseconds)."""

    name: str
    error: int
    read_bw_bytes: float
    read_iops: float
    read_clat_p99_ns: float | None
    write_bw_bytes: float
    write_iops: float
    write_clat_p99_ns: float | None
    io_bytes: int
    read_clat_p50_ns: float | None = None
    write_clat_p50_ns: float | None = None


@dataclass(frozen=True, slots=True)
class FioReport:
    version: str | None
    jobs: dict[str, FioJob] = field(default_factory=dict)


def _percentile(direction: dict[str, Any], key: str) -> float | None:
    percentiles = direction.get("clat_ns", {}).get("percentile", {})
    value = percentiles.get(key) if isinstance(percentiles, dict) else None
    return float(value) if isinstance(value, int | float) else None


def parse_fio(text: str) -> FioReport:
    """Parse fio's JSON report, skipping any notes before or after it."""
    start = text.find("{")
    if start < 0:
        raise FioParseError(f"no JSON in fio output: {text.strip()[:300]!r}")
    try:
        data, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise FioParseError(f"truncated or invalid fio JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise FioParseError("fio JSON has no job list")
    jobs: dict[str, FioJob] = {}
    try:
        for job in data["jobs"]:
            read, write = job["read"], job["write"]
            jobs[str(job["jobname"])] = FioJob(
                name=str(job["jobname"]), error=int(job.get("error", 0)),
                read_bw_bytes=float(read["bw_bytes"]), read_iops=float(read["iops"]),
                read_clat_p99_ns=_percentile(read, "99.000000"),
                write_bw_bytes=float(write["bw_bytes"]), write_iops=float(write["iops"]),
                write_clat_p99_ns=_percentile(write, "99.000000"),
                io_bytes=int(read["io_bytes"]) + int(write["io_bytes"]),
                read_clat_p50_ns=_percentile(read, "50.000000"),
                write_clat_p50_ns=_percentile(write, "50.000000"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FioParseError(f"fio JSON job without expected field: {exc!r}") from None
    version = data.get("fio version")
    return FioReport(version=str(version) if version else None, jobs=jobs)


def _engine(testbed: Testbed, host: str | None) -> str:
    """libaio gives a real queue depth; psync (depth 1) is the portable fallback."""
    try:
        listing = testbed.run(["fio", "--enghelp"], host=host, timeout=30)
    except InfraError:
        return "psync"
    return "libaio" if re.search(r"^\s*libaio\s*$", listing.stdout, re.M) else "psync"


def _argv(options: StorageOptions, data: PurePosixPath, output: PurePosixPath, engine: str,
          direct: bool) -> list[str]:
    argv = ["fio", "--output-format=json", f"--output={output}", f"--filename={data}",
            f"--size={options.size}", f"--runtime={options.seconds}", "--time_based",
            f"--ioengine={engine}", f"--direct={int(direct)}", "--percentile_list=50:99",
            f"--iodepth={options.iodepth}"]
    for job in options.jobs:
        rw, block, direction = JOBS[job]
        argv += [f"--name={job}", f"--rw={rw}", f"--bs={block}"]
        if direction == "write" and rw == "write":
            argv.append("--end_fsync=1")
        argv.append("--stonewall")
    return argv


def metric_names() -> tuple[str, ...]:
    """Every metric this suite can record, for dashboards and thresholds to be checked against."""
    return tuple(f"{job}_{kind}" for job in JOBS
                 for kind in ("mbps", "iops", "clat_p50_us", "clat_p99_us"))


def _measure(report: FioReport, options: StorageOptions, io: str,
             fs: str) -> list[Measurement]:
    found: list[Measurement] = []
    for name in options.jobs:
        job = report.jobs[name]
        labels = {"job": name, "io": io, "fs": fs}
        reading = JOBS[name][2] == "read"
        bw = job.read_bw_bytes if reading else job.write_bw_bytes
        iops = job.read_iops if reading else job.write_iops
        p50 = job.read_clat_p50_ns if reading else job.write_clat_p50_ns
        p99 = job.read_clat_p99_ns if reading else job.write_clat_p99_ns
        found.append(Measurement(SUITE, f"{name}_mbps", bw / 1e6, "MB/s", Better.HIGHER,
                                 dict(labels)))
        found.append(Measurement(SUITE, f"{name}_iops", iops, "IOPS", Better.HIGHER,
                                 dict(labels)))
        for pct, value in (("p50", p50), ("p99", p99)):
            if value is not None:
                found.append(Measurement(SUITE, f"{name}_clat_{pct}_us", value / 1000, "µs",
                                         Better.LOWER, dict(labels)))
    return found


def _attempt(testbed: Testbed, host: str | None, options: StorageOptions,
             data: PurePosixPath, workdir: PurePosixPath, engine: str, direct: bool,
             logs: list[str]) -> FioReport | str:
    """One fio run: its report, or why it failed ("direct refused" is recognised by caller)."""
    output = workdir / f"fio-{'direct' if direct else 'buffered'}.json"
    if host is None:
        Path(output).unlink(missing_ok=True)
    else:
        testbed.run(["rm", "-f", str(output)], host=host, timeout=30)
    argv = _argv(options, data, output, engine, direct)
    done = testbed.run(argv, host=host, timeout=options.fio_timeout,
                       cwd=Path(workdir) if host is None else None)
    notes = done.output.strip()
    logs.append(f"$ {' '.join(argv)}  (exit {done.returncode})" + (f"\n{notes}" if notes else ""))
    text = testbed.read_text(output, host) or ""
    if direct and any(marker in notes + text for marker in DIRECT_REFUSED):
        return "direct refused"
    try:
        report = parse_fio(text or done.stdout)
    except FioParseError as exc:
        return f"{exc}" + (f"; fio said: {notes[:300]}" if notes else "")
    failed = {name: job.error for name, job in report.jobs.items() if job.error}
    if direct and EINVAL in failed.values():
        return "direct refused"
    if failed:
        return f"fio jobs failed: {failed}" + (f"; fio said: {notes[:300]}" if notes else "")
    if done.returncode != 0:
        return f"fio exited with status {done.returncode}: {notes[:300]}"
    missing = set(options.jobs) - set(report.jobs)
    idle = [name for name, job in report.jobs.items() if job.io_bytes == 0]
    if missing or idle:
        return f"fio report incomplete: missing jobs {sorted(missing)}, no I/O in {idle}"
    return report


def run(testbed: Testbed, options: StorageOptions) -> SuiteResult:
    """Run the fio jobs on the testbed's storage host (the controller for namespaces), on its
    scratch filesystem; never raises."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    host = testbed.storage_host
    workdir = testbed.workdir(host) / SUITE
    data: PurePosixPath | None = None
    try:
        if host is None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        else:
            testbed.run(["mkdir", "-p", str(workdir)], host=host, timeout=30)
        space = testbed.scratch(options.size_bytes, host)
        fs = "ext4-loop" if space.filesystem == "ext4-loop" else "plain"
        logs.append(f"scratch filesystem on {host or 'the controller'}: {space.path} "
                    f"({space.filesystem})")
        data = space.path / "fio.data"
        engine = _engine(testbed, host)
        outcome = _attempt(testbed, host, options, data, workdir, engine, options.direct, logs)
        io = "direct" if options.direct else "buffered"
        if outcome == "direct refused":
            logs.append("direct I/O refused by the filesystem: rerunning buffered "
                        "(measurements labelled io=buffered; they include the page cache)")
            io = "buffered"
            outcome = _attempt(testbed, host, options, data, workdir, engine, False, logs)
        if isinstance(outcome, str):
            result.infra_error = outcome
        else:
            if outcome.version:
                result.tool_versions["fio"] = outcome.version
            result.measurements.extend(_measure(outcome, options, io, fs))
            logs.append(f"engine {engine}, {io} I/O, size {options.size}, "
                        f"{options.seconds} s per job, iodepth {options.iodepth}")
    except InfraError as exc:
        result.infra_error = str(exc)
    except OSError as exc:
        result.infra_error = f"storage work folder {workdir}: {exc}"
    finally:
        if data is not None:
            with contextlib.suppress(OSError, InfraError):
                if host is None:
                    Path(data).unlink(missing_ok=True)
                else:
                    testbed.run(["rm", "-f", str(data)], host=host, timeout=30)
    result.log = "\n".join(logs)
    return result
