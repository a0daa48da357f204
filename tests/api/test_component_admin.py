"""Registering, removing, pausing and resuming components: operator actions, audited, and
registration held to the config's source URL policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings, parse_config_text
from certifier.tracking import polling
from tests.factories import World

ADMIN_SECRET = "admin-secret-0123456789abc"
OPERATE_SECRET = "operator-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
OPERATE = {"Authorization": f"Bearer {OPERATE_SECRET}"}
NOVA = {"name": "nova", "source": "gitlab", "url": "https://gitlab.example/grp/nova.git"}
REASON = {"reason": "upstream frozen for the release"}


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    config = parse_config_text(f"sources: {{local_paths: ['{tmp_path / 'upstream'}']}}\n")
    settings = Settings(data_dir=tmp_path, config=config,
                        api_tokens=f"adam/admin:{ADMIN_SECRET},olga:{OPERATE_SECRET}")
    return create_app(settings, dispatcher=dispatcher, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def audit(factory: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with session_scope(factory) as session:
        return [(e.actor, e.action, e.subject) for e in session.scalars(
            select(models.AuditEvent).order_by(models.AuditEvent.id))]


def names(client: TestClient) -> list[str]:
    return [c["name"] for c in client.get("/api/v1/components").json()["items"]]


# Registering -------------------------------------------------------------------------------


def test_registering_without_a_token_is_a_401_and_registers_nothing(client: TestClient) -> None:
    answer = client.post("/api/v1/components", json=NOVA)
    assert answer.status_code == 401
    assert names(client) == []


def test_registering_with_an_operate_token_is_a_403(client: TestClient) -> None:
    answer = client.post("/api/v1/components", json=NOVA, headers=OPERATE)
    assert answer.status_code == 403
    assert "needs admin" in answer.json()["detail"]
    assert names(client) == []


def test_registering_with_an_admin_token_is_audited_under_its_name(
    client: TestClient, db_factory: sessionmaker[Session],
) -> None:
    assert client.post("/api/v1/components", json=NOVA, headers=ADMIN).status_code == 201
    assert names(client) == ["nova"]
    assert audit(db_factory) == [("token:adam", "register", "component nova")]


@pytest.mark.parametrize("url", ["/etc", "/nonexistent/secret.git", "file:///etc",
                                 "file:///nonexistent/x.git"])
def test_a_local_path_outside_the_allowed_folders_is_refused_the_same_whether_it_exists(
    client: TestClient, url: str,
) -> None:
    answer = client.post("/api/v1/components", json={**NOVA, "source": "git", "url": url},
                         headers=ADMIN)
    assert answer.status_code == 422
    assert answer.json() == {"detail": "url: the path is not under a folder the config's "
                                       "sources.local_paths allows", "errors": []}
    assert names(client) == []


def test_a_local_path_under_an_allowed_folder_is_registered(
    client: TestClient, tmp_path: Path,
) -> None:
    body = {**NOVA, "source": "git", "url": str(tmp_path / "upstream" / "nova")}
    assert client.post("/api/v1/components", json=body, headers=ADMIN).status_code == 201


@pytest.mark.parametrize(("field", "value"), [
    ("url", "https://127.0.0.1/grp/nova.git"),
    ("url", "https://localhost/grp/nova.git"),
    ("url", "https://2130706433/grp/nova.git"),
    ("url", "git@10.1.2.3:grp/nova.git"),
    ("url", "http://gitlab.example/grp/nova.git"),  # clear text: not in the default schemes
    ("api_url", "https://169.254.169.254/latest"),
    ("api_url", "https://[::1]:8080"),
])
def test_an_internal_or_clear_text_url_is_refused_by_the_default_policy(
    client: TestClient, field: str, value: str,
) -> None:
    answer = client.post("/api/v1/components", json={**NOVA, field: value}, headers=ADMIN)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(f"{field}: ")
    assert names(client) == []


# Removing ----------------------------------------------------------------------------------


def test_removing_an_unused_component_unlists_it_stops_polling_and_is_audited(
    client: TestClient, world: World, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    client.post("/api/v1/components", json=NOVA, headers=ADMIN)
    answer = client.delete("/api/v1/components/nova", params={"reason": "registered by mistake"},
                           headers=ADMIN)
    assert answer.status_code == 200
    assert names(client) == []
    assert client.get("/api/v1/components/nova").status_code == 404
    with session_scope(db_factory) as session:
        assert polling.due(session, clock) == []
    assert audit(db_factory)[-1] == ("token:adam", "remove", "component nova")


def test_removing_needs_an_admin_token(client: TestClient, world: World) -> None:
    world.component("nova")
    answer = client.delete("/api/v1/components/nova", params=REASON, headers=OPERATE)
    assert answer.status_code == 403
    assert names(client) == ["nova"]


def test_a_removed_name_cannot_be_registered_again_over_the_api(
    client: TestClient, world: World,
) -> None:
    world.component("nova")
    client.delete("/api/v1/components/nova", params=REASON, headers=ADMIN)
    answer = client.post("/api/v1/components", json=NOVA, headers=ADMIN)
    assert answer.status_code == 409
    assert "was removed" in answer.json()["detail"]


def test_removing_a_component_of_the_current_known_good_is_a_409(
    client: TestClient, world: World,
) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    version = world.promote_heads()
    answer = client.delete("/api/v1/components/nova", params=REASON, headers=ADMIN)
    assert answer.status_code == 409
    assert f"known-good #{version}" in answer.json()["detail"]
    assert names(client) == ["nova"]


def test_removing_a_component_of_an_open_candidate_is_a_409_naming_it(
    client: TestClient, world: World,
) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    [cid] = world.reconcile().formed
    answer = client.delete("/api/v1/components/nova", params=REASON, headers=ADMIN)
    assert answer.status_code == 409
    assert f"candidate {cid} (gating)" in answer.json()["detail"]


# Pausing and resuming ----------------------------------------------------------------------


def test_pausing_needs_an_operate_token_and_keeps_the_component_out_of_new_candidates(
    client: TestClient, world: World, db_factory: sessionmaker[Session],
) -> None:
    world.component("nova")
    world.testbed("gate1")
    assert client.post("/api/v1/components/nova/pause", json=REASON).status_code == 401
    answer = client.post("/api/v1/components/nova/pause", json=REASON, headers=OPERATE)
    assert (answer.status_code, answer.json()["paused"]) == (200, True)
    world.commit("nova", "n1")
    assert world.reconcile().formed == []
    assert audit(db_factory)[-1] == ("token:olga", "pause", "component nova")


def test_pausing_a_paused_component_is_a_409(client: TestClient, world: World) -> None:
    world.component("nova")
    client.post("/api/v1/components/nova/pause", json=REASON, headers=OPERATE)
    answer = client.post("/api/v1/components/nova/pause", json=REASON, headers=OPERATE)
    assert answer.status_code == 409


def test_resuming_lets_the_component_form_candidates_again_and_is_audited(
    client: TestClient, world: World, db_factory: sessionmaker[Session],
) -> None:
    world.component("nova")
    world.testbed("gate1")
    client.post("/api/v1/components/nova/pause", json=REASON, headers=OPERATE)
    world.commit("nova", "n1")
    answer = client.post("/api/v1/components/nova/resume", json=REASON, headers=OPERATE)
    assert (answer.status_code, answer.json()["paused"]) == (200, False)
    assert len(world.reconcile().formed) == 1
    assert audit(db_factory)[-1][1:] == ("resume", "component nova")


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("post", "/api/v1/components/nova/resume", {"json": REASON}),
    ("post", "/api/v1/components/nova/pause", {"json": {"reason": " "}}),
    ("delete", "/api/v1/components/nova", {}),
])
def test_resuming_an_unpaused_component_or_giving_no_reason_is_refused(
    client: TestClient, world: World, method: str, path: str, kwargs: dict[str, Any],
) -> None:
    world.component("nova")
    answer = getattr(client, method)(path, headers=ADMIN, **kwargs)
    assert answer.status_code in (409, 422)
    assert names(client) == ["nova"]
