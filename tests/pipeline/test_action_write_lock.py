"""A person's action racing a scheduler pass that ends the same candidate, on SQLite and
PostgreSQL: the action waits for the pass to commit, then reads what it wrote and refuses.

PostgreSQL locks the candidate's row (``FOR UPDATE``); SQLite ignores that, so an action takes
SQLite's write lock before it reads (``actions._write_lock``). Without it the cancel below read
"soaking" beside the uncommitted pass and then overwrote its rejection with a cancellation (or,
with its read inside a transaction, failed with "database is locked"). The pass is held open in
the test thread; the action runs in a second thread with its own session and connection.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import actions, knowngood, scheduler, toolbox
from certifier.pipeline.errors import Conflict
from tests.pipeline.test_mark_bad_race import ACTOR, _in_thread, _soaking, _waits


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
        scheduler._lock(passing)
        cand = passing.get_one(models.Candidate, cid)
        toolbox.move(passing, cand, CandidateState.REJECTED, clock)
        passing.flush()
        cancelling = _in_thread(lambda: _cancel(factory, clock, cid))
        assert _waits(cancelling)
    refused = cancelling.result(timeout=60)
    assert isinstance(refused, Conflict) and "is rejected" in str(refused), refused
    assert _state(factory, cid) == CandidateState.REJECTED


def test_a_revocation_waits_for_a_revocation_that_is_committing_then_refuses(
    factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    cid = _soaking(factory, clock)
    with session_scope(factory) as session:
        cand = session.get_one(models.Candidate, cid)
        version = knowngood.promote(session, cand, clock, reason="soak passed").version
        toolbox.move(session, cand, CandidateState.PROMOTED, clock)

    def revoke() -> None:
        with session_scope(factory) as session:
            actions.revoke(session, clock, version, ACTOR, "breaks bandwidth")

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

