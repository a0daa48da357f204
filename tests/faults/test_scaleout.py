"""Scale-out: workers bound to one testbed each, sharing PostgreSQL and Redis, gate in parallel.

The scheduler side is checked first, on SQLite and PostgreSQL with a fake clock: with
``scheduler.parallel_gates: 2`` two candidates gate at once, soak stays one at a time, and a claim
bound to a testbed (``certifier worker --testbed``) takes that testbed or nothing.

Then the real thing: two ``certifier worker --testbed …`` processes, each with its own data folder
as if on its own machine, a fresh PostgreSQL database and Redis database 12 (the end-to-end tests
use 11), two ``local`` testbeds. Two candidates' gate runs must overlap in time, each on its own
testbed, each executed by the worker bound to that testbed. The deploy hook of a gate run waits
until a second gate run is deploying too (40 s at most, then it fails the run): with one worker,
or one testbed, the runs could not overlap and the test fails on their verdicts and intervals.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier import processes
from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.demo import world as demo_world
from certifier.domain.clock import SystemClock
from certifier.pipeline import components, read, runs, scheduler
from certifier.pipeline.dispatch import reconcile_after_commit
from certifier.settings import load_settings
from tests.conftest import flushed_redis_database, fresh_postgres_database
from tests.factories import SOAK, World
from tests.recipes.helpers import git_repo, write_hook
from tests.requirements import needs_binary
from workers.celery_app import create_celery
from workers.dispatch import CeleryDispatcher

LEASE = timedelta(minutes=35)
TWO = scheduler.SchedulerPolicy(soak=SOAK, parallel_gates=2)

# -- the scheduler and the claim -------------------------------------------------------------


@pytest.fixture
def world(world: World) -> World:
    world.testbed("gate2")
    return world


def _reconcile(world: World, policy: scheduler.SchedulerPolicy) -> scheduler.ReconcileReport:
    return world.reconcile(policy)


def _claim(world: World, run_id: int, testbed: str | None) -> runs.Claim:
    with session_scope(world.factory) as session:
        return runs.claim(session, run_id, "w:1", world.clock, LEASE, testbed=testbed)


def _candidate(world: World, cid: int) -> tuple[str, int | None, list[dict[str, Any]]]:
    with session_scope(world.factory) as session:
        cand = session.get(models.Candidate, cid)
        assert cand is not None
        return cand.state, cand.base_version, list(cand.excuses)


def _two_gating(world: World) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two candidates formed one after the other; ((candidates), (their gate runs))."""
    world.commit("nova", "n1")
    first = _reconcile(world, TWO)
    world.commit("nova", "n2")
    second = _reconcile(world, TWO)
    assert first.boarded == first.formed and second.boarded == second.formed
    return ((first.formed[0], second.formed[0]),
            (first.runs_created[0], second.runs_created[0]))


def test_with_parallel_gates_a_second_candidate_gates_while_the_first_one_does(
    world: World,
) -> None:
    (c1, c2), (r1, r2) = _two_gating(world)
    assert _candidate(world, c1)[0] == _candidate(world, c2)[0] == "gating"
    assert r1 != r2
    assert world.dispatcher.runs == [r1, r2]


def test_by_default_a_second_candidate_waits_in_the_queue(world: World) -> None:
    world.commit("nova", "n1")
    _reconcile(world, scheduler.SchedulerPolicy(soak=SOAK))
    world.commit("nova", "n2")
    report = _reconcile(world, scheduler.SchedulerPolicy(soak=SOAK))
    assert report.formed and not report.boarded and not report.runs_created
    assert _candidate(world, report.formed[0])[0] == "queued"


def test_a_bound_claim_takes_its_own_testbed_or_nothing(world: World) -> None:
    _, (r1, r2) = _two_gating(world)
    assert _claim(world, r1, "gate2") is runs.Claim.CLAIMED  # gate1 is free, but not ours
    assert _claim(world, r2, "gate2") is runs.Claim.BUSY  # gate1 is still free
    assert _claim(world, r2, "gate1") is runs.Claim.CLAIMED
    with session_scope(world.factory) as session:
        assert [runs.get_run(session, r).testbed for r in (r1, r2)] == ["gate2", "gate1"]


def test_soak_stays_one_at_a_time_and_the_waiting_candidate_is_rebased(world: World) -> None:
    (c1, c2), (r1, r2) = _two_gating(world)
    for run_id in (r1, r2):
        world.claim(run_id)
        world.finish(run_id)

    report = _reconcile(world, TWO)
    assert report.started_soak == [c1]
    state, base, excuses = _candidate(world, c2)
    assert (state, base) == ("gating", None)
    assert excuses[0].message == f"gate passed: waiting for candidate {c1} to finish soaking"
    with session_scope(world.factory) as session:  # the dashboard and API show it too
        waiting = session.get(models.Candidate, c2)
        assert waiting is not None
        shown = read.live_excuses(waiting, world.clock.now(), SOAK)
        assert [e.message for e in shown] == [excuses[0].message]

    soak_run = report.runs_created[0]
    world.claim(soak_run)
    world.finish(soak_run)
    world.clock.advance(SOAK.duration)
    report = _reconcile(world, TWO)
    assert (report.promoted, report.started_soak) == ([c1], [c2])
    state, base, _ = _candidate(world, c2)
    assert (state, base) == ("soaking", 1)  # upgrades from, and is promoted over, #1
    with session_scope(world.factory) as session:
        rebase = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "rebase")).one()
        assert (rebase.subject, rebase.detail) == (f"candidate {c2}", {"base_was": None,
                                                                       "base": 1})


# -- two worker processes ---------------------------------------------------------------------

SCALEOUT_REDIS_DB = 12
TESTBEDS = ("gate1", "gate2")

DEPLOY = """#!/bin/sh
set -eu
echo "$CERTIFIER_RUN_KIND $CERTIFIER_TESTBED" > "{marks}/$CERTIFIER_RUN_ID"
[ "$CERTIFIER_RUN_KIND" = gate ] || exit 0
# Test only: wait until a second gate run is deploying as well.
tries=0
while [ "$(grep -l '^gate ' {marks}/* | wc -l)" -lt 2 ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 400 ]; then echo "no second gate run within 40 s"; exit 1; fi
    sleep 0.1
done
"""


@pytest.fixture
def redis_broker() -> Iterator[str]:
    """A flushed Redis database number for the broker; its URL."""
    with flushed_redis_database(SCALEOUT_REDIS_DB) as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database(f"certifier_scaleout_{os.getpid()}") as url:
        yield url


def _config(tmp_path: Path, repo: Path, recipe: Path) -> Path:
    config = {
        "components": [{"name": "app", "url": str(repo), "branch": "main",
                        "recipe": str(recipe), "poll_interval": None}],
        "testbeds": [{"name": name, "driver": "local", "role": "gate", "hosts": ["h1", "h2"],
                      "subnet": f"198.18.{240 + i}.0/24"} for i, name in enumerate(TESTBEDS)],
        "soak": {"duration": "1h", "interval": "1h", "min_runs": 1},
        "suites": {"enabled": ["ping"], "ping": {"count": 3, "interval": 0.05}},
        "scheduler": {"parallel_gates": 2, "run_timeout": "5m", "hook_timeout": "1m"},
        "sources": {"local_paths": [str(repo.parent)]},  # the upstream is a local folder
    }
    path = tmp_path / "certifier.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _ready(log: Path) -> Callable[[], bool]:
    return lambda: b" ready." in log.read_bytes()


def _at(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _gate_runs(factory: sessionmaker[Session]) -> list[models.Run]:
    with session_scope(factory) as session:
        found = list(session.scalars(select(models.Run).where(models.Run.kind == "gate")
                                     .order_by(models.Run.id)))
        session.expunge_all()
        return found


def _report(factory: sessionmaker[Session], repo: Path, dispatcher: CeleryDispatcher) -> None:
    sha, title = demo_world.head(repo)
    with session_scope(factory) as session:
        components.report_commit(session, "app", sha, SystemClock(), title=title)
        reconcile_after_commit(session, dispatcher)


@needs_binary("git", "ping")
def test_two_workers_bound_to_two_testbeds_run_two_gate_runs_at_once(
    tmp_path: Path, postgres_url: str, redis_broker: str,
) -> None:
    started = time.monotonic()
    repo, _ = git_repo(tmp_path / "upstream" / "app", {"app.conf": "workers = 1\n"})
    marks = tmp_path / "marks"
    marks.mkdir()
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", DEPLOY.format(marks=marks))
    settings = load_settings(config_file=_config(tmp_path, repo, recipe),
                             data_dir=tmp_path / "controller", database_url=postgres_url,
                             broker_url=redis_broker)
    migrate.upgrade(postgres_url)  # before the workers, which would otherwise race to do it
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        components.sync_from_config(session, settings.config.components,
                                    settings.config.testbeds, SystemClock())
    logs = tmp_path / "logs"
    logs.mkdir()
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in TESTBEDS:  # a data folder each, as on two machines
            own = settings.model_copy(update={"data_dir": tmp_path / f"host-{name}"})
            own.data_dir.mkdir()
            workers[name] = processes.spawn(["worker", "--testbed", name],
                                            own, logs / f"worker-{name}.log")
        for name in TESTBEDS:
            _wait(f"worker {name} to be ready", _ready(logs / f"worker-{name}.log"), 60)
        dispatcher = CeleryDispatcher(create_celery(settings))

        _report(factory, repo, dispatcher)  # candidate 1: its gate run starts, and waits
        _wait("the first gate run to start",
              lambda: any(r.state == "running" for r in _gate_runs(factory)), 30)
        demo_world.commit(repo, {"app.conf": "workers = 2\n"}, "More workers")
        _report(factory, repo, dispatcher)  # candidate 2 boards beside it: parallel_gates 2
        gate = _wait("two finished gate runs", lambda: (found := _gate_runs(factory))
                     and len(found) == 2 and all(r.state == "finished" for r in found)
                     and found, 60)

        assert [r.verdict for r in gate] == ["passed", "passed"], [r.log for r in gate]
        assert sorted(r.testbed or "" for r in gate) == list(TESTBEDS)
        assert len({r.candidate_id for r in gate}) == 2
        intervals = [(_at(r.started_at), _at(r.finished_at)) for r in gate]
        overlap = min(f for _, f in intervals) - max(s for s, _ in intervals)
        assert overlap > timedelta(0), f"the gate runs did not overlap: {intervals}"
        _assert_each_worker_ran_only_its_testbed(factory, workers)
        _assert_one_soaks_while_the_other_waits(factory, gate)
    finally:
        processes.stop(list(workers.values()))
        engine.dispose()
        for name in TESTBEDS:
            print(f"----- worker {name} (tail) -----")
            print((logs / f"worker-{name}.log").read_text(errors="replace")[-3000:])
    assert time.monotonic() - started < 90


def _assert_each_worker_ran_only_its_testbed(
    factory: sessionmaker[Session], workers: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Every run so far (the gate runs, and a soak run if one started) ran in a pool process of
    the worker bound to its testbed."""
    with session_scope(factory) as session:
        ran = [(r.id, r.testbed, r.worker) for r in session.scalars(
            select(models.Run).where(models.Run.worker.is_not(None)))]
    assert len(ran) >= 2
    for run_id, testbed, worker in ran:
        host, _, pid = (worker or "").rpartition(":")
        assert host == socket.gethostname()
        assert testbed is not None
        assert _parent_of(int(pid)) == workers[testbed].pid, (
            f"run {run_id} on {testbed} was run by {worker}, not by that testbed's worker")


def _assert_one_soaks_while_the_other_waits(factory: sessionmaker[Session],
                                            gate: list[models.Run]) -> None:
    """Soak stays one at a time: whichever passed first soaks, the other waits, still gating."""
    def settled() -> tuple[models.Candidate, models.Candidate] | None:
        with session_scope(factory) as session:
            cands = [session.get(models.Candidate, r.candidate_id) for r in gate]
            session.expunge_all()
        soaking = [c for c in cands if c is not None and c.state == "soaking"]
        waiting = [c for c in cands if c is not None and c.state == "gating"
                   and c.excuses and c.excuses[0].message.startswith("gate passed")]
        return (soaking[0], waiting[0]) if len(soaking) == len(waiting) == 1 else None

    soaking, waiting = _wait("one candidate to soak and the other to wait", settled, 20)
    assert waiting.excuses[0].message == (
        f"gate passed: waiting for candidate {soaking.id} to finish soaking")


def test_a_worker_bound_to_a_testbed_the_config_lacks_stops_with_a_clear_message(
    tmp_path: Path,
) -> None:
    config = tmp_path / "certifier.yaml"
    config.write_text(yaml.safe_dump({"testbeds": [{"name": "gate1", "driver": "local"}]}))
    env = {**os.environ, "CERTIFIER_CONFIG": str(config),
           "CERTIFIER_DATA_DIR": str(tmp_path / "data")}
    env.pop("CERTIFIER_DATABASE_URL", None)
    env.pop("CERTIFIER_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-m", "certifier", "worker", "--testbed", "gate9"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "certifier: no testbed 'gate9' in the configuration (testbeds: gate1)")
    assert not (tmp_path / "data").exists()  # stopped before touching anything
