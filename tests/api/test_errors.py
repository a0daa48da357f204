"""Errors are JSON, never tracebacks; oversized bodies are refused; failures roll back."""

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.errors import MAX_BODY_BYTES
from certifier.pipeline.dispatch import RecordingDispatcher
from tests.factories import World, sha

from .conftest import ADMIN


def test_an_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/api/v1/nothing-here")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found", "errors": []})


def test_a_wrong_method_is_a_json_405(client: TestClient) -> None:
    response = client.delete("/api/v1/components")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed", "errors": []}


def test_a_body_that_is_not_json_is_a_json_422(client: TestClient) -> None:
    response = client.post("/api/v1/components", content=b"{not json",
                           headers={"Content-Type": "application/json", **ADMIN})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json()["errors"]


def test_a_body_over_one_mebibyte_is_a_json_413(
    client: TestClient, world: World, dispatcher: RecordingDispatcher
) -> None:
    world.component("nova")
    body = b'{"sha": "' + b"a" * 40 + b'", "title": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = client.post("/api/v1/components/nova/commits", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body larger than")
    assert dispatcher.reconciles == 0


def test_a_streamed_body_over_one_mebibyte_is_a_json_413(
    client: TestClient, world: World
) -> None:
    world.component("nova")

    def chunks() -> Iterator[bytes]:
        yield b'{"sha": "' + b"a" * 40 + b'", "title": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/api/v1/components/nova/commits", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "detail" in response.json()
    assert client.get("/api/v1/components/nova/commits").json() == {"items": []}


def test_a_body_of_exactly_one_mebibyte_is_accepted(client: TestClient, world: World) -> None:
    world.component("nova")
    report = b'{"sha": "' + b"a" * 40 + b'", "title": "' + b"x" * 9000 + b'"}'
    body = report + b" " * (MAX_BODY_BYTES - len(report))  # JSON allows trailing whitespace
    response = client.post("/api/v1/components/nova/commits", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 201
    assert len(response.json()["commit"]["title"]) == 500  # stored truncated


def test_an_unexpected_error_is_a_bare_json_500(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr("certifier.pipeline.queries.list_testbeds", explode)
    response = TestClient(app, raise_server_exceptions=False).get("/api/v1/testbeds")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error", "errors": []}
    assert "secret" not in response.text and "Traceback" not in response.text


def test_a_request_that_fails_after_writing_rolls_everything_back(
    app: FastAPI, world: World, dispatcher: RecordingDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.component("nova")

    def explode(*_args: object) -> None:
        raise RuntimeError("dispatcher seam broke")

    monkeypatch.setattr("certifier.pipeline.components.reconcile_after_commit", explode)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/api/v1/components/nova/commits", json={"sha": sha("n1")})
    assert response.status_code == 500
    assert client.get("/api/v1/components/nova/commits").json() == {"items": []}
    assert dispatcher.reconciles == 0


def test_a_service_invalid_error_is_a_422(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certifier.pipeline.errors import Invalid

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise Invalid("that commit is not on the tracked branch")

    world.component("nova")
    monkeypatch.setattr("certifier.pipeline.components.report_commit", refuse)
    response = client.post("/api/v1/components/nova/commits", json={"sha": sha("n1")})
    assert response.status_code == 422
    assert response.json() == {"detail": "that commit is not on the tracked branch", "errors": []}


def test_a_failed_commit_is_reported_to_the_client_not_hidden_behind_a_201(
    client: TestClient, db_factory: sessionmaker[Session], dispatcher: RecordingDispatcher,
    world: World,
) -> None:
    world.component("nova")

    def lose_the_race(_session: Session) -> None:
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    event.listen(db_factory, "before_commit", lose_the_race)
    try:
        response = client.post("/api/v1/components/nova/commits", json={"sha": sha("n1")})
    finally:
        event.remove(db_factory, "before_commit", lose_the_race)
    assert response.status_code == 409
    assert response.json() == {"detail": "the request conflicts with a concurrent change; retry it",
                              "errors": []}
    assert dispatcher.reconciles == 0
    assert client.get("/api/v1/components/nova/commits").json() == {"items": []}


def test_a_nul_byte_in_the_query_is_a_422_not_a_database_error(client: TestClient) -> None:
    answer = client.get("/api/v1/audit?action=%00")
    assert answer.status_code == 422
    assert "NUL" in answer.json()["detail"]


def test_an_id_beyond_the_database_integer_is_a_422(client: TestClient) -> None:
    assert client.get(f"/api/v1/runs/{2**63}").status_code == 422
    assert client.get(f"/api/v1/candidates/{2**31}").status_code == 422
    assert client.get(f"/api/v1/candidates/{2**31 - 1}").status_code == 404
