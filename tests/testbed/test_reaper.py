"""The testbed reaper: what a SIGKILLed owner leaves behind is reaped, nothing else touched."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from certifier.settings import Settings
from tests.requirements import needs_binary, needs_root
from workers.testbed import reaper, records
from workers.testbed.base import DRIVERS, TAG_RE, TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.process import pid_alive
from workers.testbed.ssh import SshTestbed
from workers.testbed.tags import control_tag, run_tag, run_tag_prefix

from .conftest import our_namespaces, unique_subnet, unique_tag

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip")]

# A child that builds a testbed, starts a server in h2, says where it is and waits to be killed.
# With SLOW set, each `ip` call takes a while, so the parent can kill it mid-creation.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workers.testbed import netns
    from workers.testbed.base import TestbedSpec
    from workers.testbed.factory import create_testbed

    tag, subnet, state, records_dir, slow = sys.argv[1:6]
    if slow == "1":
        real_ip = netns._ip
        def slow_ip(args):
            time.sleep(0.3)
            return real_ip(args)
        netns._ip = slow_ip
    bed = create_testbed(TestbedSpec(name="child", subnet=subnet), tag=tag,
                         state_dir=Path(state), records_dir=Path(records_dir))
    server = bed.spawn(["sleep", "300"], host="h2", log_path=Path(state) / "server.log")
    print(server.pid, flush=True)
    time.sleep(300)
""")


def _start_child(tag: str, tmp_path: Path, records_dir: Path,
                 slow: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, tag, unique_subnet(), str(tmp_path / "state"),
         str(records_dir), "1" if slow else "0"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])


def _kill9(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=5)


def test_reaps_a_testbed_whose_owner_was_sigkilled(tmp_path: Path, tag: str,
                                                   records_dir: Path) -> None:
    child = _start_child(tag, tmp_path, records_dir, slow=False)
    assert child.stdout is not None
    server_pid = int(child.stdout.readline())
    assert len(our_namespaces(tag)) == 3
    _kill9(child)
    assert pid_alive(server_pid)  # nobody cleaned up yet

    removed = reaper.reap(records_dir, orphan_tags={tag})

    assert {f"cf-{tag}-h1", f"cf-{tag}-h2", f"cf-{tag}-sw", f"record {tag}"} <= set(removed)
    assert our_namespaces(tag) == []
    assert not pid_alive(server_pid)
    assert not records.path_for(records_dir, tag).exists()


def test_reaps_a_testbed_whose_owner_was_sigkilled_mid_creation(tmp_path: Path, tag: str,
                                                                records_dir: Path) -> None:
    child = _start_child(tag, tmp_path, records_dir, slow=True)
    deadline = time.monotonic() + 10
    while not our_namespaces(tag) and time.monotonic() < deadline:
        time.sleep(0.02)
    _kill9(child)
    left = our_namespaces(tag)
    assert left and len(left) < 3  # killed halfway, as intended
    assert records.path_for(records_dir, tag).exists()  # the record came first

    reaper.reap(records_dir, orphan_tags={tag})

    assert our_namespaces(tag) == []
    assert not records.path_for(records_dir, tag).exists()


def test_leaves_live_testbeds_alone_unless_named_stale(tmp_path: Path, tag: str,
                                                       records_dir: Path) -> None:
    spec = TestbedSpec(name="live", subnet=unique_subnet())
    with create_testbed(spec, tag=tag, state_dir=tmp_path, records_dir=records_dir) as bed:
        assert not any(tag in r for r in reaper.reap(records_dir, orphan_tags={tag}))
        assert len(our_namespaces(tag)) == 3
        removed = reaper.reap(records_dir, stale_tags={tag}, orphan_tags={tag})
        assert f"cf-{tag}-h1" in removed
        assert our_namespaces(tag) == []
    bed.teardown()  # the janitor got there first; teardown copes


def test_reaps_our_namespaces_that_have_no_record(records_dir: Path) -> None:
    tag = unique_tag()
    subprocess.run(["ip", "netns", "add", f"cf-{tag}-h1"], check=True, timeout=10)
    assert reaper.reap(records_dir, orphan_tags={tag}) == [f"cf-{tag}-h1"]
    assert our_namespaces(tag) == []


def test_never_touches_namespaces_outside_our_prefix(records_dir: Path) -> None:
    tag = unique_tag()
    foreign = [f"cf{tag}-h1", f"x-cf-{tag}-h1", f"cf-{tag}-H1", f"cf-{tag}"]
    for name in foreign:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        reaper.reap(records_dir, orphan_tags={tag})
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                 check=True, timeout=10).stdout
        for name in foreign:
            assert name in listing
    finally:
        for name in foreign:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def test_a_record_with_a_dead_owner_is_cleared_when_its_tag_is_reused(
        tmp_path: Path, tag: str, records_dir: Path) -> None:
    child = _start_child(tag, tmp_path, records_dir, slow=False)
    assert child.stdout is not None
    child.stdout.readline()
    _kill9(child)
    spec = TestbedSpec(name="again", subnet=unique_subnet())
    with create_testbed(spec, tag=tag, state_dir=tmp_path / "again", records_dir=records_dir):
        record = records.read(records.path_for(records_dir, tag))
        assert record is not None and record.owner_pid == os.getpid()
    assert our_namespaces(tag) == []


def test_stale_tags_must_be_tags(records_dir: Path) -> None:
    with pytest.raises(TestbedError):
        reaper.reap(records_dir, stale_tags={"../etc"})


def test_a_worker_reaps_only_orphans_of_its_own_instance(records_dir: Path) -> None:
    ours, theirs = "rours" + secrets.token_hex(2), "rthrs" + secrets.token_hex(2)
    for tag in (ours, theirs):
        subprocess.run(["ip", "netns", "add", f"cf-{tag}-h1"], check=True, timeout=10)
    try:
        removed = reaper.reap(records_dir, owned_prefix="rours")
        assert f"cf-{ours}-h1" in removed
        assert f"cf-{theirs}-h1" not in removed
        assert our_namespaces(theirs) == [f"cf-{theirs}-h1"]
    finally:
        for tag in (ours, theirs):
            subprocess.run(["ip", "netns", "del", f"cf-{tag}-h1"], check=False, timeout=10)


def test_run_tags_differ_between_instances_and_fit_interface_names(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one")
    two = Settings(data_dir=tmp_path / "two")
    assert run_tag(one, 7) != run_tag(two, 7)
    assert run_tag(one, 7).startswith(run_tag_prefix(one))
    assert TAG_RE.match(run_tag(one, 36**7 - 1))
    assert len(f"cf-{run_tag(one, 36**7 - 1)}") <= 15


def test_a_control_tag_is_no_run_s_tag_keeps_the_instance_prefix_and_fits(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "one")
    tags = {run_tag(settings, n) for n in range(1, 36**2 + 2)}
    controls = {control_tag(settings, n) for n in range(1, 36**2 + 2)}
    assert tags.isdisjoint(controls) and len(controls) == 36**2 + 1
    assert control_tag(settings, 7).startswith(run_tag_prefix(settings))
    assert TAG_RE.match(control_tag(settings, 36**6 - 1))
    assert len(f"cf-{control_tag(settings, 36**6 - 1)}") <= 15  # a root-namespace link


def test_the_reaper_hands_each_record_to_its_own_drivers_reap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(reaper.DRIVERS) == set(DRIVERS)
    asked: list[str] = []

    def reap(cls: type[SshTestbed], record: records.Record) -> list[str]:
        asked.append(record.tag)
        return ["remote h1:/srv/cf-rzz1"]

    monkeypatch.setattr(SshTestbed, "reap", classmethod(reap))
    record = records.Record(tag="rzz1", testbed="lab", driver="ssh", namespaces=(),
                            cookie="c0ffee", owner_pid=1, owner_ticks=None)
    records.write(tmp_path, record)
    assert reaper.destroy(record, tmp_path) == ["remote h1:/srv/cf-rzz1", "record rzz1"]
    assert asked == ["rzz1"]
    assert records.read_all(tmp_path) == {}
