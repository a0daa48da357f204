"""Fixtures for the API tests: an app on the shared test database, a TestClient, a fake clock.

The database comes from ``db_factory``, the shared ``session_factory`` of ``tests/conftest.py``:
every API test runs on SQLite and on PostgreSQL, on the schema the migrations build, inside a
transaction rolled back when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from tests.factories import World

# An admin token every app of these tests knows: registering a component needs one.
ADMIN_SECRET = "registrar-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}


@pytest.fixture
def db_factory(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return session_factory



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
        Settings(data_dir=tmp_path, api_tokens=f"registrar/admin:{ADMIN_SECRET}"),
        dispatcher=dispatcher, clock=clock, session_factory=db_factory
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def world(db_factory: sessionmaker[Session], clock: FakeClock) -> World:
    return World(db_factory, clock)
