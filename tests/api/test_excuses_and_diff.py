"""Excuses now and as of a past time, the diff between two known-goods, and the CSV manifest."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.api.routers.manifests import csv_rows
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import CertifierConfig, Settings, SoakConfig
from tests.factories import SOAK, World

from .test_manifest import two_known_goods


@pytest.fixture
def client(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
           dispatcher: RecordingDispatcher) -> Iterator[TestClient]:
    """The app with the factories' soak policy, so that "as of" is worked out as it was run."""
    config = CertifierConfig(soak=SoakConfig(duration=SOAK.duration, interval=SOAK.interval,
                                             min_runs=SOAK.min_runs,
                                             max_infra_retries=SOAK.max_infra_retries))
    app = create_app(Settings(data_dir=tmp_path, config=config), dispatcher=dispatcher,
                     clock=clock, session_factory=db_factory)
    with TestClient(app) as test_client:
        yield test_client


def _iso(world: World, delta: timedelta = timedelta(0)) -> str:
    return (world.clock.now() + delta).isoformat()


def test_excuses_now_are_what_the_scheduler_stored(client: TestClient, world: World) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    cand = world.reconcile().formed[0]
    body = client.get(f"/api/v1/candidates/{cand}/excuses").json()
    assert body["candidate"] == cand and body["state"] == "gating" and body["as_of"] is None
    assert [e["kind"] for e in body["excuses"]] == ["gating"]
    assert body["waived"] == []


def test_excuses_as_of_a_past_time_are_worked_out_from_the_runs_then(
        client: TestClient, world: World) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    report = world.reconcile()
    cand, gate = report.formed[0], report.runs_created[0]
    created = _iso(world)
    world.clock.advance(timedelta(seconds=30))
    in_gate = _iso(world)
    world.clock.advance(timedelta(seconds=30))
    world.finish(gate)
    report = world.reconcile()  # the gate passed: soaking, first soak run
    world.clock.advance(timedelta(minutes=20))
    soaking = _iso(world)
    world.clock.advance(timedelta(minutes=1))
    world.finish(report.runs_created[-1])
    world.clock.advance(SOAK.duration)
    assert cand in world.reconcile().promoted

    then = client.get(f"/api/v1/candidates/{cand}/excuses", params={"at": in_gate}).json()
    assert then["state"] == "gating"
    assert [e["message"] for e in then["excuses"]] == ["gating: gate run in progress"]

    then = client.get(f"/api/v1/candidates/{cand}/excuses", params={"at": soaking}).json()
    assert then["state"] == "soaking"
    kinds = {e["kind"]: e for e in then["excuses"] if e["data"]}
    assert kinds["soaking"]["data"]["elapsed_s"] == pytest.approx(20 * 60, abs=5)
    assert "soak run in progress" in [e["message"] for e in then["excuses"]]

    now = client.get(f"/api/v1/candidates/{cand}/excuses").json()
    assert (now["state"], now["excuses"]) == ("promoted", [])
    assert client.get(f"/api/v1/candidates/{cand}/excuses",
                      params={"at": created}).json()["state"] == "gating"


def test_excuses_before_the_candidate_existed_or_of_no_candidate_are_404s(
        client: TestClient, world: World) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    cand = world.reconcile().formed[0]
    early = client.get(f"/api/v1/candidates/{cand}/excuses",
                       params={"at": _iso(world, -timedelta(days=1))})
    assert early.status_code == 404 and "did not exist yet" in early.json()["detail"]
    assert client.get("/api/v1/candidates/999999/excuses").status_code == 404


@pytest.mark.parametrize("at", ["yesterday", "2026-13-01T00:00:00", "9999-12-31T23:59:59-23:59"])
def test_a_bad_as_of_time_is_a_422(client: TestClient, world: World, at: str) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    cand = world.reconcile().formed[0]
    response = client.get(f"/api/v1/candidates/{cand}/excuses", params={"at": at})
    assert response.status_code == 422


def test_the_diff_between_two_known_goods_lists_the_changed_components_and_commits(
        client: TestClient, world: World) -> None:
    heads = two_known_goods(world)
    body = client.get("/api/v1/manifests/1/diff/2").json()
    assert (body["from_version"], body["to_version"]) == (1, 2)
    (change,) = body["changed"]
    assert change["name"] == "nova" and change["to_sha"] == heads["nova"]
    assert change["from_sha"] != heads["nova"]
    assert [c["sha"] for c in change["commits"]] == [heads["nova"]]
    assert change["commits"][0]["title"] == "nova: second"
    back = client.get("/api/v1/manifests/2/diff/1").json()
    assert back["changed"][0]["to_sha"] == change["from_sha"]
    assert client.get("/api/v1/manifests/1/diff/1").json()["changed"] == []


def test_a_diff_with_an_unknown_version_is_a_404(client: TestClient, world: World) -> None:
    two_known_goods(world)
    assert client.get("/api/v1/manifests/1/diff/7").status_code == 404
    assert client.get("/api/v1/manifests/0/diff/1").status_code == 422


def test_the_manifest_as_csv_has_one_row_per_component(client: TestClient, world: World) -> None:
    heads = two_known_goods(world)
    response = client.get("/api/v1/manifest", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["component"]: r["sha"] for r in rows} == heads
    assert {r["version"] for r in rows} == {"2"}
    assert all(r["source_url"].startswith("https://git.example/") for r in rows)
    assert all(r["branch"] == "main" and r["promoted_at"] for r in rows)
    etag = response.headers["etag"]
    assert etag.endswith('-csv"')
    again = client.get("/api/v1/manifest", params={"format": "csv"},
                       headers={"If-None-Match": etag})
    assert again.status_code == 304
    old = client.get("/api/v1/manifests/1", params={"format": "csv"}).text
    assert old.splitlines()[0] == response.text.splitlines()[0]
    assert old != response.text


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_quoted() -> None:
    document = {"version": 3, "promoted_at": "2026-11-25T10:00:00+00:00", "components": [
        {"name": "nova", "url": "=HYPERLINK(\"http://evil\")", "branch": "-main",
         "sha": "a" * 40, "committed_at": None},
        {"name": "neutron", "url": "https://git.example/neutron.git", "branch": "main",
         "sha": "b" * 40, "committed_at": "2026-11-24T09:00:00+00:00"}]}
    rows = list(csv.DictReader(io.StringIO(csv_rows(document))))
    assert rows[0]["source_url"] == "'=HYPERLINK(\"http://evil\")"
    assert rows[0]["branch"] == "'-main"
    assert rows[1]["source_url"] == "https://git.example/neutron.git"
    assert rows[1]["commit_time"] == "2026-11-24T09:00:00+00:00"
