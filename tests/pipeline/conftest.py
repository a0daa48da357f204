"""Fixtures shared by the pipeline's race tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import migrate
from certifier.db.session import make_engine, make_session_factory


@pytest.fixture
def factory(empty_database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database of this test's own, each with its own connection (no
    rolled-back outer transaction), so that two sessions really race."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    yield make_session_factory(engine)
    engine.dispose()
