"""``POST``/``DELETE /api/v1/candidates/{id}/mark-bad`` on SQLite and PostgreSQL.

Marking needs an ``operate`` token, unmarking ``admin``; the mark shows in the candidate JSON and
on its page, formation skips the combination, and no promotion (not even a forced one) can
publish it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from tests.factories import World

OPERATE = "operator-secret-0123456789"
ADMIN = "admin-secret-0123456789abc"
READ = "reader-secret-0123456789ab"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    settings = Settings(data_dir=tmp_path,
                        api_tokens=f"olga:{OPERATE},adam/admin:{ADMIN},rita/read:{READ}")
    return create_app(settings, dispatcher=dispatcher, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def gating(world: World) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    return world.reconcile().formed[0]


def path(cid: int) -> str:
    return f"/api/v1/candidates/{cid}/mark-bad"


def test_marking_needs_a_valid_operate_token(client: TestClient, world: World) -> None:
    cid = gating(world)
    body = {"reason": "eats data"}
    refused = client.post(path(cid), json=body)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.post(path(cid), json=body,
                       headers=bearer("not-a-token-at-all")).status_code == 401
    assert client.post(path(cid), json=body, headers=bearer(READ)).status_code == 403
    assert client.get(f"/api/v1/candidates/{cid}").json()["marked_bad"] is None


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "},
                                  {"reason": "x", "force": True}, {"reason": 7}])
def test_marking_needs_a_reason(client: TestClient, world: World,
                                body: dict[str, object]) -> None:
    cid = gating(world)
    answer = client.post(path(cid), json=body, headers=bearer(OPERATE))
    assert answer.status_code == 422, answer.text


def test_a_marked_candidate_is_cancelled_and_shows_the_mark(
    client: TestClient, world: World, dispatcher: RecordingDispatcher,
) -> None:
    cid = gating(world)
    form = client.get(f"/candidates/{cid}").text.split('data-action="mark-bad"')[1]
    assert form.split(">")[0] == f' action="{path(cid)}" method="post"'  # offered, enabled
    answer = client.post(path(cid), json={"reason": "eats data"}, headers=bearer(OPERATE))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "cancelled" and body["runs"] == []  # the gate run is withdrawn
    assert body["excuses"][0]["kind"] == "marked_bad"
    assert body["marked_bad"]["by"] == "token:olga"
    assert body["marked_bad"]["reason"] == "eats data"
    assert dispatcher.reconciles >= 1
    assert client.get(f"/api/v1/candidates/{cid}").json()["marked_bad"] == body["marked_bad"]
    page = client.get(f"/candidates/{cid}").text
    assert "Marked bad" in page and "eats data" in page
    assert 'data-action="mark-bad"' not in page  # nothing left to mark
    event = client.get("/api/v1/audit?action=mark_bad").json()["items"][0]
    assert (event["actor"], event["subject"]) == ("token:olga", f"candidate {cid}")


def test_marking_twice_or_an_unknown_candidate_is_refused(
    client: TestClient, world: World,
) -> None:
    cid = gating(world)
    assert client.post(path(cid), json={"reason": "one"},
                       headers=bearer(OPERATE)).status_code == 200
    again = client.post(path(cid), json={"reason": "two"}, headers=bearer(OPERATE))
    assert again.status_code == 409 and "one" in again.json()["detail"]
    assert client.post(path(999), json={"reason": "x"}, headers=bearer(OPERATE)
                       ).status_code == 404
    assert client.post(path(0), json={"reason": "x"}, headers=bearer(OPERATE)
                       ).status_code == 422


def test_formation_skips_the_marked_combination_until_a_new_head(
    client: TestClient, world: World,
) -> None:
    cid = gating(world)
    client.post(path(cid), json={"reason": "eats data"}, headers=bearer(OPERATE))
    assert world.reconcile().formed == []
    skipped = client.get("/api/v1/audit?action=skip_bad").json()["items"]
    assert len(skipped) == 1 and "eats data" in skipped[0]["detail"]["reason"]
    world.commit("nova", "n2")
    assert len(world.reconcile().formed) == 1


def test_a_forced_promotion_of_a_marked_candidate_is_refused_with_the_reason(
    client: TestClient, world: World,
) -> None:
    cid = gating(world)
    client.post(path(cid), json={"reason": "eats data"}, headers=bearer(OPERATE))
    answer = client.post(f"/api/v1/candidates/{cid}/promote",
                         json={"reason": "ship it", "force": True}, headers=bearer(ADMIN))
    assert answer.status_code == 409
    assert "marked bad" in answer.json()["detail"] and "eats data" in answer.json()["detail"]
    assert client.get("/api/v1/manifest").status_code == 404


def test_a_served_known_good_is_refused_until_revoked(client: TestClient, world: World) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    version = world.promote_heads()
    cid = client.get(f"/api/v1/manifests/{version}").json()["candidate"]
    refused = client.post(path(cid), json={"reason": "x"}, headers=bearer(OPERATE))
    assert refused.status_code == 409 and "revoke it first" in refused.json()["detail"]
    client.post(f"/api/v1/known-good/{version}/revoke", json={"reason": "bad"},
                headers=bearer(ADMIN))
    assert client.post(path(cid), json={"reason": "x"},
                       headers=bearer(OPERATE)).status_code == 200


def test_unmarking_needs_admin_and_lifts_the_mark(client: TestClient, world: World) -> None:
    cid = gating(world)
    client.post(path(cid), json={"reason": "eats data"}, headers=bearer(OPERATE))
    assert client.delete(path(cid)).status_code == 401
    assert client.delete(path(cid), headers=bearer(OPERATE)).status_code == 403
    answer = client.delete(path(cid), params={"reason": "it was the disk"},
                           headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    assert answer.json()["marked_bad"] is None and answer.json()["state"] == "cancelled"
    assert client.delete(path(cid), headers=bearer(ADMIN)).status_code == 409
    assert client.delete(path(999), headers=bearer(ADMIN)).status_code == 404
    event = client.get("/api/v1/audit?action=unmark_bad").json()["items"][0]
    assert (event["actor"], event["detail"]["reason"]) == ("token:adam", "it was the disk")
