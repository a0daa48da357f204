"""SIGKILL the worker in the middle of a run: the next worker reaps what the run built, finishes it
as ``infra_error``, and the pipeline retries it — one new attempt, which passes.

Real processes throughout: a worker and beat (``certifier worker``/``beat``) on the embedded
broker and SQLite, the demo world on a netns testbed, and a deploy hook that, the first time only,
starts a process inside a host's namespace and then sleeps, so the run is caught mid-flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from certifier import processes
from certifier.db import models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.demo import scenario
from certifier.demo import world as demo_world
from certifier.settings import Settings, load_settings
from tests.requirements import needs_binary, needs_root
from workers.celery_app import create_celery
from workers.dispatch import CeleryDispatcher
from workers.testbed import records
from workers.testbed.process import pid_alive, pids_with_cookie
from workers.testbed.tags import run_tag, run_tag_prefix

from ..recipes.helpers import namespaces_of, namespaces_of_instance

pytestmark = [pytest.mark.root, pytest.mark.e2e, needs_root,
              needs_binary("ip", "tc", "ping", "iperf3", "fio", "git")]

SLOW_ONCE = """
# Test only: the first deploy leaves a process in h1's namespace and hangs, mid-run.
if [ ! -e "{marker}" ]; then
    touch "{marker}"
    ip netns exec "$CERTIFIER_HOST_H1_NS" sleep 600 >/dev/null 2>&1 &
    echo "$CERTIFIER_RUN_ID" > "{started}"
    sleep 600
fi
"""


def _wait(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def world(tmp_path: Path) -> tuple[demo_world.DemoWorld, Settings, Path]:
    world = demo_world.build(tmp_path / "world", subnet="198.18.249.0/24", infra_backoff="1s")
    deploy = world.root / "recipes" / "netpolicy" / "deploy"
    text = deploy.read_text()
    head, _, body = text.partition("set -eu\n")
    deploy.write_text(head + "set -eu\n" + SLOW_ONCE.format(
        marker=tmp_path / "slept-once", started=tmp_path / "started") + body)
    settings = load_settings(config_file=world.config_file, data_dir=tmp_path / "data",
                             database_url=None, broker_url=None)
    settings.data_dir.mkdir(parents=True)
    return world, settings, tmp_path / "started"


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    for name in sorted(p.name for p in folder.glob("*.log")):
        print(f"----- {name} (tail) -----\n{(folder / name).read_text(errors='replace')[-3000:]}")


def _gate_runs(factory: Any) -> list[tuple[int, int, str, str | None]]:
    with session_scope(factory) as session:
        rows = session.execute(select(models.Run.id, models.Run.attempt, models.Run.state,
                                      models.Run.verdict)
                               .where(models.Run.kind == "gate").order_by(models.Run.id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_sigkilled_worker_leaves_nothing_and_its_run_is_retried(
    world: tuple[demo_world.DemoWorld, Settings, Path], logs: Path,
) -> None:
    demo, settings, started = world
    procs: list[subprocess.Popen[bytes]] = []
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    try:
        first = processes.spawn(["worker"], settings, logs / "worker-1.log")
        procs += [first, processes.spawn(["beat"], settings, logs / "beat.log")]
        _wait("the database", lambda: settings.data_dir.joinpath("certifier.sqlite").exists()
              and _has_testbed(factory), 60)
        scenario.report_heads(factory, demo, CeleryDispatcher(create_celery(settings)))

        # 1. The run is mid-flight: inside the deploy hook, with a process in a namespace.
        run_id = int(_wait("the slow deploy hook", lambda: started.exists()
                           and started.read_text().strip(), 90))
        tag = run_tag(settings, run_id)
        record = records.read(records.path_for(settings.records_dir, tag))
        assert record is not None
        assert len(namespaces_of(tag)) == 3
        assert len(pids_with_cookie(record.cookie)) >= 2  # the hook and its namespace process

        # 2. SIGKILL the whole worker: main process and pool, no chance to clean up.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        _wait("the worker's pool to die", lambda: not pid_alive(record.owner_pid), 10)
        assert namespaces_of(tag), "nothing to reap: the test would prove nothing"
        assert pids_with_cookie(record.cookie)

        # 3. A new worker: its janitor reaps the dead run's testbed and finishes the run.
        procs.append(processes.spawn(["worker"], settings, logs / "worker-2.log"))
        _wait("the dead run to become infra_error",
              lambda: any(r[0] == run_id and r[3] == "infra_error" for r in _gate_runs(factory)),
              60)
        assert namespaces_of(tag) == []
        assert pids_with_cookie(record.cookie) == []
        assert not records.path_for(settings.records_dir, tag).exists()
        with session_scope(factory) as session:
            dead = session.get(models.Run, run_id)
            assert dead is not None
            assert "died during the run" in dead.excuses[0].message

        # 4. The retry: one new attempt of the same gate run, and it passes.
        gate = _wait("the retried gate run to pass",
                     lambda: (rows := _gate_runs(factory)) and rows[-1][3] == "passed" and rows,
                     150)
        assert [(attempt, verdict) for _, attempt, _, verdict in gate] == [
            (1, "infra_error"), (2, "passed")]
    finally:
        processes.stop(procs)
        engine.dispose()
    # Stopping the worker (SIGTERM) left nothing of this instance either: no run's testbed, no
    # control twin, no calibration probe. (It once left a soak run's probe: a pool process
    # forked during the warm shutdown started that run and was SIGKILLed at the grace's end.)
    assert namespaces_of_instance(run_tag_prefix(settings)) == []


def _has_testbed(factory: Any) -> bool:
    try:
        with session_scope(factory) as session:
            return session.scalar(select(models.Testbed.name)) is not None
    except Exception:  # the worker is still creating the schema
        return False
