"""The outgoing-webhook delivery log over the API, and the events people's actions raise.

Deliveries are made for real, to HTTP servers on 127.0.0.1, before the log is read; on SQLite and
PostgreSQL like every API test.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.domain.clock import FakeClock
from certifier.pipeline import notify
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import CertifierConfig, NotificationsConfig, Settings
from tests.factories import World
from tests.pipeline.test_notify import SECRET, Receiver, raise_one, targets

READ = "reader-secret-0123456789ab"
ADMIN = "admin-secret-0123456789abc"
TOKENS = f"rita/read:{READ},adam/admin:{ADMIN}"
LIST = "/api/v1/notifications"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def chat() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def pager() -> Iterator[Receiver]:
    server = Receiver(answers=(503,))  # down for the first attempt
    yield server
    server.close()


@pytest.fixture
def config(chat: Receiver, pager: Receiver) -> NotificationsConfig:
    return targets({"name": "chat", "url": chat.url},
                   {"name": "pager", "url": pager.url, "events": ["promoted", "revoked"]})


@pytest.fixture
def notifying() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        notifying: RecordingDispatcher, config: NotificationsConfig) -> FastAPI:
    settings = Settings(data_dir=tmp_path, api_tokens=TOKENS,
                        config=CertifierConfig(notifications=config))
    return create_app(settings, dispatcher=notifying, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def delivered(db_factory: sessionmaker[Session], clock: FakeClock,
              config: NotificationsConfig) -> dict[str, int]:
    """One event sent to both targets: chat took it, pager answered 503 (to be retried)."""
    ids = raise_one(db_factory, clock, config)
    report = notify.deliver_due(db_factory, clock, config)
    assert len(report.delivered) == 1 and len(report.retrying) == 1
    return {"chat": report.delivered[0], "pager": report.retrying[0], "both": max(ids)}


def test_the_log_needs_a_token_of_the_read_scope(client: TestClient) -> None:
    refused = client.get(LIST)
    assert refused.status_code == 401
    assert "read scope" in refused.json()["detail"]
    assert client.get(LIST, headers=bearer("not-a-token-at-all-000")).status_code == 401
    assert client.get(LIST, headers=bearer(READ)).status_code == 200
    assert client.get(LIST, headers=bearer(ADMIN)).status_code == 200  # admin includes read


def test_deliveries_are_listed_newest_first_with_their_outcome(
    client: TestClient, delivered: dict[str, int], clock: FakeClock,
) -> None:
    items = client.get(LIST, headers=bearer(READ)).json()["items"]
    assert [i["id"] for i in items] == sorted((delivered["chat"], delivered["pager"]),
                                              reverse=True)
    by_target = {i["target"]: i for i in items}
    assert by_target["chat"] | {"id": 0} == {
        "id": 0, "event": "promoted", "subject": "candidate 1", "target": "chat",
        "state": "delivered", "attempts": 1, "last_status": 200, "last_error": "",
        "created_at": clock.now().isoformat().replace("+00:00", "Z"),
        "next_attempt_at": None,
        "delivered_at": clock.now().isoformat().replace("+00:00", "Z")}
    pager = by_target["pager"]
    assert (pager["state"], pager["attempts"], pager["last_status"]) == ("pending", 1, 503)
    assert pager["last_error"] == "HTTP 503: receiver says no"
    assert pager["next_attempt_at"] is not None


def test_the_log_never_shows_a_secret_or_a_target_url(
    client: TestClient, delivered: dict[str, int], chat: Receiver, pager: Receiver,
) -> None:
    answers = [client.get(LIST, headers=bearer(READ)).text] + [
        client.get(f"{LIST}/{i}", headers=bearer(READ)).text for i in delivered.values()]
    for text in answers:
        assert SECRET.decode() not in text
        assert chat.url not in text and pager.url not in text
        assert "127.0.0.1" not in text


def test_the_log_filters_and_pages(client: TestClient, delivered: dict[str, int]) -> None:
    def ids(query: str) -> list[int]:
        answer = client.get(f"{LIST}?{query}", headers=bearer(READ))
        assert answer.status_code == 200, answer.text
        return [i["id"] for i in answer.json()["items"]]

    assert ids("state=delivered") == [delivered["chat"]]
    assert ids("state=pending&target=pager") == [delivered["pager"]]
    assert ids("event=revoked") == []
    first = client.get(f"{LIST}?limit=1", headers=bearer(READ)).json()
    assert len(first["items"]) == 1
    assert ids(f"before={first['next_before']}") == [min(delivered["chat"], delivered["pager"])]
    for bad in ("state=lost", "event=merged", "limit=0", "before=0"):
        assert client.get(f"{LIST}?{bad}", headers=bearer(READ)).status_code == 422, bad


def test_one_delivery_shows_its_payload(client: TestClient, delivered: dict[str, int]) -> None:
    answer = client.get(f"{LIST}/{delivered['chat']}", headers=bearer(READ))
    assert answer.status_code == 200
    assert answer.json()["payload"]["link"] == "/candidates/1"
    assert answer.json()["payload"]["event"] == "promoted"
    assert client.get(f"{LIST}/999999", headers=bearer(READ)).status_code == 404
    assert client.get(f"{LIST}/0", headers=bearer(READ)).status_code == 422


def _soaking(world: World) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    report = world.reconcile()
    world.clock.advance(timedelta(minutes=1))
    world.finish(report.runs_created[-1])
    assert report.formed[0] in world.reconcile().started_soak
    return report.formed[0]


def test_a_hand_promotion_and_a_revocation_are_notified(
    client: TestClient, world: World, notifying: RecordingDispatcher, chat: Receiver,
    db_factory: sessionmaker[Session], clock: FakeClock, config: NotificationsConfig,
) -> None:
    cid = _soaking(world)
    promoted = client.post(f"/api/v1/candidates/{cid}/promote", headers=bearer(ADMIN),
                           json={"reason": "urgent fix"})
    assert promoted.status_code == 200, promoted.text
    assert notifying.notification_passes == 1  # asked for once the request committed
    revoked = client.post("/api/v1/known-good/1/revoke", headers=bearer(ADMIN),
                          json={"reason": "breaks tenants"})
    assert revoked.status_code == 200, revoked.text
    assert notifying.notification_passes == 2

    items = client.get(f"{LIST}?target=chat", headers=bearer(READ)).json()["items"]
    assert [(i["event"], i["subject"]) for i in items] == [
        ("revoked", "known-good 1"), ("promoted", f"candidate {cid}")]
    report = notify.deliver_due(db_factory, clock, config)
    # chat takes both; pager wants both too, and answers its first POST with a 503
    assert (len(report.delivered), len(report.retrying)) == (3, 1)
    bodies = {p.json()["event"]: p.json() for p in chat.posts}
    assert bodies["promoted"]["by"] == "token:adam"
    assert bodies["promoted"]["known_good"] == 1
    assert bodies["revoked"]["reason"] == "breaks tenants"
    assert bodies["revoked"]["current"] is None  # nothing left to fall back to
    assert all(p.signed for p in chat.posts)
