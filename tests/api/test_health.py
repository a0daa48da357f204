"""Probes and the published OpenAPI document."""

from pathlib import Path

from fastapi.testclient import TestClient

from certifier.api.app import create_app
from certifier.db.session import make_engine, make_session_factory
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings


def test_healthz_says_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_ok_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_503_json_when_the_database_does_not_answer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite'}")
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(),
                     session_factory=make_session_factory(engine))
    response = TestClient(app).get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "missing" not in response.text  # no driver message or path leaks out
    engine.dispose()


def test_openapi_is_published_with_the_title_and_v1_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Certifier"
    assert {"/api/v1/manifest", "/api/v1/components/{name}/commits", "/api/v1/runs/{run_id}",
            "/api/v1/candidates/{candidate_id}", "/api/v1/testbeds"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_an_app_without_a_session_factory_opens_the_settings_database(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher())
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
