"""The calibration probe on real namespaces: it measures, and it leaves nothing behind, also
when its process is SIGKILLed in the middle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from certifier.settings import Settings
from tests.requirements import needs_binary, needs_root
from workers import calibration
from workers.environment import Recorder
from workers.suites import storage
from workers.testbed import reaper, records
from workers.testbed.base import TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.process import CommandResult, pid_alive
from workers.testbed.tags import control_tag, probe_tag, run_tag, run_tag_prefix

from .conftest import our_namespaces

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "ping", "iperf3", "fio")]


def test_the_probe_measures_each_tool_and_tears_its_testbed_down(
        tmp_path: Path, tag: str, records_dir: Path) -> None:
    recorder = Recorder()
    calibration.probe(recorder, "start", testbed="gate1", driver="netns", tag=tag,
                      state_dir=tmp_path / "probe", records_dir=records_dir)
    figures = recorder.probes["start"]
    assert figures["notes"] == []
    assert figures["probe_rtt_ms"] > 0 and figures["probe_loss_pct"] == 0
    assert figures["probe_tcp_gbps"] > 0 and figures["probe_fio_iops"] > 0
    assert figures["background"]["seconds"] > 0 and figures["seconds"] > 0
    assert our_namespaces(tag) == []
    assert not records.path_for(records_dir, tag).exists()
    assert not (tmp_path / "probe" / "probe.fio").exists()


def test_the_probe_on_the_local_driver_uses_loopback(tmp_path: Path, tag: str,
                                                     records_dir: Path) -> None:
    recorder = Recorder()
    calibration.probe(recorder, "end", testbed="gate1", driver="local", tag=tag,
                      state_dir=tmp_path / "probe", records_dir=records_dir,
                      options=calibration.ProbeOptions(fio=False))
    figures = recorder.probes["end"]
    assert figures["driver"] == "local" and figures["probe_tcp_gbps"] > 0
    assert figures["probe_fio_iops"] is None
    assert "fio: skipped (calibration fio turned off)" in figures["notes"]
    assert not records.path_for(records_dir, tag).exists()


def test_the_fio_figure_is_the_best_window_of_its_run(tmp_path: Path, tag: str,
                                                      records_dir: Path) -> None:
    """A virtual disk's write rate swings within half a second on an idle machine; the probe
    keeps the best 100 ms window, so one slow moment does not read as a busy testbed."""
    spec = TestbedSpec(name="gate1", driver="local", hosts=calibration.PROBE_HOSTS,
                       subnet=calibration.PROBE_SUBNET)
    means: list[float] = []
    with create_testbed(spec, tag=tag, state_dir=tmp_path / "probe",
                        records_dir=records_dir) as bed:
        real_run = bed.run

        def run(argv: list[str], **kwargs: Any) -> CommandResult:
            done = real_run(argv, **kwargs)
            if argv[0] == "fio":
                means.append(storage.parse_fio(done.stdout).jobs["probe"].write_iops)
            return done

        bed.run = run  # type: ignore[method-assign]
        notes: list[str] = []
        best = calibration._fio(bed, calibration.ProbeOptions(), notes)
        leftovers = sorted(p.name for p in bed.state_dir.iterdir())
    assert len(means) == 1 and best is not None and best >= means[0] > 0
    assert not [n for n in notes if "exit" in n or "no IOPS log" in n]
    assert leftovers == []  # the data file and the IOPS log are gone


def test_the_best_window_is_read_from_fio_s_iops_log(tmp_path: Path) -> None:
    (tmp_path / "p_iops.1.log").write_text(
        "100, 88458, 1, 4096, 0\n200, 132660, 1, 4096, 0\n250, 999999, 0, 4096, 0\n"
        "garbage\n300, 48340, 1, 4096, 0\n")
    assert calibration.best_window(tmp_path / "p") == 132660
    assert calibration.best_window(tmp_path / "missing") is None


def test_the_probe_is_skipped_on_ssh_testbeds(tmp_path: Path, records_dir: Path) -> None:
    recorder = Recorder()
    calibration.probe(recorder, "start", testbed="lab", driver="ssh", tag="tunused",
                      state_dir=tmp_path, records_dir=records_dir)
    assert "other machines" in recorder.probes["start"]["skipped"]
    assert "background" not in recorder.probes["start"]


def test_a_probe_that_cannot_build_says_so_instead_of_raising(tmp_path: Path,
                                                               records_dir: Path) -> None:
    recorder = Recorder()
    calibration.probe(recorder, "start", testbed="gate1", driver="netns", tag="BAD TAG",
                      state_dir=tmp_path, records_dir=records_dir)
    assert any(n.startswith("probe failed:") for n in recorder.probes["start"]["notes"])
    assert "probe_tcp_gbps" not in recorder.probes["start"]


# A child that starts a probe, starts a server in p2 in the middle of it, says so and waits to
# be killed.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workers import calibration
    from workers.environment import Recorder

    tag, state, records_dir = sys.argv[1:4]
    def hang(bed, options, figures, notes):
        server = bed.spawn(["sleep", "300"], host="p2", log_path=Path(state) / "server.log")
        print(server.pid, flush=True)
        time.sleep(300)
    calibration._tools = hang
    calibration.probe(Recorder(), "start", testbed="gate1", driver="netns", tag=tag,
                      state_dir=Path(state), records_dir=Path(records_dir),
                      options=calibration.ProbeOptions(quiet_seconds=0.01))
""")


def test_a_probe_killed_midway_is_reaped_from_its_record(tmp_path: Path, tag: str,
                                                         records_dir: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, tag, str(tmp_path / "state"),
                              str(records_dir)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parents[2])
    assert child.stdout is not None
    server_pid = int(child.stdout.readline())
    assert len(our_namespaces(tag)) == 3  # p1, p2 and the switch
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=5)

    removed = reaper.reap(records_dir, orphan_tags={tag})

    assert {f"cf-{tag}-p1", f"cf-{tag}-p2", f"cf-{tag}-sw", f"record {tag}"} <= set(removed)
    assert our_namespaces(tag) == []
    assert not pid_alive(server_pid)


def test_probe_tags_are_this_instances_and_never_a_runs_nor_a_control_testbeds(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    tags = {probe_tag(settings, run_id) for run_id in range(1, 2000)}
    runs = {run_tag(settings, run_id) for run_id in range(1, 80000)}
    controls = {control_tag(settings, run_id) for run_id in range(1, 80000)}
    assert None not in tags and not tags & runs and not tags & controls
    assert all(str(t).startswith(run_tag_prefix(settings)) for t in tags)
    assert probe_tag(settings, 36**5 - 1) is not None and probe_tag(settings, 36**5) is None
