"""A run whose worker is gone while the other workers stay up: its lease expires, or the reconcile
pass expires it, and its testbed is cleaned before anyone uses it again.

Nobody restarts a worker here, so the janitor at worker start never runs. What cleans up instead
is the worker that claims the testbed next (``workers/janitor.py:clear_testbed``) and the sweep
every reconcile pass makes (``sweep_dead``). The leftovers are real: a child process builds the
dead run's netns testbed (namespaces, veth pairs, a process in a host's namespace, its record)
under the run's own tag, and an extra namespace of that tag that no record lists.

The claim itself (an expired lease is taken over, and its run is finished) needs no root and is
checked first, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from certifier.db import models
from certifier.db.session import session_scope
from certifier.pipeline import runs
from certifier.settings import UpgradeSuiteConfig
from tests.conftest import fresh_postgres_database
from tests.factories import World
from tests.recipes.helpers import Harness, git_repo, harness, namespaces_of, write_hook
from tests.requirements import needs_binary, needs_root
from workers import janitor
from workers.testbed import records
from workers.testbed.process import pid_alive
from workers.testbed.tags import run_tag

LEASE = timedelta(minutes=35)

# The dead run: builds the testbed a runner would build for it, starts a server in h2, says its
# pid and waits (to be SIGKILLed, or to hang).
DEAD_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workers.testbed.base import TestbedSpec
    from workers.testbed.factory import create_testbed

    name, tag, subnet, state, records_dir = sys.argv[1:6]
    bed = create_testbed(TestbedSpec(name=name, subnet=subnet), tag=tag,
                         state_dir=Path(state), records_dir=Path(records_dir))
    server = bed.spawn(["sleep", "300"], host="h2", log_path=Path(state) / "server.log")
    print(server.pid, flush=True)
    time.sleep(300)
""")


# -- the claim: no root needed ----------------------------------------------------------------


def test_taking_over_an_expired_lease_finishes_the_run_that_held_it(world: World) -> None:
    world.commit("nova", "n1")
    dead = world.reconcile().runs_created[0]
    with session_scope(world.factory) as session:
        assert runs.claim(session, dead, "gone:1", world.clock, LEASE) is runs.Claim.CLAIMED
        retry = models.Run(candidate_id=runs.get_run(session, dead).candidate_id, kind="gate",
                           attempt=2, state=runs.RunState.PENDING, created_at=world.clock.now())
        session.add(retry)
        session.flush()
        retry_id = retry.id
    with session_scope(world.factory) as session:  # the lease is still good: no takeover
        assert runs.claim(session, retry_id, "w:2", world.clock, LEASE) is runs.Claim.BUSY

    world.clock.advance(LEASE + timedelta(seconds=1))
    with session_scope(world.factory) as session:
        assert runs.claim(session, retry_id, "w:2", world.clock, LEASE) is runs.Claim.CLAIMED

    with session_scope(world.factory) as session:
        old, new = runs.get_run(session, dead), runs.get_run(session, retry_id)
        assert (old.state, old.verdict) == ("finished", "infra_error")
        assert "took the testbed over" in old.excuses[0].message
        assert old.finished_at is not None
        assert (new.state, new.testbed) == ("running", "gate1")
        bed = session.get(models.Testbed, "gate1")
        assert bed is not None and bed.leased_by_run_id == retry_id


# -- the janitor on a real testbed: root ------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings overrides: the harness's own SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    with fresh_postgres_database(f"certifier_lease_{os.getpid()}") as url:
        yield {"database_url": url}


@pytest.fixture
def pipeline(tmp_path: Path, database: dict[str, Any]) -> Harness:
    """One component with a trivial deploy hook, one netns testbed ``bed``, no suites."""
    repo, sha = git_repo(tmp_path / "upstream", {"README": "app\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "exit 0")
    h = harness(tmp_path, {"app": (repo, recipe)}, driver="netns",
                upgrade=UpgradeSuiteConfig(enabled=False), **database)
    h.report("app", sha)
    return h


class DeadRun:
    """The testbed a vanished run left: its process, its record, its namespaces."""

    def __init__(self, h: Harness, run_id: int, tmp_path: Path) -> None:
        self.tag = run_tag(h.settings, run_id)
        subnet = next(t.subnet for t in h.settings.config.testbeds)
        self.child = subprocess.Popen(
            [sys.executable, "-c", DEAD_RUN, "bed", self.tag, subnet,
             str(tmp_path / "dead-state"), str(h.settings.records_dir)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        assert self.child.stdout is not None
        self.server = int(self.child.stdout.readline())
        # An object of the tag that no record lists (a crash between create and record update).
        subprocess.run(["ip", "netns", "add", f"cf-{self.tag}-x9"], check=True, timeout=10)
        self.record = records.path_for(h.settings.records_dir, self.tag)

    def kill_owner(self) -> None:
        self.child.send_signal(signal.SIGKILL)
        self.child.wait(timeout=10)

    def leftovers(self) -> list[str]:
        found = namespaces_of(self.tag)
        if pid_alive(self.server):
            found.append(f"pid {self.server}")
        if self.record.exists():
            found.append(f"record {self.record.name}")
        return found

    def close(self) -> None:
        if self.child.poll() is None:
            self.kill_owner()
        for name in namespaces_of(self.tag):
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
        if pid_alive(self.server):
            os.kill(self.server, signal.SIGKILL)


@pytest.fixture
def leftovers(pipeline: Harness, tmp_path: Path) -> Iterator[tuple[int, DeadRun]]:
    """A gate run claimed by a worker on another pid, and the testbed that run built."""
    run_id = pipeline.gate_run()
    with session_scope(pipeline.ctx.session_factory) as session:
        claim = runs.claim(session, run_id, "worker-host:4000000", pipeline.clock, LEASE)
        assert claim is runs.Claim.CLAIMED
    dead = DeadRun(pipeline, run_id, tmp_path)
    try:
        assert len(dead.leftovers()) == 6, dead.leftovers()  # h1, h2, sw, x9, server, record
        yield run_id, dead
    finally:
        dead.close()


def _expire_lease(h: Harness) -> None:
    with session_scope(h.ctx.session_factory) as session:
        session.execute(update(models.Testbed).where(models.Testbed.name == "bed")
                        .values(lease_expires_at=h.clock.now() - timedelta(minutes=1)))


def _started_long_ago(h: Harness, run_id: int) -> None:
    """As if the run had been running for longer than ``run_timeout``."""
    timeout = h.settings.config.scheduler.run_timeout
    with session_scope(h.ctx.session_factory) as session:
        session.execute(update(models.Run).where(models.Run.id == run_id)
                        .values(started_at=h.clock.now() - timeout - timedelta(minutes=1)))


def _retry(h: Harness, dead_run: int) -> int:
    """A second gate run of the same candidate, pending, as the scheduler's retry would be."""
    with session_scope(h.ctx.session_factory) as session:
        old = runs.get_run(session, dead_run)
        retry = models.Run(candidate_id=old.candidate_id, kind="gate", attempt=old.attempt + 1,
                           state=runs.RunState.PENDING, created_at=h.clock.now())
        session.add(retry)
        session.flush()
        return retry.id


@pytest.mark.root
@needs_root
@needs_binary("ip", "git")
def test_the_next_claim_of_an_expired_lease_reaps_the_dead_runs_testbed_first(
    pipeline: Harness, leftovers: tuple[int, DeadRun],
) -> None:
    dead_run, dead = leftovers
    dead.kill_owner()  # the worker is gone; the others stay up, so no janitor at start runs
    _expire_lease(pipeline)
    retry = _retry(pipeline, dead_run)

    run = pipeline.execute(retry)  # the real runner: claim, janitor, build, deploy, finish

    assert dead.leftovers() == []
    assert (run.verdict, run.testbed) == ("passed", "bed")
    assert f"cf-{dead.tag}-h2" in run.log and f"cf-{dead.tag}-x9" in run.log
    old = pipeline.run(dead_run)
    assert (old.state, old.verdict) == ("finished", "infra_error")
    assert "lease on testbed bed expired" in old.excuses[0].message
    assert namespaces_of(run_tag(pipeline.settings, retry)) == []  # its own, torn down as usual


@pytest.mark.root
@needs_root
@needs_binary("ip", "git")
def test_a_run_expired_by_the_reconcile_pass_is_reaped_by_the_next_claim_even_if_it_hangs(
    pipeline: Harness, leftovers: tuple[int, DeadRun],
) -> None:
    dead_run, dead = leftovers  # its owner still lives: a hung run, not a dead one
    _started_long_ago(pipeline, dead_run)
    assert pipeline.reconcile().runs_expired == [dead_run]
    assert len(dead.leftovers()) == 6  # the pass itself, which may run anywhere, touches none
    time.sleep(1.1)  # the harness's infra backoff
    report = pipeline.reconcile()
    assert len(report.runs_created) == 1, report

    run = pipeline.execute(report.runs_created[0])

    assert dead.leftovers() == []
    assert dead.child.poll() is None  # the janitor never kills a worker's process, only ours
    assert run.verdict == "passed"
    assert pipeline.run(dead_run).verdict == "infra_error"


@pytest.mark.root
@needs_root
@needs_binary("ip", "git")
def test_the_reconcile_sweep_reaps_a_dead_runs_testbed_while_the_worker_lives_on(
    pipeline: Harness, leftovers: tuple[int, DeadRun],
) -> None:
    _, dead = leftovers
    dead.kill_owner()

    removed = janitor.sweep_dead(pipeline.ctx)

    assert f"record {dead.tag}" in removed
    # The record's objects are gone; the namespace no record lists waits for a claim or restart.
    assert dead.leftovers() == [f"cf-{dead.tag}-x9"]
