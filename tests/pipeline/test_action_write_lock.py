"""A person's action racing another writer of the same row, on SQLite and PostgreSQL: the
action waits for the other to commit, then reads what it wrote and acts on that.

PostgreSQL locks the row an action reads (``FOR UPDATE``); SQLite ignores that, so an action
takes SQLite's write lock before it reads (``toolbox.write_lock``). Without that, on SQLite, the
cancel below read "soaking" beside the uncommitted pass and then overwrote its rejection with a
cancellation, a second revocation was written over the first, and a hold's release read "armed"
beside a run catching it and wrote "released" over the catch (on PostgreSQL too, without the
row lock), leaving the testbed leased with nobody to tear it down. An action on a candidate or
a known-good also waits for a whole scheduler pass (``toolbox.pass_lock``): on PostgreSQL a
cancel slipped in between a pass's read and its write, which then overwrote it. Two pauses of a
component, two resumes, or two revocations of an API token each read the row before the other
committed and both wrote (two audit events for one change; the second token revocation's time
over the first). The first writer is held open in the test thread; the action runs in a second
thread with its own session and connection.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.judgement import JudgementPolicy
from certifier.domain.lifecycle import CandidateState
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import (
    actions,
    autohold,
    components,
    knowngood,
    runs,
    scheduler,
    tokens,
    toolbox,
)
from certifier.pipeline.autohold import HoldState
from certifier.pipeline.errors import Conflict
from tests.factories import World
from tests.pipeline.test_mark_bad_race import ACTOR, _in_thread, _promote, _soaking, _waits


def _cancel(factory: sessionmaker[Session], clock: FakeClock, cid: int) -> None:
    with session_scope(factory) as session:
        actions.cancel(session, clock, cid, ACTOR, "wrong branch")


def _state(factory: sessionmaker[Session], cid: int) -> str:
    with session_scope(factory) as session:
        return session.get_one(models.Candidate, cid).state


def test_a_cancel_waits_for_a_pass_that_rejects_the_candidate_then_refuses(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    cid = _soaking(factory, clock)
    with session_scope(factory) as passing:
        toolbox.pass_lock(passing)
        cand = passing.get_one(models.Candidate, cid)
        toolbox.move(passing, cand, CandidateState.REJECTED, clock)
        passing.flush()
        cancelling = _in_thread(lambda: _cancel(factory, clock, cid))
        assert _waits(cancelling)
    refused = cancelling.result(timeout=60)
    assert isinstance(refused, Conflict) and "is rejected" in str(refused), refused
    assert _state(factory, cid) == CandidateState.REJECTED


def test_a_cancel_waits_for_a_pass_that_has_only_read_the_candidate(
    factory: sessionmaker[Session],
) -> None:
    """On PostgreSQL the row lock alone let a cancel commit between a pass's read ("soaking")
    and its write: the pass then wrote its rejection over the cancellation (READ COMMITTED
    updates the newest row), and culprit finding started on a candidate a person had ended.
    An action takes the passes' lock, so it waits for the whole pass."""
    clock = FakeClock()
    cid = _soaking(factory, clock)
    with session_scope(factory) as passing:
        toolbox.pass_lock(passing)
        cand = passing.get_one(models.Candidate, cid)
        assert cand.state == CandidateState.SOAKING
        cancelling = _in_thread(lambda: _cancel(factory, clock, cid))
        assert _waits(cancelling)
        toolbox.move(passing, cand, CandidateState.REJECTED, clock)
    refused = cancelling.result(timeout=60)
    assert isinstance(refused, Conflict) and "is rejected" in str(refused), refused
    assert _state(factory, cid) == CandidateState.REJECTED


def _promoted(factory: sessionmaker[Session], clock: FakeClock) -> int:
    """The first candidate of nova, promoted: known-good version 1."""
    return _promote(factory, clock, _soaking(factory, clock))


def _revoke(factory: sessionmaker[Session], clock: FakeClock, version: int) -> None:
    with session_scope(factory) as session:
        actions.revoke(session, clock, version, ACTOR, "breaks bandwidth")


def test_a_revocation_waits_for_a_revocation_that_is_committing_then_refuses(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    version = _promoted(factory, clock)
    revoke = partial(_revoke, factory, clock, version)
    with session_scope(factory) as first:
        actions.revoke(first, clock, version, "token:piet", "eats data")
        first.flush()
        second = _in_thread(revoke)
        assert _waits(second)
    refused = second.result(timeout=60)
    assert isinstance(refused, Conflict) and "was revoked" in str(refused), refused
    with session_scope(factory) as session:
        events = [e for e in session.query(models.AuditEvent).all() if e.action == "revoke"]
        assert [e.actor for e in events] == ["token:piet"]


def test_a_revocation_waits_for_a_pass_that_has_read_the_known_good(
    factory: sessionmaker[Session],
) -> None:
    """A pass forms, re-bases and promotes against the known-good it read at its start; a
    revocation committing in the middle (on PostgreSQL it locks only the known-good's row, which
    a pass does not lock) would leave the pass acting on a known-good already revoked. It waits
    for the whole pass, and the pass after it sees the revocation."""
    clock = FakeClock()
    version = _promoted(factory, clock)
    revoke = partial(_revoke, factory, clock, version)
    with session_scope(factory) as passing:
        toolbox.pass_lock(passing)
        current = knowngood.current(passing)
        assert current is not None and current.version == version
        revoking = _in_thread(revoke)
        assert _waits(revoking)
    assert revoking.result(timeout=60) is None
    with session_scope(factory) as session:
        assert knowngood.current(session) is None


def _nova_with_a_commit(factory: sessionmaker[Session], clock: FakeClock) -> World:
    """Component nova with one new commit, and a gate testbed: the next pass forms a
    candidate."""
    world = World(factory, clock)
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    return world


def test_a_hold_released_while_a_run_catches_it_hands_the_testbed_back(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    world = _nova_with_a_commit(factory, clock)
    report = world.reconcile()
    run_id = report.runs_created[0]
    world.claim(run_id)
    with session_scope(factory) as session:
        hold_id = autohold.request(session, clock, duration=timedelta(hours=2), actor=ACTOR,
                                   candidate_id=report.formed[0]).id

    def release() -> None:
        with session_scope(factory) as session:
            autohold.release(session, hold_id, clock, "token:piet")

    failing = [SuiteResult("ping", checks=[Check("ping", "reach h1->h2", False, "100% loss")])]
    with session_scope(factory) as finishing:  # the runner: finish the run, catch the hold
        runs.finish(finishing, run_id, failing, clock, JudgementPolicy())
        caught = autohold.catch(finishing, hold_id, run_id, clock, testbed="gate1",
                                tag=f"r{run_id}", worker="vm:1", commands=[])
        assert caught is not None
        finishing.flush()
        releasing = _in_thread(release)
        assert _waits(releasing)
    assert releasing.result(timeout=60) is None
    with session_scope(factory) as session:
        hold = autohold.get(session, hold_id)
        assert (hold.state, hold.run_id) == (HoldState.RELEASING, run_id)
        assert session.get_one(models.Testbed, "gate1").leased_by_run_id is None


def test_a_component_removed_while_a_pass_forms_a_candidate_with_it_is_refused(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    world = _nova_with_a_commit(factory, clock)

    def remove() -> None:
        with session_scope(factory) as session:
            components.remove(session, clock, "nova", ACTOR, "moved to another cloud")

    with session_scope(factory) as passing:
        toolbox.pass_lock(passing)
        removing = _in_thread(remove)
        assert _waits(removing)
        scheduler.reconcile(passing, clock, world.policy, world.dispatcher)
    refused = removing.result(timeout=60)
    assert isinstance(refused, Conflict) and "candidate" in str(refused), refused


def _audited(factory: sessionmaker[Session], action: str) -> list[str]:
    """The actors of the audit events of ``action``, oldest first."""
    with session_scope(factory) as session:
        return [e.actor for e in session.query(models.AuditEvent).order_by(models.AuditEvent.id)
                if e.action == action]


@pytest.mark.parametrize(("action", "paused_before", "refusal"), [
    ("pause", False, "already paused"),
    ("resume", True, "is not paused"),
])
def test_a_pause_or_resume_waits_for_the_same_one_committing_then_refuses(
    factory: sessionmaker[Session], action: str, paused_before: bool, refusal: str,
) -> None:
    clock = FakeClock()
    World(factory, clock).component("nova")
    if paused_before:
        with session_scope(factory) as session:
            components.pause(session, clock, "nova", ACTOR, "neutron first")
    change = getattr(components, action)

    def second_change() -> None:
        with session_scope(factory) as session:
            change(session, clock, "nova", ACTOR, "the second person's reason")

    with session_scope(factory) as first:
        change(first, clock, "nova", "token:piet", "the first person's reason")
        first.flush()
        second = _in_thread(second_change)
        assert _waits(second)
    refused = second.result(timeout=60)
    assert isinstance(refused, Conflict) and refusal in str(refused), refused
    assert _audited(factory, action) == ["token:piet"]


def test_a_token_revocation_waits_for_one_that_is_committing_and_keeps_its_time(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    with session_scope(factory) as session:
        tokens.create(session, clock, "ci-bot", tokens.Scope.OPERATE)
    first_time = clock.now() + timedelta(minutes=5)
    later = FakeClock(first_time + timedelta(hours=1))

    def revoke() -> None:
        with session_scope(factory) as session:
            tokens.revoke(session, later, "ci-bot")

    clock.set(first_time)
    with session_scope(factory) as first:
        tokens.revoke(first, clock, "ci-bot")
        first.flush()
        second = _in_thread(revoke)
        assert _waits(second)
    assert second.result(timeout=60) is None
    with session_scope(factory) as session:
        (row,) = tokens.list_tokens(session)
        assert row.revoked_at == first_time
