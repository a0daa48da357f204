"""The shared database fixtures keep their promise: a test's commits never outlive the test."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope


def _count_components_seen_by_another_connection(engine: Engine) -> int:
    with engine.connect() as other:
        return other.scalar(select(func.count()).select_from(models.Component)) or 0


def test_a_committed_unit_of_work_stays_inside_the_tests_outer_transaction(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        session.add(models.Component(name="nova", source="git", url="https://git.example/nova",
                                     branch="main", created_at=datetime.now(UTC)))

    with session_scope(session_factory) as session:  # the next unit of work sees the commit
        assert session.scalar(select(models.Component.name)) == "nova"
    # ... and nobody else does: it was a SAVEPOINT released in a transaction rolled back later.
    assert _count_components_seen_by_another_connection(engine) == 0


def test_a_rolled_back_unit_of_work_leaves_the_earlier_commits_in_place(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        session.add(models.Testbed(name="tb1", driver="netns", role="gate"))
    with pytest.raises(RuntimeError), session_scope(session_factory) as session:
        session.add(models.Testbed(name="tb2", driver="netns", role="gate"))
        session.flush()
        raise RuntimeError("the request failed")
    with session_factory() as session:
        assert session.scalars(select(models.Testbed.name)).all() == ["tb1"]
