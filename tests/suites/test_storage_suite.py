"""The storage suite on a scripted testbed fed with captured fio 3.33 reports: the four jobs and
their metrics, the buffered fallback, and broken runs as infra errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from certifier.domain.results import Better
from workers.suites import storage
from workers.testbed.base import CommandResult, InfraError

from .conftest import DATA, FakeTestbed, Responder, data, result

MakeFake = Callable[..., FakeTestbed]
TWO_JOBS = ("seq_write", "rand_read")  # what the older captured reports hold


def _fio_with(*reports: tuple[str | None, str, int]) -> tuple[Responder, list[list[str]]]:
    """Successive fio runs write ``report`` (a fixture name or None) to --output, print
    ``stderr`` and exit with ``code``."""
    queue = list(reports)
    runs: list[list[str]] = []

    def respond(argv: list[str], host: str | None) -> CommandResult:
        assert host is None  # storage runs on the controller
        if argv[1:] == ["--enghelp"]:
            return result(argv, "Available IO engines:\n\tpsync\n\tlibaio\n")
        runs.append(argv)
        fixture, stderr, code = queue.pop(0)
        output = Path(next(a for a in argv if a.startswith("--output=")).split("=", 1)[1])
        if fixture is not None:
            output.write_text((DATA / fixture).read_text())
        data_file = Path(next(a for a in argv if a.startswith("--filename=")).split("=", 1)[1])
        data_file.write_text("x")
        return result(argv, "", stderr, code)
    return respond, runs


def test_storage_measures_four_jobs_with_throughput_iops_and_latency(
        fake_testbed: MakeFake) -> None:
    respond, runs = _fio_with(("fio_four_jobs_loop_direct.json", "", 0))
    bed = fake_testbed(respond)
    res = storage.run(bed, storage.StorageOptions())
    assert res.infra_error is None, res.log
    metrics = {m.metric: m for m in res.measurements}
    assert set(metrics) == {f"{job}_{what}" for job in storage.JOBS
                            for what in ("mbps", "iops", "clat_p50_us", "clat_p99_us")}
    assert (metrics["seq_write_mbps"].unit, metrics["seq_write_mbps"].better) == (
        "MB/s", Better.HIGHER)
    assert (metrics["rand_read_iops"].unit, metrics["rand_read_clat_p99_us"].unit) == (
        "IOPS", "µs")
    assert metrics["rand_write_clat_p50_us"].better is Better.LOWER
    assert metrics["rand_read_clat_p50_us"].value < metrics["rand_read_clat_p99_us"].value
    assert metrics["seq_read_mbps"].labels == {"job": "seq_read", "io": "direct",
                                               "fs": "plain"}
    assert all(m.value > 0 for m in res.measurements)
    assert res.tool_versions == {"fio": "fio-3.33"}
    argv = runs[0]
    assert "--ioengine=libaio" in argv and "--direct=1" in argv
    assert "--percentile_list=50:99" in argv and argv.count("--stonewall") == 4
    assert [a for a in argv if a.startswith("--rw=")] == [
        "--rw=write", "--rw=read", "--rw=randwrite", "--rw=randread"]
    assert [a for a in argv if a.startswith("--bs=")] == ["--bs=1M", "--bs=1M", "--bs=4k",
                                                          "--bs=4k"]
    assert next(a for a in argv if a.startswith("--output=")).endswith("storage/fio-direct.json")
    assert not (bed.state_dir / "scratch" / "fio.data").exists()


def test_storage_runs_only_the_jobs_asked_for(fake_testbed: MakeFake) -> None:
    respond, runs = _fio_with(("fio_libaio_direct.json", "", 0))
    res = storage.run(fake_testbed(respond), storage.StorageOptions(jobs=TWO_JOBS))
    assert res.infra_error is None
    assert {m.labels["job"] for m in res.measurements} == set(TWO_JOBS)
    assert runs[0].count("--stonewall") == 2


def test_storage_falls_back_to_buffered_when_direct_is_refused(fake_testbed: MakeFake) -> None:
    refused = data("fio_direct_refused.stderr.txt")
    respond, runs = _fio_with(("fio_direct_refused.json", refused, 1),
                              ("fio_psync_buffered.json", "", 0))
    res = storage.run(fake_testbed(respond), storage.StorageOptions(jobs=TWO_JOBS))
    assert res.infra_error is None
    assert ["--direct=1" in runs[0], "--direct=0" in runs[1]] == [True, True]
    assert {m.labels["io"] for m in res.measurements} == {"buffered"}
    assert "direct I/O refused" in res.log


@pytest.mark.parametrize(("report", "stderr", "code", "expected"), [
    (None, "fio: engine libaio not loadable\n", 1, "no JSON"),
    ("fio_failed_create_dir.txt", "fio: failed to create dir\n", 1, "exited with status 1"),
    ("fio_psync_buffered.json", "", 0, None),
])
def test_storage_broken_runs_are_infra_errors(fake_testbed: MakeFake, report: str | None,
                                              stderr: str, code: int,
                                              expected: str | None) -> None:
    respond, _ = _fio_with((report, stderr, code))
    res = storage.run(fake_testbed(respond), storage.StorageOptions(jobs=TWO_JOBS))
    if expected is None:
        assert res.infra_error is None
    else:
        assert res.infra_error is not None and expected in res.infra_error
        assert res.measurements == []


def test_a_report_missing_a_job_is_an_infra_error(fake_testbed: MakeFake) -> None:
    respond, _ = _fio_with(("fio_libaio_direct.json", "", 0))
    res = storage.run(fake_testbed(respond), storage.StorageOptions())
    assert res.infra_error is not None and "missing jobs" in res.infra_error
    assert "rand_write" in res.infra_error


def test_storage_job_error_is_an_infra_error(fake_testbed: MakeFake, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(data("fio_psync_buffered.json").replace('"error" : 0', '"error" : 5', 1))
    respond, _ = _fio_with((str(broken), "", 1))
    res = storage.run(fake_testbed(respond), storage.StorageOptions(direct=False, jobs=TWO_JOBS))
    assert res.infra_error is not None and "seq_write': 5" in res.infra_error


def test_storage_timeout_is_an_infra_error(fake_testbed: MakeFake) -> None:
    def respond(argv: list[str], host: str | None) -> CommandResult:
        if argv[1:] == ["--enghelp"]:
            return result(argv, "\tpsync\n")
        raise InfraError("fio timed out after 124 s: fio ...")
    res = storage.run(fake_testbed(respond), storage.StorageOptions())
    assert res.infra_error is not None and "timed out" in res.infra_error


@pytest.mark.parametrize("bad", [{"size": "64"}, {"runtime_s": 0}, {"jobs": ("seq_trim",)},
                                 {"jobs": ()}, {"iodepth": 0}])
def test_bad_options_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        storage.StorageOptions(**bad)  # type: ignore[arg-type]


def test_size_is_read_in_binary_units() -> None:
    assert storage.StorageOptions(size="32M").size_bytes == 32 << 20
    assert storage.StorageOptions(size="512K").size_bytes == 512 << 10


def test_metric_names_lists_every_metric_the_suite_records() -> None:
    names = set(storage.metric_names())
    assert {"seq_write_mbps", "rand_read_iops", "rand_read_clat_p99_us",
            "seq_read_clat_p50_us"} <= names
    assert len(names) == 4 * len(storage.JOBS)
