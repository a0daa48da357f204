"""Infra errors are retried after an exponential, capped backoff, and never count against anyone.

Driven through the real reconcile loop on SQLite and PostgreSQL with a fake clock: a run ends in
``infra_error``, and the next attempt is created only once its backoff has passed.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.promotion import SoakPolicy
from certifier.pipeline import scheduler
from tests.factories import World

POLICY = SoakPolicy(duration=timedelta(hours=1), interval=timedelta(minutes=10), min_runs=1,
                    max_infra_retries=4, infra_backoff=timedelta(seconds=30),
                    infra_backoff_max=timedelta(seconds=100))


@pytest.fixture
def world(world: World) -> World:
    world.policy = scheduler.SchedulerPolicy(soak=POLICY)
    return world


def _infra_error(world: World, run_id: int) -> None:
    world.claim(run_id)
    world.finish(run_id, [], setup_error="testbed: ip netns add failed")


def _excuses(world: World) -> list[str]:
    with session_scope(world.factory) as session:
        cand = session.query(models.Candidate).one()
        return [str(e.message) for e in cand.excuses]


def _first_gate_run(world: World) -> int:
    world.commit("nova", "n1")
    report = world.reconcile()
    assert len(report.runs_created) == 1
    return report.runs_created[0]


def test_the_retry_after_an_infra_error_waits_for_its_backoff(world: World) -> None:
    _infra_error(world, _first_gate_run(world))
    assert world.reconcile().runs_created == []
    assert any("retry 1 of 4 in 30 s" in m and "ip netns add failed" in m
               for m in _excuses(world))
    world.clock.advance(timedelta(seconds=29))
    assert world.reconcile().runs_created == []
    world.clock.advance(timedelta(seconds=1))
    assert len(world.reconcile().runs_created) == 1


def test_the_backoff_doubles_with_each_retry_and_is_capped(world: World) -> None:
    run_id = _first_gate_run(world)
    waits = []
    for _ in range(4):
        _infra_error(world, run_id)
        waited = 0
        while not (report := world.reconcile()).runs_created:
            world.clock.advance(timedelta(seconds=5))
            waited += 5
            assert waited < 1000, "no retry came"
        waits.append(waited)
        run_id = report.runs_created[0]
    assert waits == [30, 60, 100, 100]
    assert POLICY.retry_delay(30) == POLICY.infra_backoff_max


def test_infra_errors_never_reject_and_stop_after_the_bound(world: World) -> None:
    run_id = _first_gate_run(world)
    for _ in range(1 + POLICY.max_infra_retries):
        _infra_error(world, run_id)
        world.clock.advance(POLICY.infra_backoff_max)
        report = world.reconcile()
        assert report.rejected == []
        if not report.runs_created:
            break
        run_id = report.runs_created[0]
    world.clock.advance(timedelta(days=1))
    report = world.reconcile()
    assert (report.runs_created, report.rejected) == ([], [])
    assert any("retries exhausted" in m for m in _excuses(world))


def test_a_soak_run_infra_error_also_waits_before_its_retry(world: World) -> None:
    gate = _first_gate_run(world)
    world.claim(gate)
    world.finish(gate)
    report = world.reconcile()
    assert report.started_soak and len(report.runs_created) == 1
    _infra_error(world, report.runs_created[0])
    assert world.reconcile().runs_created == []
    world.clock.advance(POLICY.retry_delay(1))
    assert len(world.reconcile().runs_created) == 1
