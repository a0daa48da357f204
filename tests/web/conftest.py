"""Fixtures for the dashboard tests: an app on the shared rolled-back test database, a world.

``World`` (tests/factories.py) builds pipeline state through the real services; the app
shares its fake clock, so a test moves time and sees the pages move with it. The soak policy
of the app's settings is the world's, so the app's progress bars agree with the scheduler.
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
from tests.factories import World
from tests.web.scenes import world_settings


@pytest.fixture
def app(tmp_path: Path, session_factory: sessionmaker[Session], clock: FakeClock) -> FastAPI:
    return create_app(world_settings(tmp_path), dispatcher=RecordingDispatcher(), clock=clock,
                      session_factory=session_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FakeClock) -> World:
    return World(session_factory, clock)
