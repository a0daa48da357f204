"""A lock held too long answers 503 "busy", never an endless wait (PostgreSQL ``lock_timeout``).

A person's action takes the passes' lock first (``toolbox.pass_lock``). Without a lock timeout on
PostgreSQL, an action behind a stuck pass, or a forgotten transaction, waited for as long as that
lasted; SQLite's ``busy_timeout`` already bounded the same wait. Every engine Certifier makes now
sets ``lock_timeout`` (``session.LOCK_TIMEOUT_S``; a URL's own ``?options=`` wins; migrations
wait as long as it takes), and the API
answers the error with a 503 that says the database is busy, not down.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.api.errors import lock_wait_ended
from certifier.db import migrate
from certifier.db.session import LOCK_TIMEOUT_S, make_engine, make_session_factory, session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.pipeline.toolbox import pass_lock
from certifier.settings import Settings
from tests.conftest import fresh_postgres_database
from tests.factories import World

OPERATE = "operator-secret-0123456789"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database(f"certifier_lock_{os.getpid()}") as url:
        migrate.upgrade(url)
        yield url


def short(url: str) -> str:
    """``url`` with its own lock timeout of 0.3 s, so a test does not wait 30."""
    return make_url(url).update_query_dict({"options": "-c lock_timeout=300"}).render_as_string(
        hide_password=False)


def test_every_postgresql_connection_has_a_lock_timeout_unless_the_url_sets_one(
    postgres_url: str,
) -> None:
    for url, kwargs, want in ((postgres_url, {}, f"{LOCK_TIMEOUT_S}s"),
                              (short(postgres_url), {}, "300ms"),
                              (postgres_url, {"lock_timeout_s": None}, "0")):  # migrations
        engine = make_engine(url, **kwargs)
        try:
            for _ in range(2):  # a pooled connection again, and inside a transaction
                with engine.begin() as connection:
                    assert connection.execute(text("SHOW lock_timeout")).scalar() == want
        finally:
            engine.dispose()


def test_an_action_behind_a_held_pass_lock_answers_503_busy_and_changes_nothing(
    postgres_url: str, tmp_path: Path,
) -> None:
    clock = FakeClock()
    engine = make_engine(short(postgres_url))
    try:
        _answers_busy(make_session_factory(engine), clock, tmp_path)
    finally:
        engine.dispose()


def _answers_busy(factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path) -> None:
    world = World(factory, clock)
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    cid = world.reconcile().formed[0]
    app = create_app(Settings(data_dir=tmp_path, api_tokens=f"olga:{OPERATE}"),
                     dispatcher=RecordingDispatcher(), clock=clock, session_factory=factory)
    path = f"/api/v1/candidates/{cid}/cancel"
    headers = {"Authorization": f"Bearer {OPERATE}"}
    with TestClient(app) as client:
        with session_scope(factory) as stuck:  # a pass that does not end
            pass_lock(stuck)
            started = time.monotonic()
            answer = client.post(path, json={"reason": "wrong branch"}, headers=headers)
            waited = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert "busy" in answer.json()["detail"] and answer.headers["Retry-After"]
        assert waited < 10  # the lock timeout ended the wait, not the test's patience
        state = client.get(f"/api/v1/candidates/{cid}").json()["state"]
        assert state != "cancelled"
        again = client.post(path, json={"reason": "wrong branch"}, headers=headers)
        assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_sqlites_busy_database_is_a_lock_wait_too() -> None:
    busy = OperationalError("UPDATE testbeds", {}, sqlite3.OperationalError("database is locked"))
    down = OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database"))
    assert lock_wait_ended(busy) and not lock_wait_ended(down)
