"""parse_fio on reports captured from fio 3.33, including notes fio mixes into its output."""

from __future__ import annotations

import pytest

from workers.suites.storage import FioParseError, parse_fio

from .conftest import data


def test_direct_libaio_report() -> None:
    report = parse_fio(data("fio_libaio_direct.json"))
    assert report.version == "fio-3.33"
    assert set(report.jobs) == {"seq_write", "rand_read"}
    seq, rand = report.jobs["seq_write"], report.jobs["rand_read"]
    assert seq.error == rand.error == 0
    assert seq.write_bw_bytes > 0 and seq.write_clat_p99_ns is not None
    assert rand.read_iops > 0 and rand.read_clat_p99_ns is not None
    assert rand.write_bw_bytes == 0


def test_buffered_psync_report() -> None:
    report = parse_fio(data("fio_psync_buffered.json"))
    assert report.jobs["rand_read"].read_iops > 0
    assert report.jobs["seq_write"].io_bytes > 0


def test_notes_before_the_json_are_skipped() -> None:
    text = data("fio_failed_create_dir.txt")
    assert text.startswith("fio: failed to create dir")
    report = parse_fio(text)
    assert report.jobs["seq_write"].io_bytes == 0


def test_refused_direct_io_shows_as_job_error_22() -> None:
    assert parse_fio(data("fio_direct_refused.json")).jobs["seq_write"].error == 22


@pytest.mark.parametrize("text", [
    "",
    "fio: pid=0, err=2/file:filesetup.c:1, func=open, error=No such file or directory\n",
    data("fio_libaio_direct.json")[:2000],
    '{"fio version": "fio-3.33"}',
    '{"jobs": [{"jobname": "x"}]}',
])
def test_missing_or_broken_json_raises_a_parse_error(text: str) -> None:
    with pytest.raises(FioParseError):
        parse_fio(text)


def test_four_jobs_on_the_loop_filesystem_with_p50_and_p99() -> None:
    report = parse_fio(data("fio_four_jobs_loop_direct.json"))
    assert list(report.jobs) == ["seq_write", "seq_read", "rand_write", "rand_read"]
    for name, job in report.jobs.items():
        reading = name.endswith("read")
        p50 = job.read_clat_p50_ns if reading else job.write_clat_p50_ns
        p99 = job.read_clat_p99_ns if reading else job.write_clat_p99_ns
        assert p50 is not None and p99 is not None and 0 < p50 <= p99
        assert (job.read_iops if reading else job.write_iops) > 0
        assert (job.write_iops if reading else job.read_iops) == 0
