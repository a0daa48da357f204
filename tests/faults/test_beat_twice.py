"""Beat run twice (or restarted while a pass is under way): no soak run is scheduled twice.

Two beats mean two reconcile passes at the same moment, on different worker processes and so on
different engines. Here many passes race, each thread with an engine of its own and committing
for real, over a soaking candidate whose next soak run is due: the scheduler's lock (an advisory
lock on PostgreSQL, the write lock on SQLite) and the unique (candidate, kind, attempt) make
exactly one soak run, and only one task is sent for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from tests.factories import POLICY, SOAK, World

THREADS = 8
PASSES = 5


@pytest.fixture
def database(empty_database_url: str) -> Iterator[str]:
    migrate.upgrade(empty_database_url)
    yield empty_database_url


def _soak_run_due(url: str, clock: FakeClock) -> int:
    """A soaking candidate whose first soak run passed and whose second is now due; its id."""
    engine = make_engine(url)
    try:
        world = World(make_session_factory(engine), clock)
        world.component("nova")
        world.testbed("gate1")
        world.commit("nova", "n1")
        report = world.reconcile()
        (gate,) = report.runs_created
        world.claim(gate)
        world.finish(gate)
        report = world.reconcile()
        (cid,) = report.started_soak
        (soak,) = report.runs_created
        world.claim(soak)
        world.finish(soak)
        assert world.reconcile().runs_created == []  # not due yet
        clock.advance(SOAK.interval + timedelta(seconds=1))
        return cid
    finally:
        engine.dispose()


def test_racing_reconcile_passes_schedule_a_due_soak_run_once(database: str) -> None:
    clock = FakeClock()
    cid = _soak_run_due(database, clock)
    start = threading.Barrier(THREADS)
    dispatchers = [RecordingDispatcher() for _ in range(THREADS)]
    created: list[int] = []
    lock = threading.Lock()

    def beat(n: int) -> None:
        engine = make_engine(database)  # one engine per "worker process"
        factory = make_session_factory(engine)
        try:
            start.wait(timeout=60)
            for _ in range(PASSES):
                with session_scope(factory) as session:
                    report = scheduler.reconcile(session, clock, POLICY, dispatchers[n])
                with lock:
                    created.extend(report.runs_created)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(beat, n) for n in range(THREADS)]:
            future.result(timeout=120)

    assert len(created) == 1, created
    assert [run for d in dispatchers for run in d.runs] == created  # one task, after its commit
    engine = make_engine(database)
    try:
        with session_scope(make_session_factory(engine)) as session:
            soak = session.execute(select(models.Run.attempt).where(
                models.Run.candidate_id == cid, models.Run.kind == "soak")
                .order_by(models.Run.attempt)).scalars().all()
            assert soak == [1, 2]
            duplicates = session.execute(
                select(models.Run.candidate_id, models.Run.kind, models.Run.attempt)
                .group_by(models.Run.candidate_id, models.Run.kind, models.Run.attempt)
                .having(func.count() > 1)).all()
            assert duplicates == []
    finally:
        engine.dispose()
