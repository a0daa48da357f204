"""Components and commit reports."""

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from certifier.db import models
from certifier.domain.clock import FakeClock
from certifier.pipeline import components
from certifier.pipeline.dispatch import RecordingDispatcher
from tests.factories import World, sha

from .conftest import ADMIN

NOVA = {"name": "nova", "source": "gitlab", "url": "https://git.example/nova.git",
        "branch": "stable/2026"}


def test_creating_a_component_answers_201_with_it(client: TestClient) -> None:
    response = client.post("/api/v1/components", json=NOVA, headers=ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in NOVA} == NOVA
    assert body["paused"] is False
    assert body["head_sha"] is None
    assert body["run_in"] == "controller"


def test_creating_a_component_twice_is_a_409(client: TestClient) -> None:
    assert client.post("/api/v1/components", json=NOVA, headers=ADMIN).status_code == 201
    response = client.post("/api/v1/components", json=NOVA, headers=ADMIN)
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Nova", "url": "https://git.example/nova.git"},  # upper case
        {"name": "nova"},  # no url
        {"name": "nova", "url": "--upload-pack=evil"},  # looks like an option
        {"name": "nova", "url": "u", "branch": "../etc"},
        {"name": "nova", "url": "u", "source": "svn"},
        {"name": "nova", "url": "u", "colour": "blue"},  # unknown field
    ],
)
def test_an_invalid_component_is_a_422_listing_the_invalid_fields(
    client: TestClient, body: dict[str, str]
) -> None:
    response = client.post("/api/v1/components", json=body, headers=ADMIN)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors and {"loc", "msg", "type"} == set(errors[0])


def test_listing_components_shows_each_head_commit(client: TestClient, world: World) -> None:
    world.component("nova")
    world.component("neutron")
    world.commit("nova", "n1")
    head = world.commit("nova", "n2")
    items = client.get("/api/v1/components").json()["items"]
    assert [(c["name"], c["head_sha"]) for c in items] == [("neutron", None), ("nova", head)]


def test_a_component_by_name(client: TestClient, world: World) -> None:
    world.component("nova")
    head = world.commit("nova", "n1")
    body = client.get("/api/v1/components/nova").json()
    assert (body["name"], body["head_sha"]) == ("nova", head)


def test_an_unknown_component_is_a_404(client: TestClient) -> None:
    for path in ("/api/v1/components/ghost", "/api/v1/components/ghost/commits"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "no component named 'ghost'", "errors": []}


def test_commits_are_listed_newest_first_up_to_the_limit(client: TestClient, world: World) -> None:
    world.component("nova")
    shas = [world.commit("nova", f"n{i}") for i in range(5)]
    items = client.get("/api/v1/components/nova/commits", params={"limit": 3}).json()["items"]
    assert [c["sha"] for c in items] == shas[::-1][:3]
    assert items[0]["seen_via"] == "poll"


@pytest.mark.parametrize("limit", [0, 501, "many"])
def test_a_commit_limit_outside_1_to_500_is_a_422(
    client: TestClient, world: World, limit: object
) -> None:
    world.component("nova")
    response = client.get("/api/v1/components/nova/commits", params={"limit": limit})
    assert response.status_code == 422


def test_reporting_a_new_commit_answers_201_and_asks_for_a_reconcile(
    client: TestClient, world: World, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    world.component("nova")
    digest = sha("n1")
    response = client.post("/api/v1/components/nova/commits", json={
        "sha": digest.upper(), "title": "Fix the scheduler", "author": "Ada",
        "committed_at": "2025-12-31T23:00:00+01:00"})
    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True
    assert body["commit"]["sha"] == digest
    assert body["commit"]["seen_via"] == "api"
    assert body["commit"]["committed_at"].startswith("2025-12-31T22:00:00")
    assert dispatcher.reconciles == 1
    commits = client.get("/api/v1/components/nova/commits").json()["items"]
    assert [c["sha"] for c in commits] == [digest]


def test_reporting_a_known_commit_again_is_200_created_false_without_a_second_reconcile(
    client: TestClient, world: World, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    world.component("nova")
    report = {"sha": sha("n1"), "title": "first"}
    assert client.post("/api/v1/components/nova/commits", json=report).status_code == 201
    assert dispatcher.reconciles == 1
    clock.advance(timedelta(minutes=5))
    again = client.post("/api/v1/components/nova/commits", json={**report, "title": "changed"})
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["commit"]["title"] == "first"
    assert dispatcher.reconciles == 1
    assert len(client.get("/api/v1/components/nova/commits").json()["items"]) == 1


def test_reported_commits_let_the_scheduler_form_exactly_one_candidate(
    client: TestClient, world: World
) -> None:
    world.component("nova")
    report = {"sha": sha("n1")}
    client.post("/api/v1/components/nova/commits", json=report)
    world.reconcile()
    client.post("/api/v1/components/nova/commits", json=report)
    world.reconcile()
    assert len(client.get("/api/v1/candidates").json()["items"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"sha": "abc123"},  # abbreviated
        {"sha": "g" * 40},
        {"sha": "a" * 41},
        {"sha": "a" * 40 + "\n"},
        {"sha": "a" * 40, "committed_at": "2026-01-01T00:00:00"},  # no time zone
        {"sha": "a" * 40, "extra": 1},
        {},
    ],
)
def test_a_bad_commit_report_is_a_422(
    client: TestClient, world: World, dispatcher: RecordingDispatcher, body: dict[str, object]
) -> None:
    world.component("nova")
    response = client.post("/api/v1/components/nova/commits", json=body)
    assert response.status_code == 422
    assert response.json()["errors"]
    assert dispatcher.reconciles == 0


def test_a_64_digit_sha_is_accepted(client: TestClient, world: World) -> None:
    world.component("nova")
    response = client.post("/api/v1/components/nova/commits", json={"sha": "ab" * 32})
    assert response.status_code == 201


def test_reporting_for_an_unknown_component_is_a_404(
    client: TestClient, dispatcher: RecordingDispatcher
) -> None:
    response = client.post("/api/v1/components/ghost/commits", json={"sha": sha("x")})
    assert response.status_code == 404
    assert response.json() == {"detail": "no component named 'ghost'", "errors": []}
    assert dispatcher.reconciles == 0


def test_losing_a_race_to_report_the_same_commit_answers_like_a_duplicate(
    client: TestClient, world: World, dispatcher: RecordingDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.component("nova")
    digest = world.commit("nova", "n1")  # the concurrent winner's row
    real = components.report_commit
    calls: list[str] = []

    def racing(*args: Any, **kwargs: Any) -> tuple[models.Commit, bool]:
        calls.append(args[2])
        if len(calls) == 1:  # our INSERT hits the unique constraint the winner just filled
            raise IntegrityError("INSERT INTO commits ...", {}, Exception("duplicate key"))
        return real(*args, **kwargs)

    monkeypatch.setattr("certifier.pipeline.components.report_commit", racing)
    response = client.post("/api/v1/components/nova/commits", json={"sha": digest})
    assert (response.status_code, response.json()["created"]) == (200, False)
    assert calls == [digest, digest]
    assert dispatcher.reconciles == 0
