"""Reading the kernel's counters: captured ``/proc`` samples, missing files and garbage.

The samples below were captured on the development machine (Linux 6.x, two cores, shared with a
busy test run) and on an older kernel layout; the sampler must read them, and must turn
anything else into "not available" rather than an exception.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.environment import (
    CpuTimes,
    HostSample,
    Pressure,
    Recorder,
    combine,
    parse_cpu_stat,
    parse_loadavg,
    parse_pressure,
    read_sample,
    span_figures,
)

CPU_PRESSURE = ("some avg10=99.42 avg60=99.00 avg300=84.17 total=607202543\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
IO_PRESSURE = ("some avg10=0.36 avg60=0.81 avg300=0.90 total=13741674\n"
               "full avg10=0.00 avg60=0.00 avg300=0.00 total=4113398\n")
# Before Linux 5.13 the cpu file had no "full" line.
OLD_CPU_PRESSURE = "some avg10=1.05 avg60=0.40 avg300=0.12 total=1234567\n"
STAT = ("cpu  127793 232 16115 43437 559 0 787 251 0 0\n"
        "cpu0 60000 100 8000 21000 300 0 400 120 0 0\n"
        "intr 123 0 0\n")
LOADAVG = "11.58 8.52 4.41 11/255 16830\n"


def test_a_pressure_file_gives_its_some_line() -> None:
    assert parse_pressure(CPU_PRESSURE) == Pressure(total_us=607202543, avg10=99.42)
    assert parse_pressure(IO_PRESSURE) == Pressure(total_us=13741674, avg10=0.36)


def test_a_pressure_file_without_a_full_line_still_reads() -> None:
    assert parse_pressure(OLD_CPU_PRESSURE) == Pressure(total_us=1234567, avg10=1.05)


def test_a_pressure_line_with_a_field_added_by_a_newer_kernel_still_reads() -> None:
    text = "some avg10=2.00 avg60=1.00 avg300=0.50 avg3600=0.10 total=42\n"
    assert parse_pressure(text) == Pressure(total_us=42, avg10=2.0)


@pytest.mark.parametrize("text", [
    "", "\x00\x01garbage", "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "some avg10=abc avg60=0 avg300=0 total=12\n", "some avg10=1.0 total=-5\n",
    "some avg10=nan avg60=0 avg300=0 total=12\n", "some avg60=1.0 total=12\n",
    "some total=12 avg10\n",
])
def test_a_pressure_file_with_garbage_is_not_available(text: str) -> None:
    assert parse_pressure(text) is None


def test_proc_stat_gives_total_iowait_and_steal() -> None:
    assert parse_cpu_stat(STAT) == CpuTimes(
        total=127793 + 232 + 16115 + 43437 + 559 + 0 + 787 + 251, iowait=559, steal=251)


def test_a_proc_stat_without_a_steal_column_counts_no_steal() -> None:
    assert parse_cpu_stat("cpu  100 0 50 800 10\n") == CpuTimes(total=960, iowait=10, steal=0)


@pytest.mark.parametrize("text", ["", "cpu0 1 2 3 4 5 6 7 8\n", "cpu  1 2 x 4 5 6 7 8\n",
                                  "cpu 1 2\n"])
def test_a_proc_stat_with_garbage_is_not_available(text: str) -> None:
    assert parse_cpu_stat(text) is None


def test_loadavg_gives_the_one_minute_figure() -> None:
    assert parse_loadavg(LOADAVG) == 11.58
    assert parse_loadavg("") is None
    assert parse_loadavg("high 1 1\n") is None


def _proc(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_proc_tree_without_pressure_files_says_not_available(tmp_path: Path) -> None:
    proc = _proc(tmp_path, {"stat": STAT, "loadavg": LOADAVG})
    sample = read_sample(proc)
    assert sample.pressure == {"cpu": None, "io": None, "memory": None}
    assert sample.cpu is not None and sample.load1 == 11.58
    assert any("cpu pressure: not available" in n and "missing" in n for n in sample.notes)


def test_an_empty_proc_tree_gives_no_figures_and_no_exception(tmp_path: Path) -> None:
    sample = read_sample(tmp_path)
    figures = span_figures(sample, read_sample(tmp_path))
    assert {k: figures[k] for k in ("cpu_pressure_pct", "cpu_steal_pct", "load_per_core")} == {
        "cpu_pressure_pct": None, "cpu_steal_pct": None, "load_per_core": None}
    assert any("load average: not available" in n for n in figures["notes"])


def _sample(at: float, cpu_us: int, total: int, steal: int, iowait: int,
            load: float = 1.0) -> HostSample:
    return HostSample(at=at, pressure={"cpu": Pressure(cpu_us, 5.0), "io": None, "memory": None},
                      cpu=CpuTimes(total, iowait, steal), load1=load, cores=2)


def test_a_span_turns_counter_growth_into_percentages() -> None:
    figures = span_figures(_sample(10.0, 1_000_000, 1000, 10, 0),
                           _sample(12.0, 1_500_000, 1400, 30, 40, load=3.0))
    assert figures["seconds"] == 2.0
    assert figures["cpu_pressure_pct"] == 25.0  # 0.5 s stalled of 2 s
    assert figures["cpu_steal_pct"] == 5.0  # 20 of 400 jiffies
    assert figures["iowait_pct"] == 10.0
    assert figures["load_per_core"] == 1.5
    assert figures["io_pressure_pct"] is None


def test_a_counter_that_went_backwards_is_not_available() -> None:
    figures = span_figures(_sample(0.0, 5_000_000, 1000, 0, 0), _sample(1.0, 10, 1100, 0, 0))
    assert figures["cpu_pressure_pct"] is None
    assert any("backwards" in n for n in figures["notes"])


def test_spans_combine_weighted_by_their_length() -> None:
    combined = combine([{"seconds": 1.0, "cpu_pressure_pct": 10.0},
                        {"seconds": 3.0, "cpu_pressure_pct": 50.0, "iowait_pct": 4.0}])
    assert combined["seconds"] == 4.0
    assert combined["cpu_pressure_pct"] == 40.0
    assert combined["iowait_pct"] == 4.0
    assert combined["io_pressure_pct"] is None


def test_the_recorder_keeps_a_span_when_its_body_raises_and_names_repeats_apart() -> None:
    ticks = iter(range(100))
    recorder = Recorder(sample=lambda: _sample(float(next(ticks)), 0, 100, 0, 0))
    with pytest.raises(RuntimeError), recorder.span("ping"):
        raise RuntimeError("a suite bug")
    with recorder.span("ping"):
        pass
    assert list(recorder.spans) == ["ping", "ping#2"]
    assert recorder.summary()["host"]["seconds"] == 2.0
