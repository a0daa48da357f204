"""Recipe hooks: their environment, exit codes, timeouts that kill the group, capped output."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.requirements import needs_binary, needs_root
from workers.testbed.base import InfraError, Testbed
from workers.testbed.hooks import run_hook
from workers.testbed.process import pid_alive

MakeTestbed = Callable[..., Testbed]


def _hook(folder: Path, body: str, name: str = "deploy") -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_hook_gets_the_testbed_env_its_args_and_cwd(make_testbed: MakeTestbed,
                                                    tmp_path: Path) -> None:
    bed = make_testbed("local")
    hook = _hook(tmp_path, 'echo "args=$* pwd=$(pwd) hosts=$CERTIFIER_HOSTS '
                           'comp=$CERTIFIER_COMPONENT"')
    done = run_hook(bed, hook, ["a", "b"], env={"CERTIFIER_COMPONENT": "web"}, cwd=tmp_path,
                    timeout=10)
    assert done.exit_code == 0 and not done.timed_out
    assert done.output_tail == f"args=a b pwd={tmp_path} hosts=h1 h2 comp=web"


def test_failing_hook_reports_exit_code_and_tail(make_testbed: MakeTestbed,
                                                 tmp_path: Path) -> None:
    bed = make_testbed("local")
    hook = _hook(tmp_path, 'for i in $(seq 1 50); do echo "line $i"; done; echo bad >&2; exit 4')
    done = run_hook(bed, hook, [], env={}, cwd=tmp_path, timeout=10)
    assert done.exit_code == 4
    tail = done.output_tail.splitlines()
    assert len(tail) == 20 and tail[-1] == "bad" and tail[0] == "line 32"
    assert "line 1\n" in done.log


def test_timeout_kills_the_whole_process_group(make_testbed: MakeTestbed,
                                               tmp_path: Path) -> None:
    bed = make_testbed("local")
    pids = tmp_path / "pids"
    hook = _hook(tmp_path, f"sleep 300 & echo $! >> {pids}\n"
                           f"sh -c 'sleep 300' & echo $! >> {pids}\n"
                           "echo waiting\nwait")
    started = time.monotonic()
    done = run_hook(bed, hook, [], env={}, cwd=tmp_path, timeout=1)
    assert done.timed_out
    assert time.monotonic() - started < 5
    assert "waiting" in done.log and "timeout" in done.log
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 3
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(pid_alive(p) for p in children)


def test_a_hook_that_closes_its_output_still_times_out(make_testbed: MakeTestbed,
                                                       tmp_path: Path) -> None:
    bed = make_testbed("local")
    hook = _hook(tmp_path, "echo bye; exec >/dev/null 2>&1; sleep 300")
    done = run_hook(bed, hook, [], env={}, cwd=tmp_path, timeout=1.5)
    assert done.timed_out and "bye" in done.log


def test_output_flood_is_capped_head_and_tail_kept(make_testbed: MakeTestbed,
                                                   tmp_path: Path) -> None:
    bed = make_testbed("local")
    hook = _hook(tmp_path, "echo first; yes 'flood flood flood' | head -n 400000; echo last")
    done = run_hook(bed, hook, [], env={}, cwd=tmp_path, timeout=20, max_output=8192)
    assert done.exit_code == 0
    assert len(done.log) < 8192 + 200
    assert done.log.startswith("first\n")
    assert "output truncated" in done.log
    assert done.output_tail.splitlines()[-1] == "last"
    assert len(done.output_tail.splitlines()) == 20


def test_missing_hook_is_an_infra_error(make_testbed: MakeTestbed, tmp_path: Path) -> None:
    bed = make_testbed("local")
    with pytest.raises(InfraError, match="does not exist"):
        run_hook(bed, tmp_path / "nope", [], env={}, cwd=tmp_path, timeout=5)


def test_non_executable_hook_is_an_infra_error(make_testbed: MakeTestbed,
                                               tmp_path: Path) -> None:
    bed = make_testbed("local")
    hook = tmp_path / "deploy"
    hook.write_text("#!/bin/sh\ntrue\n")
    with pytest.raises(InfraError, match="not executable"):
        run_hook(bed, hook, [], env={}, cwd=tmp_path, timeout=5)


@pytest.mark.root
@needs_root
@needs_binary("ip")
def test_hook_on_a_host_runs_inside_its_namespace(make_testbed: MakeTestbed,
                                                  tmp_path: Path) -> None:
    bed = make_testbed("netns")
    hook = _hook(tmp_path, "ip -o -4 addr show dev eth0")
    done = run_hook(bed, hook, [], env={}, cwd=tmp_path, timeout=10, host="h2")
    assert done.exit_code == 0, done.log
    assert f"{bed.host('h2').address}/24" in done.log
