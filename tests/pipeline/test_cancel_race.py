"""A person cancels a candidate while the scheduler is promoting it: the cancel stands.

The scheduler reads its candidates at the start of a pass and promotes one at its end. A cancel
committed in between must not be overwritten by the promotion: ``knowngood.promote`` locks the
candidate's row, reads its state again, and refuses a candidate that has ended; the scheduler
then leaves it as the person left it. On SQLite and PostgreSQL, each side with its own session
and connection on a real engine.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import actions, knowngood, notify, scheduler
from certifier.settings import NotificationsConfig
from tests.factories import SOAK, World
from tests.pipeline.test_mark_bad_race import _soaking


def _due_for_promotion(factory: sessionmaker[Session], clock: FakeClock) -> int:
    cand_id = _soaking(factory, clock)
    with session_scope(factory) as session:  # its first soak run passes; the soak ends
        run = session.scalars(select(models.Run).where(models.Run.candidate_id == cand_id,
                                                       models.Run.kind == "soak")).one()
        run_id = run.id
    world = World(factory, clock)
    world.claim(run_id)
    world.finish(run_id)
    clock.advance(SOAK.duration + timedelta(minutes=1))
    return cand_id


def test_a_cancel_committed_after_the_scheduler_read_the_candidate_stands(
        factory: sessionmaker[Session]) -> None:
    clock = FakeClock()
    cand_id = _due_for_promotion(factory, clock)
    with session_scope(factory) as scheduler_session:
        stale = scheduler_session.get_one(models.Candidate, cand_id)
        assert stale.state == "soaking"
    # The scheduler's copy says "soaking"; meanwhile a person cancels it, in another session.
    with session_scope(factory) as person:
        actions.cancel(person, clock, cand_id, "token:olga", "wrong branch")
    with session_scope(factory) as scheduler_session:
        scheduler_session.add(stale)
        with pytest.raises(knowngood.CandidateEnded, match="is cancelled"):
            knowngood.promote(scheduler_session, stale, clock, reason="soak passed")
    with session_scope(factory) as scheduler_session:
        scheduler_session.add(stale)
        report = scheduler.ReconcileReport()
        scheduler._promote(scheduler_session, stale, clock, report,
                           notify.Notifier(NotificationsConfig()))
        assert report.promoted == []
    with session_scope(factory) as session:
        cand = session.get_one(models.Candidate, cand_id)
        assert cand.state == "cancelled"
        assert cand.excuses[0].kind == "cancelled"
        assert session.scalar(select(func.count()).select_from(models.KnownGood)) == 0
