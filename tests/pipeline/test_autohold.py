"""Autoholds as a service, on SQLite and PostgreSQL with a fake clock: what matches, what the
testbed lease does while a testbed is held, release, expiry, and the audit trail.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.judgement import JudgementPolicy, Verdict
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import autohold, runs
from certifier.pipeline.autohold import HoldState
from certifier.pipeline.errors import Invalid, NotFound
from tests.factories import World


@pytest.fixture
def world(world: World) -> World:
    world.component("neutron")
    return world


def _claimed_gate_run(world: World) -> tuple[int, int]:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    report = world.reconcile()
    run_id = report.runs_created[0]
    world.claim(run_id)
    return report.formed[0], run_id


def _request(world: World, **filters: object) -> int:
    with session_scope(world.factory) as session:
        return autohold.request(session, world.clock, duration=timedelta(hours=2),
                                actor="token:alice", reason="why does it fail?",
                                **filters).id  # type: ignore[arg-type]


def _matching(world: World, run_id: int, verdict: Verdict = Verdict.FAILED) -> int | None:
    with session_scope(world.factory) as session:
        return autohold.matching(session, run_id, verdict)


def _hold(world: World, hold_id: int) -> models.Autohold:
    with session_scope(world.factory) as session:
        hold = autohold.get(session, hold_id)
        session.expunge(hold)
        return hold


def _lease(world: World) -> tuple[int | None, object]:
    with session_scope(world.factory) as session:
        bed = session.get(models.Testbed, "gate1")
        assert bed is not None
        return bed.leased_by_run_id, bed.lease_expires_at


def _fail_and_catch(world: World, run_id: int, hold_id: int) -> models.Autohold | None:
    failing = [SuiteResult("ping", checks=[Check("ping", "reach h1->h2", False, "100% loss")])]
    with session_scope(world.factory) as session:
        judgement = runs.finish(session, run_id, failing, world.clock, JudgementPolicy())
        assert judgement.verdict is Verdict.FAILED
        return autohold.catch(session, hold_id, run_id, world.clock, testbed="gate1",
                              tag=f"r{run_id}", worker="vm:123",
                              commands=[f"ip netns exec cf-r{run_id}-h1 bash"])


def test_a_hold_for_the_candidate_matches_its_failed_or_regressed_runs(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold = _request(world, candidate_id=cid)
    assert _matching(world, run_id, Verdict.FAILED) == hold
    assert _matching(world, run_id, Verdict.REGRESSED) == hold
    assert _matching(world, run_id, Verdict.PASSED) is None
    assert _matching(world, run_id, Verdict.INFRA_ERROR) is None


def test_a_component_hold_matches_candidates_that_change_the_component(world: World) -> None:
    _, run_id = _claimed_gate_run(world)
    world.component("glance")  # exists, but the candidate does not change it
    _request(world, component="glance")
    assert _matching(world, run_id) is None
    nova = _request(world, component="nova")
    assert _matching(world, run_id) == nova
    with pytest.raises(NotFound):
        _request(world, component="cinder")


def test_a_request_needs_a_sane_duration_and_an_existing_candidate(world: World) -> None:
    with session_scope(world.factory) as session, pytest.raises(Invalid):
        autohold.request(session, world.clock, duration=timedelta(days=30), actor="x")
    with session_scope(world.factory) as session, pytest.raises(NotFound):
        autohold.request(session, world.clock, duration=timedelta(hours=1), actor="x",
                         candidate_id=999)


def test_a_caught_hold_keeps_the_testbed_leased_to_the_failed_run(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold_id = _request(world, candidate_id=cid)
    caught = _fail_and_catch(world, run_id, hold_id)
    assert caught is not None
    hold = _hold(world, hold_id)
    assert hold.state == HoldState.HOLDING
    assert (hold.run_id, hold.tag, hold.testbed) == (run_id, f"r{run_id}", "gate1")
    assert hold.commands == [f"ip netns exec cf-r{run_id}-h1 bash"]
    assert hold.expires_at == world.clock.now() + timedelta(hours=2)
    assert _lease(world) == (run_id, hold.expires_at)
    # A new run for the testbed waits: the held testbed is not handed out.
    world.commit("nova", "n2")
    report = world.reconcile()
    with session_scope(world.factory) as session:
        claim = runs.claim(session, report.runs_created[-1], "w2", world.clock,
                           timedelta(minutes=30))
    assert claim is runs.Claim.BUSY


def test_a_hold_catches_one_run_only(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold_id = _request(world, candidate_id=cid)
    assert _fail_and_catch(world, run_id, hold_id) is not None
    assert _matching(world, run_id) is None
    with session_scope(world.factory) as session:
        again = autohold.catch(session, hold_id, run_id, world.clock, testbed="gate1",
                               tag="r1", worker="vm:1", commands=[])
    assert again is None


def test_releasing_a_holding_hold_hands_the_testbed_back_at_once(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold_id = _request(world, candidate_id=cid)
    _fail_and_catch(world, run_id, hold_id)
    with session_scope(world.factory) as session:
        autohold.release(session, hold_id, world.clock, "token:bob")
    hold = _hold(world, hold_id)
    assert (hold.state, hold.released_by) == (HoldState.RELEASING, "token:bob")
    assert _lease(world) == (None, None)
    with session_scope(world.factory) as session:
        assert [h.id for h in autohold.releasing_on(session, "vm")] == [hold_id]
        assert autohold.releasing_on(session, "other-host") == []
        autohold.torn_down(session, hold_id, world.clock)
    assert _hold(world, hold_id).state == HoldState.RELEASED
    with session_scope(world.factory) as session:  # releasing again changes nothing
        assert autohold.release(session, hold_id, world.clock, "x").state == HoldState.RELEASED


def test_releasing_an_armed_hold_ends_it(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold_id = _request(world, candidate_id=cid)
    with session_scope(world.factory) as session:
        autohold.release(session, hold_id, world.clock, "token:alice")
    assert _hold(world, hold_id).state == HoldState.RELEASED
    assert _matching(world, run_id) is None


def test_a_hold_expires_after_its_duration(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold_id = _request(world, candidate_id=cid)
    _fail_and_catch(world, run_id, hold_id)
    world.clock.advance(timedelta(hours=1, minutes=59))
    with session_scope(world.factory) as session:
        assert autohold.expire_due(session, world.clock) == []
        assert autohold.held_tags(session, "vm") == {f"r{run_id}"}
    world.clock.advance(timedelta(minutes=1))
    with session_scope(world.factory) as session:
        assert autohold.expire_due(session, world.clock) == [hold_id]
        assert autohold.held_tags(session, "vm") == set()
    hold = _hold(world, hold_id)
    assert (hold.state, hold.released_by) == (HoldState.RELEASING, "timeout")
    assert _lease(world) == (None, None)


def test_every_hold_action_is_audited(world: World) -> None:
    cid, run_id = _claimed_gate_run(world)
    hold_id = _request(world, candidate_id=cid)
    _fail_and_catch(world, run_id, hold_id)
    with session_scope(world.factory) as session:
        autohold.release(session, hold_id, world.clock, "token:bob")
        autohold.torn_down(session, hold_id, world.clock)
        events = session.execute(select(models.AuditEvent.actor, models.AuditEvent.action)
                                 .where(models.AuditEvent.subject == f"hold {hold_id}")
                                 .order_by(models.AuditEvent.id)).all()
    assert [tuple(e) for e in events] == [
        ("token:alice", "hold.request"), ("runner", "hold.catch"),
        ("token:bob", "hold.release"), ("janitor", "hold.teardown")]


def test_the_run_plan_carries_the_known_good_it_upgrades_from(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    version = world.promote_heads()
    newer = world.commit("nova", "n2")
    run_id = world.reconcile().runs_created[-1]
    with session_scope(world.factory) as session:
        plan = runs.plan(session, run_id)
    assert plan.base_version == version
    base = {c.name: c.sha for c in plan.base}
    now = {c.name: c.sha for c in plan.components}
    assert now["nova"] == newer and base["nova"] != newer
    assert base["neutron"] == now["neutron"]


def test_the_first_run_plan_has_nothing_to_upgrade_from(world: World) -> None:
    _, run_id = _claimed_gate_run(world)
    with session_scope(world.factory) as session:
        plan = runs.plan(session, run_id)
    assert (plan.base_version, plan.base) == (None, ())


def test_a_run_waiting_for_a_held_testbed_is_not_sent_again_while_it_keeps_asking(
    world: World,
) -> None:
    cid, run_id = _claimed_gate_run(world)
    _fail_and_catch(world, run_id, _request(world, candidate_id=cid))
    world.commit("nova", "n2")
    waiting = world.reconcile().runs_created[-1]
    sent = world.dispatcher.runs.count(waiting)
    for _ in range(4):  # the task retries every few seconds while the testbed is held
        world.clock.advance(timedelta(seconds=30))
        with session_scope(world.factory) as session:
            assert runs.claim(session, waiting, "w2", world.clock,
                              timedelta(minutes=30)) is runs.Claim.BUSY
        assert world.reconcile().runs_redispatched == []
    world.clock.advance(timedelta(minutes=2))  # nobody asked for two minutes: a lost message
    assert world.reconcile().runs_redispatched == [waiting]
    assert world.dispatcher.runs.count(waiting) == sent + 1
