"""The storage suite: fio sequential write throughput and 4 KiB random read IOPS and latency.

Two jobs separated by ``stonewall`` so they never overlap: a 1 MiB sequential write, then 4 KiB
random reads at queue depth 16 on the file just written. Direct I/O is the default, because
without it (and without a file much larger than RAM) fio measures the page cache; a filesystem
that refuses ``direct=1`` (tmpfs on older kernels, some overlays) gets a buffered rerun, and its
measurements are labelled ``io=buffered`` so they are never compared with direct-I/O numbers.

fio writes its JSON report to a file (``--output``) because notes like "fio: …" can land in the
output stream; the parser still skips any text around the JSON object.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certifier.domain.results import Better, Measurement, SuiteResult
from workers.testbed.base import InfraError, Testbed

SUITE = "storage"
EINVAL = 22
DIRECT_REFUSED = ("does not support direct=1", "does not support O_DIRECT")
SIZE_RE = re.compile(r"^[1-9][0-9]{0,5}[KMG]$")


class FioParseError(ValueError):
    """The fio output holds no complete JSON report."""


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """Data-file size (fio syntax, e.g. "64M"), seconds per job, and whether to bypass caches."""

    size: str = "64M"
    runtime_s: float = 2
    direct: bool = True
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not SIZE_RE.match(self.size):
            raise ValueError(f"size {self.size!r} must look like 64M, 512K or 1G")
        if self.runtime_s <= 0:
            raise ValueError("runtime_s must be positive")

    @property
    def seconds(self) -> int:
        return max(1, round(self.runtime_s))

    @property
    def fio_timeout(self) -> float:
        # Two jobs, plus laying out the file, plus a generous margin for slow disks.
        return self.timeout_s or 2 * self.seconds + 120.0


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


@dataclass(frozen=True, slots=True)
class FioReport:
    version: str | None
    jobs: dict[str, FioJob] = field(default_factory=dict)


def _p99(direction: dict[str, Any]) -> float | None:
    percentiles = direction.get("clat_ns", {}).get("percentile", {})
    value = percentiles.get("99.000000")
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
                read_clat_p99_ns=_p99(read), write_bw_bytes=float(write["bw_bytes"]),
                write_iops=float(write["iops"]), write_clat_p99_ns=_p99(write),
                io_bytes=int(read["io_bytes"]) + int(write["io_bytes"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FioParseError(f"fio JSON job without expected field: {exc!r}") from None
    version = data.get("fio version")
    return FioReport(version=str(version) if version else None, jobs=jobs)


def _engine(testbed: Testbed) -> str:
    """libaio gives a real queue depth; psync (depth 1) is the portable fallback."""
    try:
        listing = testbed.run(["fio", "--enghelp"], timeout=30)
    except InfraError:
        return "psync"
    return "libaio" if re.search(r"^\s*libaio\s*$", listing.stdout, re.M) else "psync"


def _argv(options: StorageOptions, data: Path, output: Path, engine: str,
          direct: bool) -> list[str]:
    common = [f"--filename={data}", f"--size={options.size}", f"--runtime={options.seconds}",
              "--time_based", f"--ioengine={engine}", f"--direct={int(direct)}",
              "--percentile_list=50:99", "--iodepth=16"]
    return ["fio", "--output-format=json", f"--output={output}", *common,
            "--name=seq_write", "--rw=write", "--bs=1M", "--end_fsync=1", "--stonewall",
            "--name=rand_read", "--rw=randread", "--bs=4k", "--stonewall"]


def _measure(report: FioReport, io: str) -> list[Measurement]:
    seq, rand = report.jobs["seq_write"], report.jobs["rand_read"]
    seq_labels = {"job": "seq_write", "io": io}
    rand_labels = {"job": "rand_read", "io": io}
    found = [
        Measurement(SUITE, "seq_write_mbps", seq.write_bw_bytes / 1e6, "MB/s", Better.HIGHER,
                    seq_labels),
        Measurement(SUITE, "rand_read_iops", rand.read_iops, "IOPS", Better.HIGHER, rand_labels),
    ]
    if rand.read_clat_p99_ns is not None:
        found.append(Measurement(SUITE, "rand_read_clat_p99_us", rand.read_clat_p99_ns / 1000,
                                 "µs", Better.LOWER, dict(rand_labels)))
    if seq.write_clat_p99_ns is not None:
        found.append(Measurement(SUITE, "seq_write_clat_p99_us", seq.write_clat_p99_ns / 1000,
                                 "µs", Better.LOWER, dict(seq_labels)))
    return found


def _attempt(testbed: Testbed, options: StorageOptions, workdir: Path, engine: str,
             direct: bool, logs: list[str]) -> FioReport | str:
    """One fio run: its report, or why it failed ("direct refused" is recognised by caller)."""
    output = workdir / f"fio-{'direct' if direct else 'buffered'}.json"
    output.unlink(missing_ok=True)
    argv = _argv(options, workdir / "fio.data", output, engine, direct)
    done = testbed.run(argv, timeout=options.fio_timeout, cwd=workdir)
    notes = done.output.strip()
    logs.append(f"$ {' '.join(argv)}  (exit {done.returncode})" + (f"\n{notes}" if notes else ""))
    text = output.read_text(errors="replace") if output.exists() else ""
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
    missing = {"seq_write", "rand_read"} - set(report.jobs)
    idle = [name for name, job in report.jobs.items() if job.io_bytes == 0]
    if missing or idle:
        return f"fio report incomplete: missing jobs {sorted(missing)}, no I/O in {idle}"
    return report


def run(testbed: Testbed, options: StorageOptions) -> SuiteResult:
    """Run the fio jobs on the controller under the testbed's state folder; never raises."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    workdir = testbed.state_dir / SUITE
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        engine = _engine(testbed)
        outcome = _attempt(testbed, options, workdir, engine, options.direct, logs)
        io = "direct" if options.direct else "buffered"
        if outcome == "direct refused":
            logs.append("direct I/O refused by the filesystem: rerunning buffered "
                        "(measurements labelled io=buffered; they include the page cache)")
            io = "buffered"
            outcome = _attempt(testbed, options, workdir, engine, False, logs)
        if isinstance(outcome, str):
            result.infra_error = outcome
        else:
            if outcome.version:
                result.tool_versions["fio"] = outcome.version
            result.measurements.extend(_measure(outcome, io))
            logs.append(f"engine {engine}, {io} I/O, size {options.size}, "
                        f"{options.seconds} s per job")
    except InfraError as exc:
        result.infra_error = str(exc)
    except OSError as exc:
        result.infra_error = f"storage work folder {workdir}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            (workdir / "fio.data").unlink(missing_ok=True)
    result.log = "\n".join(logs)
    return result
