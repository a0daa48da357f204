"""A row whose stored excuses or culprit finding no version wrote is shown, never a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text

from certifier.db.session import session_scope
from tests.api.test_candidates import gating_candidate
from tests.factories import World


def test_unreadable_excuses_and_culprit_finding_are_shown_by_the_api_and_the_dashboard(
        client: TestClient, world: World) -> None:
    _, run_id = gating_candidate(world)
    with session_scope(world.factory) as session:
        session.execute(text("UPDATE candidates SET state = 'cancelled', excuses = :e, "
                             "bisection = :b"), {"e": '["a bare string"]', "b": '"nonsense"'})
        session.execute(text("UPDATE runs SET excuses = :e"), {"e": '{"not": "a list"}'})
    (cand,) = client.get("/api/v1/candidates").json()["items"]
    detail = client.get(f"/api/v1/candidates/{cand['id']}")
    assert detail.status_code == 200
    assert [e["kind"] for e in detail.json()["excuses"]] == ["unreadable"]
    assert detail.json()["bisection"]["status"] == "unreadable"
    assert [e["kind"] for e in detail.json()["runs"][0]["excuses"]] == ["unreadable"]
    excuses = client.get(f"/api/v1/candidates/{cand['id']}/excuses")
    assert excuses.status_code == 200
    assert "a bare string" in excuses.json()["excuses"][0]["message"]
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 200
    page = client.get(f"/candidates/{cand['id']}")
    assert page.status_code == 200 and "a bare string" in page.text
    assert client.get("/").status_code == 200 and client.get("/candidates").status_code == 200
