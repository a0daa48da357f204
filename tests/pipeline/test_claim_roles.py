"""Which testbed a run claims: its role's testbed whenever one exists, on SQLite and PostgreSQL.

Gate and bisect runs belong on a ``gate`` testbed, soak and control (``baseline``) runs on a
``soak`` one: the detector compares a soak run only with the known-good's runs on the same
testbed, so a soak or control run that took a free gate testbed would measure nothing it is
compared with. A worker bound to one testbed (``certifier worker --testbed``) answers BUSY for a
run of another testbed's role, and leaves it to that testbed's worker. Only when no testbed has a
run's role does the run take any testbed.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.detector import DetectorPolicy
from certifier.domain.judgement import RunKind
from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.pipeline import runs, scheduler
from tests.factories import SOAK, World

LEASE = timedelta(minutes=35)
RTT = Measurement("ping", "rtt_avg_ms", 0.0, "ms", Better.LOWER,
                  {"source": "h1", "destination": "h2"}).key


@pytest.fixture
def world(world: World) -> World:
    """A gate testbed and a soak testbed, as in the README's example config."""
    world.testbed("soak1", role="soak")
    return world


def _claim(world: World, run_id: int, testbed: str | None = None) -> runs.Claim:
    with session_scope(world.factory) as session:
        return runs.claim(session, run_id, "w:1", world.clock, LEASE, testbed=testbed)


def _run(world: World, run_id: int) -> models.Run:
    with session_scope(world.factory) as session:
        run = runs.get_run(session, run_id)
        session.expunge(run)
        return run


def _lease(world: World, testbed: str) -> int | None:
    with session_scope(world.factory) as session:
        return session.get_one(models.Testbed, testbed).leased_by_run_id


def _candidate(world: World) -> int:
    """A candidate of nova's first head, gating (its gate run pending)."""
    world.commit("nova", "n1")
    (cid,) = world.reconcile().formed
    return cid


def _pending(world: World, cid: int, kind: RunKind) -> int:
    """A new pending run of ``kind`` for candidate ``cid``, as the scheduler creates them."""
    with session_scope(world.factory) as session:
        cand = session.get_one(models.Candidate, cid)
        attempt = 1 + sum(1 for r in cand.runs if r.kind == kind)
        run = models.Run(candidate_id=cid, kind=kind, attempt=attempt,
                         state=runs.RunState.PENDING, created_at=world.clock.now(),
                         dispatched_at=world.clock.now())
        session.add(run)
        session.flush()
        return run.id


def _ping(rtt: float) -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", True)],
                        measurements=[Measurement("ping", "rtt_avg_ms", rtt, "ms", Better.LOWER,
                                                  {"source": "h1", "destination": "h2"})])]


@pytest.mark.parametrize(("kind", "testbed"), [(RunKind.GATE, "gate1"), (RunKind.BISECT, "gate1"),
                                               (RunKind.SOAK, "soak1"),
                                               (RunKind.BASELINE, "soak1")])
def test_each_kind_of_run_claims_the_testbed_of_its_role(
    world: World, kind: RunKind, testbed: str,
) -> None:
    run_id = _pending(world, _candidate(world), kind)
    assert _claim(world, run_id) is runs.Claim.CLAIMED
    assert _run(world, run_id).testbed == testbed
    assert _lease(world, testbed) == run_id


def test_a_control_run_feeds_the_detector_history_of_the_soak_runs_on_the_soak_testbed(
    world: World,
) -> None:
    world.commit("nova", "n1")
    world.promote_heads()
    world.policy = scheduler.SchedulerPolicy(soak=SOAK, baseline_every=1)
    world.commit("nova", "n2")
    gate = world.reconcile().runs_created[0]
    assert _claim(world, gate) is runs.Claim.CLAIMED
    world.finish(gate)
    report = world.reconcile()
    soak, control = sorted(report.runs_created, key=lambda r: _run(world, r).kind != "soak")
    assert _run(world, control).kind == RunKind.BASELINE  # queued by scheduler._control_run

    assert _claim(world, soak) is runs.Claim.CLAIMED
    # soak1 is busy and gate1 free: the control run waits for soak1 all the same.
    assert _claim(world, control) is runs.Claim.BUSY
    world.finish(soak, _ping(0.05))
    assert _claim(world, control) is runs.Claim.CLAIMED
    assert _run(world, control).testbed == "soak1"
    world.finish(control, _ping(0.07))

    world.clock.advance(SOAK.interval)
    next_soak = next(r for r in world.reconcile().runs_created
                     if _run(world, r).kind == RunKind.SOAK)
    assert _claim(world, next_soak) is runs.Claim.CLAIMED
    with session_scope(world.factory) as session:
        history = runs.history(session, runs.get_run(session, next_soak), DetectorPolicy())
    assert history is not None
    assert history.label == "known-good #1 on soak1"
    assert history.baseline == {RTT: (0.07,)}  # the control run's, measured on soak1
    assert history.candidate == {RTT: (0.05,)}


@pytest.mark.parametrize(("kind", "bound", "right"), [(RunKind.SOAK, "gate1", "soak1"),
                                                      (RunKind.BASELINE, "gate1", "soak1"),
                                                      (RunKind.GATE, "soak1", "gate1"),
                                                      (RunKind.BISECT, "soak1", "gate1")])
def test_a_bound_worker_leaves_a_run_of_another_role_to_that_testbeds_worker(
    world: World, kind: RunKind, bound: str, right: str,
) -> None:
    run_id = _pending(world, _candidate(world), kind)
    world.clock.advance(timedelta(minutes=3))
    assert _claim(world, run_id, bound) is runs.Claim.BUSY  # although its testbed is free
    run = _run(world, run_id)
    assert (run.state, run.testbed, _lease(world, bound)) == ("pending", None, None)
    assert run.dispatched_at == world.clock.now()  # a live message: no redispatch of copies
    assert _claim(world, run_id, right) is runs.Claim.CLAIMED
    assert _run(world, run_id).testbed == right


def test_a_bound_worker_takes_a_run_whose_role_no_testbed_has(
    session_factory: sessionmaker[Session],
) -> None:
    world = World(session_factory, FakeClock())
    world.component("nova")
    world.testbed("gate1")
    world.testbed("gate2")
    cid = _candidate(world)
    soak, control = (_pending(world, cid, RunKind.SOAK),
                     _pending(world, cid, RunKind.BASELINE))
    assert _claim(world, soak, "gate2") is runs.Claim.CLAIMED
    assert _claim(world, control, "gate2") is runs.Claim.BUSY  # gate2 is busy now
    assert _claim(world, control, "gate1") is runs.Claim.CLAIMED
    assert [_run(world, r).testbed for r in (soak, control)] == ["gate2", "gate1"]


def test_an_unbound_worker_waits_for_its_roles_testbed_rather_than_take_another(
    world: World,
) -> None:
    cid = _candidate(world)
    first, second = (_pending(world, cid, RunKind.GATE), _pending(world, cid, RunKind.GATE))
    assert _claim(world, first) is runs.Claim.CLAIMED
    assert _claim(world, second) is runs.Claim.BUSY  # soak1 is free, but not for a gate run
    assert _lease(world, "soak1") is None
    world.finish(first)
    assert _claim(world, second) is runs.Claim.CLAIMED
    assert _run(world, second).testbed == "gate1"
