"""``/api/v1/holds``: operate tokens for changes, open reads, idempotent release."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import autohold
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from tests.factories import World

SECRET = "s3cret-operator-token-0123"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    settings = Settings(data_dir=tmp_path, api_tokens=f"alice:{SECRET},short:abc")
    return create_app(settings, dispatcher=dispatcher, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _candidate(world: World) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    return world.reconcile().formed[0]


def test_arming_a_hold_needs_an_operate_token(client: TestClient, world: World) -> None:
    cid = _candidate(world)
    body = {"candidate_id": cid, "duration": "3h", "reason": "flaky ping"}
    assert client.post("/api/v1/holds", json=body).status_code == 401
    wrong = client.post("/api/v1/holds", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    short = client.post("/api/v1/holds", json=body, headers={"Authorization": "Bearer abc"})
    assert short.status_code == 401  # too short to be configured at all
    answer = client.post("/api/v1/holds", json=body, headers=AUTH)
    assert answer.status_code == 201, answer.text
    hold = answer.json()
    assert (hold["state"], hold["candidate_id"], hold["duration_s"]) == ("armed", cid, 3 * 3600)
    assert (hold["requested_by"], hold["reason"], hold["commands"]) == (
        "token:alice", "flaky ping", [])


def test_without_any_token_operator_actions_are_refused(
    tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock, world: World,
) -> None:
    cid = _candidate(world)
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=db_factory)
    with TestClient(app) as client:
        answer = client.post("/api/v1/holds", json={"candidate_id": cid}, headers=AUTH)
        assert answer.status_code == 401
        assert answer.json()["detail"] == "unknown API token"
        assert client.get("/api/v1/holds").status_code == 200  # reads stay open


def test_bad_requests_name_the_problem(client: TestClient, world: World) -> None:
    _candidate(world)
    bad = client.post("/api/v1/holds", json={"duration": "soon"}, headers=AUTH)
    assert bad.status_code == 422 and "duration" in bad.json()["detail"]
    assert client.post("/api/v1/holds", json={"component": "nope"},
                       headers=AUTH).status_code == 404
    assert client.post("/api/v1/holds", json={"duration": "30d"},
                       headers=AUTH).status_code == 422


def test_holds_are_listed_with_the_commands_to_enter_a_kept_testbed(
    client: TestClient, world: World, db_factory: sessionmaker[Session],
) -> None:
    cid = _candidate(world)
    with session_scope(db_factory) as session:
        hold = autohold.request(session, world.clock, duration=timedelta(hours=1),
                                actor="cli:root", candidate_id=cid)
        hold.state = autohold.HoldState.HOLDING
        hold.commands = ["ip netns exec cf-r1-h1 bash    # h1 198.18.0.11"]
        hold_id = hold.id
    items = client.get("/api/v1/holds").json()["items"]
    assert [(h["id"], h["state"]) for h in items] == [(hold_id, "holding")]
    assert items[0]["commands"] == ["ip netns exec cf-r1-h1 bash    # h1 198.18.0.11"]
    assert client.get("/api/v1/holds?state=armed").json()["items"] == []
    assert client.get(f"/api/v1/holds/{hold_id}").json()["id"] == hold_id
    assert client.get("/api/v1/holds/999").status_code == 404


def test_releasing_is_idempotent_and_asks_for_a_reconcile_pass(
    client: TestClient, world: World, dispatcher: RecordingDispatcher,
) -> None:
    cid = _candidate(world)
    hold_id = client.post("/api/v1/holds", json={"candidate_id": cid}, headers=AUTH).json()["id"]
    assert client.delete(f"/api/v1/holds/{hold_id}").status_code == 401
    first = client.delete(f"/api/v1/holds/{hold_id}", headers=AUTH)
    assert first.status_code == 200
    assert (first.json()["state"], first.json()["released_by"]) == ("released", "token:alice")
    assert dispatcher.reconciles >= 1
    again = client.delete(f"/api/v1/holds/{hold_id}", headers=AUTH)
    assert again.status_code == 200 and again.json()["state"] == "released"


def test_a_read_token_may_not_arm_a_hold(
    tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock, world: World,
) -> None:
    cid = _candidate(world)
    settings = Settings(data_dir=tmp_path, api_tokens=f"reader/read:{SECRET}")
    app = create_app(settings, dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=db_factory)
    with TestClient(app) as client:
        answer = client.post("/api/v1/holds", json={"candidate_id": cid}, headers=AUTH)
        assert answer.status_code == 403 and "operate" in answer.json()["detail"]
