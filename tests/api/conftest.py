"""Fixtures for the API tests: an app on a fresh database, a TestClient, a fake clock.

The database comes from ``db_factory``. Until the shared DB fixtures exist it is a local SQLite
file built with ``create_all``; to run on the shared fixtures (SQLite and PostgreSQL, schema from
migrations, each test rolled back), change the one marked line to request ``session_factory``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db.models import Base
from certifier.db.session import make_engine, make_session_factory
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings

from .factories import World


@pytest.fixture
def local_session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'api.sqlite'}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def db_factory(local_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return local_session_factory  # the one line: request and return `session_factory` instead


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def app(
    tmp_path: Path,
    db_factory: sessionmaker[Session],
    clock: FakeClock,
    dispatcher: RecordingDispatcher,
) -> FastAPI:
    return create_app(
        Settings(data_dir=tmp_path), dispatcher=dispatcher, clock=clock, session_factory=db_factory
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def world(db_factory: sessionmaker[Session], clock: FakeClock) -> World:
    return World(db_factory, clock)
