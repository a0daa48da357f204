"""Autohold on a real netns testbed: a failed run's namespaces and processes stay, enterable, across
a worker restart's janitor pass, until the hold is released or expires; then nothing is left.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from certifier.db.session import session_scope
from certifier.pipeline import autohold
from tests.requirements import needs_binary, needs_root
from workers import janitor
from workers.testbed import reaper, records
from workers.testbed.process import pid_alive, pids_with_cookie
from workers.testbed.tags import run_tag

from ..recipes.helpers import Harness, git_repo, harness, namespaces_of, write_hook

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "git")]

# Starts a "service" in h1's namespace, then fails: the state a person would want to look at.
FAILING_DEPLOY = """ip netns exec "$CERTIFIER_HOST_H1_NS" sleep 600 >/dev/null 2>&1 &
echo "service started in $CERTIFIER_HOST_H1_NS"
echo "health check failed: connection refused" >&2
exit 1"""


def _failing(tmp_path: Path) -> tuple[Harness, int]:
    repo, sha = git_repo(tmp_path / "upstream", {"app.conf": "x = 1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", FAILING_DEPLOY)
    h = harness(tmp_path, {"app": (repo, recipe)}, driver="netns")
    h.report("app", sha)
    return h, h.gate_run()


def _arm(h: Harness, run_id: int, duration: timedelta) -> int:
    with session_scope(h.ctx.session_factory) as session:
        cand = h.run(run_id).candidate_id
        return autohold.request(session, h.clock, duration=duration, actor="test",
                                candidate_id=cand).id


def _hold(h: Harness, hold_id: int) -> tuple[str, list[str], object]:
    with session_scope(h.ctx.session_factory) as session:
        hold = autohold.get(session, hold_id)
        return hold.state, list(hold.commands), hold.torn_down_at


def test_a_held_failed_run_keeps_its_testbed_until_released(tmp_path: Path) -> None:
    h, run_id = _failing(tmp_path)
    hold_id = _arm(h, run_id, timedelta(hours=1))
    tag = run_tag(h.ctx.settings, run_id)
    try:
        run = h.execute(run_id)
        assert run.verdict == "failed"

        # The namespaces stay, a person can enter them, and what the hook started still runs.
        assert sorted(namespaces_of(tag)) == [f"cf-{tag}-h1", f"cf-{tag}-h2", f"cf-{tag}-sw"]
        entered = subprocess.run(["ip", "netns", "exec", f"cf-{tag}-h1", "ip", "-o", "addr"],
                                 capture_output=True, text=True, timeout=10, check=True)
        assert "eth0" in entered.stdout
        record = records.read(records.path_for(h.settings.records_dir, tag))
        assert record is not None and pids_with_cookie(record.cookie)
        state, commands, _ = _hold(h, hold_id)
        assert state == "holding"
        assert commands[0].startswith(f"ip netns exec cf-{tag}-")
        assert commands[-1].startswith(f"certifier hold release {hold_id}")
        assert f"kept by hold {hold_id}" in run.log and commands[0] in run.log
        assert h.testbed_lease()[0] == run_id

        # A restarted worker's janitor sees a live owner (the keeper) and leaves it alone.
        # (Limited to our tag: a worker's own pass would also reap other tests' orphans.)
        assert record.owner_pid != os.getpid() and pid_alive(record.owner_pid)
        assert reaper.reap(h.settings.records_dir, orphan_tags={tag}) == []
        assert len(namespaces_of(tag)) == 3

        with session_scope(h.ctx.session_factory) as session:
            autohold.release(session, hold_id, h.clock, "test")
        assert h.testbed_lease()[0] is None  # the pipeline may use the testbed again at once
        assert janitor.sweep_holds(h.ctx) == [hold_id]
        assert namespaces_of(tag) == []
        assert not records.path_for(h.settings.records_dir, tag).exists()
        assert not pids_with_cookie(record.cookie)
        assert not pid_alive(record.owner_pid, record.owner_ticks)
        state, _, torn_down = _hold(h, hold_id)
        assert state == "released" and torn_down is not None
    finally:
        janitor.release(h.settings.records_dir, tag)


def test_a_hold_that_times_out_is_torn_down(tmp_path: Path) -> None:
    h, run_id = _failing(tmp_path)
    hold_id = _arm(h, run_id, timedelta(seconds=2))
    tag = run_tag(h.ctx.settings, run_id)
    try:
        h.execute(run_id)
        assert len(namespaces_of(tag)) == 3
        assert janitor.sweep_holds(h.ctx) == []  # not yet
        time.sleep(2.2)
        assert janitor.sweep_holds(h.ctx) == [hold_id]
        assert namespaces_of(tag) == []
        assert _hold(h, hold_id)[0] == "released"
    finally:
        janitor.release(h.settings.records_dir, tag)


def test_without_a_matching_hold_a_failed_run_is_torn_down(tmp_path: Path) -> None:
    h, run_id = _failing(tmp_path)
    with session_scope(h.ctx.session_factory) as session:
        other = autohold.request(session, h.clock, duration=timedelta(hours=1), actor="test",
                                 candidate_id=h.run(run_id).candidate_id - 1)
    run = h.execute(run_id)
    assert run.verdict == "failed"
    assert namespaces_of(run_tag(h.ctx.settings, run_id)) == []
    assert _hold(h, other.id)[0] == "armed"
