"""One error shape for every 4xx, documented in OpenAPI; complete ``Allow`` on a 405; no
redirect built from the client's ``Host`` header (issue #14, item 6)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import World


def _shape(answer: Any) -> tuple[int, set[str]]:
    return answer.status_code, set(answer.json())


def test_a_validation_error_and_a_service_error_share_one_shape(client: TestClient,
                                                               world: World) -> None:
    world.component("nova")
    validation = client.post("/api/v1/components/nova/commits", json={"sha": "not-a-sha"})
    service = client.get("/api/v1/components/ghost")
    assert _shape(validation) == (422, {"detail", "errors"})
    assert _shape(service) == (404, {"detail", "errors"})
    assert isinstance(validation.json()["detail"], str)
    assert validation.json()["errors"][0]["loc"] == ["body", "sha"]


def test_a_validation_error_never_echoes_the_input(client: TestClient) -> None:
    answer = client.get("/api/v1/candidates", params={"limit": "secret-looking-input"})
    errors = answer.json()["errors"]
    assert answer.status_code == 422 and errors
    assert all(set(error) == {"loc", "msg", "type"} for error in errors)
    assert "secret-looking-input" not in answer.text


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/api/v1/components", "GET, POST"),
    ("PUT", "/api/v1/holds", "GET, POST"),
    ("PUT", "/api/v1/holds/1", "GET, DELETE"),
    ("GET", "/api/v1/candidates/1/mark-bad", "POST, DELETE"),
])
def test_a_405_lists_every_method_of_the_path(client: TestClient, method: str, path: str,
                                              allowed: str) -> None:
    answer = client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert set(answer.json()) == {"detail", "errors"}


def test_a_trailing_slash_is_not_redirected_to_the_host_the_client_named(
    client: TestClient,
) -> None:
    answer = client.get("/api/v1/components/", headers={"Host": "evil.example"},
                        follow_redirects=False)
    assert answer.status_code == 404
    assert "location" not in answer.headers


def test_openapi_documents_every_4xx_with_the_one_error_schema(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status in ("400", "413", "422"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorOut"}, (
                    method, path, status)
