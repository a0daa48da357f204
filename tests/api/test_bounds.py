"""Every input is bounded where it enters the API (certifier/limits.py): durations, commit times,
ids, string lengths and JSON nesting are refused with a 4xx in the one error shape, never a 500.

Each test here is a finding of the attack run of issue #14 and failed (a 500, or a value that
stopped polling) before the bound existed.
"""

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
from certifier.limits import JSON_DEPTH_MAX, PROJECT_MAX, URL_MAX
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from tests.factories import World

TOKEN = "bounds-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUGE_IDS = [2**31, 2**63, 10**30]


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    settings = Settings(data_dir=tmp_path, api_tokens=f"adam/admin:{TOKEN}")
    return create_app(settings, dispatcher=dispatcher, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _component(**fields: Any) -> dict[str, Any]:
    return {"name": "nova", "url": "https://git.example/nova.git", **fields}


def _refused(answer: Any, status: int = 422) -> dict[str, Any]:
    """The answer is ``status`` in the one error shape; its body is returned."""
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str)
    return body


@pytest.mark.parametrize("interval", ["3000000d", "99999999999d", "P99999999999D", 1e20])
def test_a_poll_interval_beyond_ten_years_is_a_422_not_a_poller_that_overflows(
    client: TestClient, interval: object,
) -> None:
    body = _refused(client.post("/api/v1/components", json=_component(poll_interval=interval),
                                headers=AUTH))
    assert "too long" in body["detail"] and body["errors"][0]["loc"] == ["body", "poll_interval"]
    assert client.get("/api/v1/components").json()["items"] == []


@pytest.mark.parametrize("interval", [{}, [], [1], {"d": 7}])
def test_a_poll_interval_that_is_not_a_duration_is_a_422(client: TestClient,
                                                          interval: object) -> None:
    body = _refused(client.post("/api/v1/components", json=_component(poll_interval=interval),
                                headers=AUTH))
    assert "not a duration" in body["detail"]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z",
                                  "9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59Z",
                                  "1899-12-31T23:59:59Z", "2200-01-01T00:00:00Z"])
def test_a_commit_time_out_of_range_is_a_422(client: TestClient, world: World,
                                             when: str) -> None:
    world.component("nova")
    answer = client.post("/api/v1/components/nova/commits",
                         json={"sha": "a" * 40, "committed_at": when})
    assert "out of range" in _refused(answer)["detail"]
    assert client.get("/api/v1/components/nova/commits").json()["items"] == []


def test_a_url_longer_than_the_column_is_a_422(client: TestClient) -> None:
    long_url = "https://git.example/" + "a" * URL_MAX
    body = _refused(client.post("/api/v1/components", json=_component(url=long_url),
                                headers=AUTH))
    assert f"at most {URL_MAX}" in body["detail"]


def test_a_deep_gitlab_group_path_fits_the_columns(client: TestClient,
                                                   db_factory: sessionmaker[Session]) -> None:
    project = "/".join(f"group-{i:02d}-" + "x" * 80 for i in range(20))  # ~1,800 characters
    assert 1000 < len(project) <= PROJECT_MAX
    answer = client.post("/api/v1/components", json=_component(
        source="gitlab", url=f"https://gitlab.example/{project}.git", project=project),
        headers=AUTH)
    assert answer.status_code == 201, answer.text
    with session_scope(db_factory) as session:
        assert session.scalar(select(models.Component.project)) == project


def test_a_project_path_over_the_bound_is_a_422(client: TestClient) -> None:
    _refused(client.post("/api/v1/components", json=_component(
        source="gitlab", project="a" * (PROJECT_MAX + 1)), headers=AUTH))


def test_a_json_body_nested_too_deep_is_a_422_not_a_recursion_error(client: TestClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = client.post("/api/v1/components", content=deep,
                         headers={**AUTH, "Content-Type": "application/json"})
    assert f"deeper than {JSON_DEPTH_MAX}" in _refused(answer)["detail"]


def test_a_json_body_within_the_depth_is_read_as_usual(client: TestClient) -> None:
    nested: Any = "x"
    for _ in range(JSON_DEPTH_MAX - 2):
        nested = [nested]
    answer = client.post("/api/v1/components", json={**_component(), "colour": nested},
                         headers=AUTH)
    assert answer.status_code == 422 and answer.json()["errors"][0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("duration", ["99999999999d", "3651d", "P99999999999D"])
def test_a_hold_longer_than_ten_years_is_a_422(client: TestClient, duration: str) -> None:
    answer = client.post("/api/v1/holds", json={"duration": duration}, headers=AUTH)
    assert "too long" in _refused(answer)["detail"]


@pytest.mark.parametrize("candidate", HUGE_IDS)
def test_a_hold_for_an_impossible_candidate_id_is_a_422(client: TestClient,
                                                        candidate: int) -> None:
    _refused(client.post("/api/v1/holds", json={"candidate_id": candidate}, headers=AUTH))


def test_a_waiver_longer_than_ten_years_is_a_422(client: TestClient, world: World) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    candidate = world.reconcile().formed[0]
    answer = client.post(f"/api/v1/candidates/{candidate}/waive", headers=AUTH, json={
        "subject": "ping.h1 reaches h2", "reason": "lab", "expires_in": "99999999999d"})
    assert "too long" in _refused(answer)["detail"]


@pytest.mark.parametrize("big", HUGE_IDS)
@pytest.mark.parametrize("path", ["/api/v1/candidates/{}", "/api/v1/runs/{}",
                                  "/api/v1/manifests/{}", "/api/v1/holds/{}",
                                  "/api/v1/deliveries/{}", "/api/v1/manifests/1/diff/{}",
                                  "/api/v1/audit?before={}", "/api/v1/deliveries?before={}"])
def test_an_id_beyond_any_column_is_a_422_on_the_api(client: TestClient, path: str,
                                                     big: int) -> None:
    _refused(client.get(path.format(big)))


@pytest.mark.parametrize("big", HUGE_IDS)
def test_a_dashboard_page_for_an_impossible_id_is_a_404_page(client: TestClient,
                                                             big: int) -> None:
    answer = client.get(f"/candidates/{big}")
    assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]


@pytest.mark.parametrize("big", HUGE_IDS)
@pytest.mark.parametrize("query", ["/candidates?before={}", "/known-good?before={}",
                                   "/audit?before={}", "/deliveries?before={}",
                                   "/known-good/diff?from=1&to={}",
                                   "/known-good/diff?from={}&to=1"])
def test_a_dashboard_query_with_an_impossible_id_is_a_422(client: TestClient, query: str,
                                                          big: int) -> None:
    _refused(client.get(query.format(big)))
