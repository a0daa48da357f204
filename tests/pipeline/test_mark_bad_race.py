"""Marking bad racing a promotion, on SQLite and PostgreSQL: never both.

A promotion checks that the combination is not marked bad, and marking bad checks that the
combination is not a served known-good. Without one lock around both, each could pass its check
before the other commits, leaving a bad combination as the known-good. Marking bad takes the
promotion lock (``knowngood.lock``) before it looks for a known-good, and a promotion locks the
candidate's row and re-reads the mark under that lock. These tests hold one side's transaction
open in the test thread and run the other side in a second thread, with its own session and
connection on a real engine (no rolled-back outer transaction): the second side must wait, and
then refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pytest
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import actions, knowngood, toolbox
from certifier.pipeline.errors import Conflict
from tests.factories import World

ACTOR = "token:olga"
BLOCKED_FOR_S = 1.0  # how long the second side must keep waiting while the first holds on


def _soaking(factory: sessionmaker[Session], clock: FakeClock) -> int:
    """The first candidate of nova, soaking: promoting it needs no known-good to move."""
    world = World(factory, clock)
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    report = world.reconcile()
    world.finish(report.runs_created[0])
    assert report.formed[0] in world.reconcile().started_soak
    return report.formed[0]


def _outcome(action: Callable[[], object]) -> Exception | None:
    """What ``action`` raised (a refusal is the expected outcome of the second side)."""
    try:
        action()
    except Conflict as exc:
        return exc
    return None


def _in_thread(action: Callable[[], object]) -> Future[Exception | None]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(_outcome, action)
    pool.shutdown(wait=False)
    return future


def _waits(future: Future[Exception | None]) -> bool:
    wait([future], timeout=BLOCKED_FOR_S)
    return not future.done()


def _mark(factory: sessionmaker[Session], clock: FakeClock, cid: int) -> None:
    with session_scope(factory) as session:
        actions.mark_bad(session, clock, ACTOR, cid, "eats data")


def _promote(factory: sessionmaker[Session], clock: FakeClock, cid: int) -> int:
    """The scheduler's promotion: the compare-and-swap, then the candidate moves. Returns the
    new known-good's version."""
    with session_scope(factory) as session:
        cand = session.get_one(models.Candidate, cid)
        version = knowngood.promote(session, cand, clock, reason="soak passed").version
        toolbox.move(session, cand, CandidateState.PROMOTED, clock)
        return version


def _state(factory: sessionmaker[Session], cid: int) -> tuple[str, bool, int | None]:
    """(the candidate's state, whether its combination is marked bad, the current version)."""
    with session_scope(factory) as session:
        cand = session.get_one(models.Candidate, cid)
        current = knowngood.current(session)
        return (cand.state, cand.combination.bad_at is not None,
                current.version if current else None)


def test_a_mark_bad_waits_for_a_committing_promotion_then_asks_for_a_revocation(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    cid = _soaking(factory, clock)
    with session_scope(factory) as promoting:
        cand = promoting.get_one(models.Candidate, cid)
        knowngood.promote(promoting, cand, clock, reason="soak passed")
        toolbox.move(promoting, cand, CandidateState.PROMOTED, clock)
        promoting.flush()
        marking = _in_thread(lambda: _mark(factory, clock, cid))
        assert _waits(marking)
    refused = marking.result(timeout=60)
    assert isinstance(refused, Conflict) and "revoke it first" in str(refused)
    assert _state(factory, cid) == (CandidateState.PROMOTED, False, 1)


def test_a_promotion_waits_for_a_committing_mark_bad_then_refuses_the_combination(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    cid = _soaking(factory, clock)
    with session_scope(factory) as marking:
        actions.mark_bad(marking, clock, ACTOR, cid, "eats data")
        marking.flush()
        promoting = _in_thread(lambda: _promote(factory, clock, cid))
        assert _waits(promoting)
    refused = promoting.result(timeout=60)
    assert isinstance(refused, knowngood.MarkedBad) and "eats data" in str(refused)
    assert _state(factory, cid) == (CandidateState.CANCELLED, True, None)


def test_a_mark_bad_waits_for_the_promotion_lock_itself(
    factory: sessionmaker[Session],
) -> None:
    """A promotion holds the lock from its check to its commit, before it writes anything a
    mark-bad would trip over on PostgreSQL: only the lock makes the mark-bad wait."""
    clock = FakeClock()
    cid = _soaking(factory, clock)
    with session_scope(factory) as promoting:
        knowngood.lock(promoting)
        marking = _in_thread(lambda: _mark(factory, clock, cid))
        assert _waits(marking)
    assert marking.result(timeout=60) is None
    assert _state(factory, cid) == (CandidateState.CANCELLED, True, None)


def test_a_scheduler_pass_that_read_the_combination_earlier_still_sees_a_new_mark(
    session_factory: sessionmaker[Session],
) -> None:
    """A pass loads the heads' combination while forming; a mark committed after that must not
    hide behind the session's copy when the pass promotes."""
    clock = FakeClock()
    cid = _soaking(session_factory, clock)
    with session_scope(session_factory) as scheduler_pass:
        cand = scheduler_pass.get_one(models.Candidate, cid)
        combo = scheduler_pass.get_one(models.Combination, cand.combination_hash)
        assert combo.bad_at is None  # held in the session's identity map from here on
        _mark(session_factory, clock, cid)  # another transaction commits meanwhile
        with pytest.raises(knowngood.MarkedBad, match="eats data"):
            knowngood.promote(scheduler_pass, cand, clock, reason="soak passed")
        assert combo.bad_at is not None
