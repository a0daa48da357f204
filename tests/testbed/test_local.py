"""The local driver and what every driver shares: run, spawn, records, always tearing down."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workers.testbed import records
from workers.testbed.base import InfraError, Testbed, TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.process import COOKIE_VAR, pid_alive

MakeTestbed = Callable[..., Testbed]


def _wait_for_pids(path: Path, count: int) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(p) for p in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"no {count} pids in {path}")


def _all_dead(pids: list[int], within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def test_local_hosts_are_loopback_without_namespaces(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local", hosts=("h1", "h2"))
    assert [(h.name, h.address, h.namespace) for h in bed.hosts] == [
        ("h1", "127.0.0.1", None), ("h2", "127.0.0.1", None)]
    assert bed.notice is not None
    assert bed.notice.startswith("local driver: loopback only, no namespaces")


def test_hook_env_describes_the_testbed(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local", hosts=("h1", "db"))
    env = bed.hook_env()
    assert env["CERTIFIER_TESTBED"] == "test"
    assert env["CERTIFIER_TESTBED_DRIVER"] == "local"
    assert env["CERTIFIER_TESTBED_TAG"] == bed.tag
    assert env["CERTIFIER_HOSTS"] == "h1 db"
    assert env["CERTIFIER_HOST_DB_ADDR"] == "127.0.0.1"
    assert env["CERTIFIER_HOST_DB_NS"] == ""
    assert env["CERTIFIER_HOST_DB_IFACE"] == "lo"
    assert env["CERTIFIER_STATE_DIR"] == str(bed.state_dir)
    assert bed.state_dir.is_dir()


def test_run_on_a_host_runs_here_with_a_clean_environment(
        make_testbed: MakeTestbed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFIER_DATABASE_URL", "postgresql://secret")
    bed = make_testbed("local")
    done = bed.run(["env"], host="h2", timeout=5, env={"EXTRA": "1"})
    assert done.ok
    assert done.argv == ("env",)
    lines = done.stdout.splitlines()
    assert "EXTRA=1" in lines
    assert "LC_ALL=C" in lines
    assert f"{COOKIE_VAR}={bed.cookie}" in lines
    assert not any("secret" in line for line in lines)


def test_run_reports_exit_status_and_both_streams(make_testbed: MakeTestbed,
                                                  tmp_path: Path) -> None:
    bed = make_testbed("local")
    done = bed.run(["sh", "-c", "pwd; echo oops >&2; exit 3"], timeout=5, cwd=tmp_path)
    assert (done.returncode, done.stdout.strip(), done.stderr.strip()) == (3, str(tmp_path),
                                                                          "oops")
    assert not done.ok and not done.timed_out


def test_missing_binary_is_an_infra_error_naming_it(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local")
    with pytest.raises(InfraError, match="no-such-tool-x is not installed"):
        bed.run(["no-such-tool-x", "--version"], timeout=5)


def test_unknown_host_is_refused(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local")
    with pytest.raises(TestbedError, match="no host 'h9'"):
        bed.run(["true"], host="h9", timeout=5)


def test_timeout_is_an_infra_error_and_kills_the_process_group(make_testbed: MakeTestbed,
                                                               tmp_path: Path) -> None:
    bed = make_testbed("local")
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; echo started; wait"
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"sh timed out after 0\.5 s") as caught:
        bed.run(["sh", "-c", script], timeout=0.5)
    assert time.monotonic() - started < 5
    assert caught.value.result is not None and caught.value.result.timed_out
    assert "started" in caught.value.result.stdout
    assert _all_dead(_wait_for_pids(pids, 1))


def test_spawned_processes_die_at_teardown_with_their_children(make_testbed: MakeTestbed,
                                                               tmp_path: Path) -> None:
    bed = make_testbed("local")
    pids = tmp_path / "pids"
    proc = bed.spawn(["sh", "-c", f"sleep 300 & echo $! > {pids}; wait"], host="h1",
                     log_path=tmp_path / "spawn.log")
    child = _wait_for_pids(pids, 1)
    bed.teardown()
    assert proc.poll() is not None
    assert _all_dead(child)


def test_processes_that_left_their_group_die_by_cookie(make_testbed: MakeTestbed,
                                                       tmp_path: Path) -> None:
    bed = make_testbed("local")
    pids = tmp_path / "pids"
    bed.spawn(["sh", "-c", f"setsid sleep 300 & echo $! > {pids}"], log_path=tmp_path / "l")
    escaped = _wait_for_pids(pids, 1)
    bed.teardown()
    assert _all_dead(escaped)


def test_record_lives_exactly_as_long_as_the_testbed(tmp_path: Path, tag: str,
                                                     records_dir: Path) -> None:
    spec = TestbedSpec(name="gate", driver="local")
    with create_testbed(spec, tag=tag, state_dir=tmp_path / "s", records_dir=records_dir) as bed:
        record = records.read(records.path_for(records_dir, tag))
        assert record is not None
        assert (record.tag, record.owner_pid, record.cookie) == (tag, os.getpid(), bed.cookie)
        assert record.owner_alive()
    assert not records.path_for(records_dir, tag).exists()


def test_a_body_that_raises_still_tears_down(tmp_path: Path, tag: str,
                                            records_dir: Path) -> None:
    spec = TestbedSpec(name="gate", driver="local")
    with pytest.raises(RuntimeError, match="boom"), create_testbed(
            spec, tag=tag, state_dir=tmp_path / "s", records_dir=records_dir) as bed:
        proc = bed.spawn(["sleep", "300"], log_path=tmp_path / "l")
        raise RuntimeError("boom")
    assert proc.poll() is not None
    assert not records.path_for(records_dir, tag).exists()


def test_teardown_is_idempotent(make_testbed: MakeTestbed) -> None:
    bed = make_testbed("local")
    bed.teardown()
    bed.teardown()


def test_a_tag_held_by_a_live_testbed_is_refused(make_testbed: MakeTestbed,
                                                 tmp_path: Path, records_dir: Path) -> None:
    bed = make_testbed("local")
    with pytest.raises(TestbedError, match="in use"):
        create_testbed(TestbedSpec(name="other", driver="local"), tag=bed.tag,
                       state_dir=tmp_path / "other", records_dir=records_dir)
    assert records.path_for(records_dir, bed.tag).exists()  # the live one is untouched
