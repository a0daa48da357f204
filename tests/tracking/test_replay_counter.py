"""The ``replays`` counter of a delivery counts every replay, also when replays race.

Two requests replaying one delivery at once each add one: the count is one atomic ``UPDATE …
SET replays = replays + 1``. A read-modify-write lost one of them on PostgreSQL (both read the
same value). The sessions here have connections of their own (no shared outer transaction), so
the second request really waits for the first one's row lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain.clock import FakeClock
from certifier.settings import TrackingConfig
from certifier.tracking import deliveries

from .payloads import body_of, github_headers, github_push

SECRET = "github-secret-for-the-replay-counter"
ENV = {"CERTIFIER_GITHUB_WEBHOOK_SECRET": SECRET}
BODY = body_of(github_push("org/comp", "a" * 40))
HEADERS = {k.lower(): v for k, v in github_headers(SECRET, BODY, delivery="d-1").items()}


@pytest.fixture
def factory(empty_database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def replay(session: Session, clock: FakeClock) -> int:
    receipt = deliveries.receive(session, "github", HEADERS, BODY, None, clock, TrackingConfig(),
                                 ENV)
    assert receipt.status == 200 and receipt.body["status"] == "duplicate"
    return receipt.status


def test_two_replays_racing_are_both_counted(factory: sessionmaker[Session]) -> None:
    clock = FakeClock()
    with session_scope(factory) as session:
        assert deliveries.receive(session, "github", HEADERS, BODY, None, clock,
                                  TrackingConfig(), ENV).status == 202
    first = factory()
    replay(first, clock)  # not committed yet: the second replay runs meanwhile
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with session_scope(factory) as session:
                replay(session, clock)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=1.0)  # with the atomic UPDATE it waits here for our row lock
    first.commit()
    first.close()
    thread.join()
    assert failures == []
    with session_scope(factory) as session:
        assert session.scalar(select(models.Delivery.replays)) == 2
