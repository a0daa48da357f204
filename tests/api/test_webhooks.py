"""Webhooks over the API: signed deliveries are stored before the 2xx, processed by the worker
function, deduplicated; bad input is refused with the right status and never a 500."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.errors import MAX_BODY_BYTES
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import components
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ComponentConfig
from certifier.tracking import deliveries
from certifier.tracking.webhooks import ZERO_SHA
from tests.factories import World, sha
from tests.tracking.payloads import (
    body_of,
    gerrit_ref_updated,
    github_headers,
    github_push,
    gitlab_headers,
    gitlab_push,
)

GITLAB_SECRET, GITHUB_SECRET, GERRIT_SECRET = "gl-s3cret", "gh-s3cret", "gr-s3cret"


class TrackingRecorder(RecordingDispatcher):
    """``broken`` makes sending a delivery fail like a broker outage."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def process_delivery(self, delivery_id: int) -> None:
        if self.broken:
            raise ConnectionRefusedError("broker down")
        super().process_delivery(delivery_id)


@pytest.fixture
def dispatcher() -> TrackingRecorder:
    return TrackingRecorder()


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFIER_GITLAB_WEBHOOK_SECRET", GITLAB_SECRET)
    monkeypatch.setenv("CERTIFIER_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("CERTIFIER_GERRIT_WEBHOOK_SECRET", GERRIT_SECRET)


@pytest.fixture
def tracked(db_factory: sessionmaker[Session], clock: FakeClock) -> None:
    with session_scope(db_factory) as session:
        for config in (
            ComponentConfig(name="nova", source="gitlab",
                            url="https://gitlab.example/openstack/nova.git"),
            ComponentConfig(name="neutron", source="github",
                            url="https://github.com/openstack/neutron"),
            ComponentConfig(name="cinder", source="gerrit",
                            url="https://review.example/openstack/cinder"),
        ):
            components.create_component(session, config, clock)


def post_gitlab(client: TestClient, payload: dict[str, Any], key: str | None = None,
                secret: str = GITLAB_SECRET, event: str = "Push Hook") -> Any:
    return client.post("/api/v1/webhooks/gitlab", content=body_of(payload),
                       headers=gitlab_headers(secret, key, event))


def post_github(client: TestClient, payload: dict[str, Any], delivery: str | None = None,
                event: str = "push") -> Any:
    body = body_of(payload)
    return client.post("/api/v1/webhooks/github", content=body,
                       headers=github_headers(GITHUB_SECRET, body, delivery, event))


def count(factory: sessionmaker[Session], model: type[models.Base]) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def process(factory: sessionmaker[Session], delivery_id: int, clock: FakeClock,
            dispatcher: RecordingDispatcher) -> str:
    return deliveries.process(factory, delivery_id, None, clock, dispatcher).outcome


def test_a_signed_gitlab_push_is_stored_dispatched_after_commit_and_processed(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], clock: FakeClock,
    dispatcher: TrackingRecorder, world: World,
) -> None:
    head = sha("nova-1")
    response = post_gitlab(client, gitlab_push("openstack/nova", head), key="k-1")
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    delivery_id = response.json()["delivery"]
    assert dispatcher.deliveries == [delivery_id]
    with session_scope(db_factory) as session:
        stored = session.get(models.Delivery, delivery_id)
        assert stored is not None and stored.state == "pending"
        assert stored.dedup_key == "idempotency-key:k-1"
        assert "x-gitlab-token" not in stored.headers

    outcome = process(db_factory, delivery_id, clock, world.dispatcher)
    assert outcome.startswith("1 new commits; head")
    assert world.dispatcher.reconciles == 1
    commits = client.get("/api/v1/components/nova/commits").json()["items"]
    assert [(c["sha"], c["seen_via"], c["title"]) for c in commits] == [
        (head, "webhook", "a change")]
    listed = client.get("/api/v1/deliveries").json()["items"]
    assert listed[0]["state"] == "processed" and listed[0]["component"] == "nova"


def test_a_signed_github_push_and_a_gerrit_event_are_accepted(
    client: TestClient, tracked: None,
) -> None:
    assert post_github(client, github_push("openstack/neutron", sha("q1"))).status_code == 202
    body = body_of(gerrit_ref_updated("openstack/cinder", sha("c1")))
    by_query = client.post(f"/api/v1/webhooks/gerrit?token={GERRIT_SECRET}", content=body)
    assert (by_query.status_code, by_query.json()["status"]) == (202, "accepted")
    other = body_of(gerrit_ref_updated("openstack/cinder", sha("c2"), sha("c1")))
    by_header = client.post("/api/v1/webhooks/gerrit", content=other,
                            headers={"X-Gerrit-Token": GERRIT_SECRET})
    assert by_header.status_code == 202


@pytest.mark.parametrize("forge,headers", [
    ("gitlab", {"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Push Hook"}),
    ("gitlab", {"X-Gitlab-Event": "Push Hook"}),
    ("github", {"X-Hub-Signature-256": "sha256=" + "0" * 64, "X-GitHub-Event": "push"}),
    ("github", {"X-GitHub-Event": "push"}),
    ("gerrit", {"X-Gerrit-Token": "wrong"}),
    ("gerrit", {}),
])
def test_a_bad_or_missing_signature_is_401_and_only_counted(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], forge: str,
    headers: dict[str, str], dispatcher: TrackingRecorder,
) -> None:
    body = body_of(gitlab_push("openstack/nova", sha("x")))
    response = client.post(f"/api/v1/webhooks/{forge}", content=body, headers=headers)
    assert response.status_code == 401
    assert count(db_factory, models.Delivery) == 0
    assert dispatcher.deliveries == []
    rejected = client.get("/api/v1/deliveries").json()["rejected"]
    assert [(r["source"], r["reason"], r["count"]) for r in rejected] == [
        (forge, "bad_signature", 1)]


def test_rejections_are_counted_per_source_and_reason(client: TestClient, tracked: None) -> None:
    for _ in range(3):
        post_gitlab(client, gitlab_push("openstack/nova", sha("x")), secret="nope")
    rejected = client.get("/api/v1/deliveries").json()["rejected"]
    assert [(r["reason"], r["count"]) for r in rejected] == [("bad_signature", 3)]


def test_a_forge_without_a_configured_secret_refuses_everything(
    client: TestClient, tracked: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CERTIFIER_GITLAB_WEBHOOK_SECRET")
    response = post_gitlab(client, gitlab_push("openstack/nova", sha("x")), secret="")
    assert response.status_code == 401
    assert "no gitlab webhook secret" in response.json()["detail"]


def test_a_component_may_have_a_secret_of_its_own(
    client: TestClient, db_factory: sessionmaker[Session], clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOVA_HOOK_SECRET", "own-secret")
    with session_scope(db_factory) as session:
        components.create_component(session, ComponentConfig(
            name="nova", source="gitlab", url="https://gitlab.example/openstack/nova",
            webhook_secret_env="NOVA_HOOK_SECRET"), clock)
    response = post_gitlab(client, gitlab_push("openstack/nova", sha("x")), secret="own-secret")
    assert response.status_code == 202


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b""])
def test_a_malformed_payload_is_400(client: TestClient, tracked: None, body: bytes,
                                    db_factory: sessionmaker[Session]) -> None:
    response = client.post("/api/v1/webhooks/gitlab", content=body,
                           headers=gitlab_headers(GITLAB_SECRET))
    assert response.status_code == 400
    assert "malformed" in response.json()["detail"]
    assert count(db_factory, models.Delivery) == 0


def test_a_body_over_one_mebibyte_is_413(client: TestClient, tracked: None,
                                         db_factory: sessionmaker[Session]) -> None:
    payload = gitlab_push("openstack/nova", sha("x"))
    payload["padding"] = "x" * MAX_BODY_BYTES
    response = post_gitlab(client, payload)
    assert response.status_code == 413
    assert count(db_factory, models.Delivery) == 0


def test_an_unknown_project_is_202_and_logged_as_not_tracked(
    client: TestClient, tracked: None, dispatcher: TrackingRecorder,
) -> None:
    response = post_gitlab(client, gitlab_push("someone/else", sha("x")))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored: not tracked"
    assert dispatcher.deliveries == []
    item = client.get("/api/v1/deliveries").json()["items"][0]
    assert (item["outcome"], item["state"], item["project"]) == (
        "ignored: not tracked", "processed", "someone/else")


def test_tags_and_untracked_branches_are_logged_as_ignored(
    client: TestClient, tracked: None,
) -> None:
    tag = post_gitlab(client, gitlab_push("openstack/nova", sha("t"), kind="tag_push",
                                          ref="refs/tags/v1.0"), event="Tag Push Hook")
    branch = post_github(client, github_push("openstack/neutron", sha("f"),
                                             ref="refs/heads/feature"))
    ping = post_github(client, {"zen": "Keep it simple", "repository": {
        "full_name": "openstack/neutron"}}, event="ping")
    assert tag.json()["status"] == "ignored: tag push"
    assert branch.json()["status"] == "ignored: untracked branch feature"
    assert ping.json()["status"] == "ignored: ping"
    outcomes = [d["outcome"] for d in client.get("/api/v1/deliveries").json()["items"]]
    assert outcomes == ["ignored: ping", "ignored: untracked branch feature", "ignored: tag push"]


def test_a_replayed_delivery_is_200_duplicate_with_no_second_commit_or_candidate(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], clock: FakeClock,
    dispatcher: TrackingRecorder, world: World,
) -> None:
    world.testbed("gate1")
    payloads = [(gitlab_push("openstack/nova", sha("n1")), "k-n1"),
                (github_push("openstack/neutron", sha("q1")), "d-q1")]
    gerrit_body = body_of(gerrit_ref_updated("openstack/cinder", sha("c1")))
    first = [post_gitlab(client, payloads[0][0], key=payloads[0][1]),
             post_github(client, payloads[1][0], delivery=payloads[1][1]),
             client.post("/api/v1/webhooks/gerrit", content=gerrit_body,
                         headers={"X-Gerrit-Token": GERRIT_SECRET})]
    for response in first:
        process(db_factory, response.json()["delivery"], clock, world.dispatcher)
    assert len(world.reconcile().formed) == 1

    again = [post_gitlab(client, payloads[0][0], key=payloads[0][1]),
             post_github(client, payloads[1][0], delivery=payloads[1][1]),
             client.post("/api/v1/webhooks/gerrit", content=gerrit_body,
                         headers={"X-Gerrit-Token": GERRIT_SECRET})]
    assert [r.status_code for r in again] == [200, 200, 200]
    assert [r.json() for r in again] == [{"status": "duplicate", "delivery": r.json()["delivery"]}
                                         for r in first]
    assert len(dispatcher.deliveries) == 3
    for response in again:  # even processing it again (a redelivered task) changes nothing
        process(db_factory, response.json()["delivery"], clock, world.dispatcher)
    assert count(db_factory, models.Delivery) == 3
    assert count(db_factory, models.Commit) == 3
    assert world.reconcile().formed == []
    assert count(db_factory, models.Candidate) == 1
    replays = [d["replays"] for d in client.get("/api/v1/deliveries").json()["items"]]
    assert replays == [1, 1, 1]


def test_a_broker_outage_still_answers_202_and_the_sweep_sends_it_later(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], clock: FakeClock,
    dispatcher: TrackingRecorder,
) -> None:
    dispatcher.broken = True
    response = post_gitlab(client, gitlab_push("openstack/nova", sha("n1")))
    assert response.status_code == 202
    delivery_id = response.json()["delivery"]
    assert dispatcher.deliveries == []
    dispatcher.broken = False
    with session_scope(db_factory) as session:
        assert deliveries.sweep(session, clock, timedelta(seconds=60), dispatcher) == []
    clock.advance(timedelta(seconds=61))
    with session_scope(db_factory) as session:
        assert deliveries.sweep(session, clock, timedelta(seconds=60), dispatcher) == [
            delivery_id]
    assert dispatcher.deliveries == [delivery_id]


def test_a_processed_delivery_is_never_swept(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], clock: FakeClock,
    dispatcher: TrackingRecorder,
) -> None:
    delivery_id = post_gitlab(client, gitlab_push("openstack/nova", sha("n1"))).json()["delivery"]
    process(db_factory, delivery_id, clock, RecordingDispatcher())
    clock.advance(timedelta(hours=1))
    with session_scope(db_factory) as session:
        assert deliveries.sweep(session, clock, timedelta(seconds=60), dispatcher) == []


def test_a_deleted_branch_pauses_the_component_visibly(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    head = sha("n1")
    first = post_gitlab(client, gitlab_push("openstack/nova", head)).json()["delivery"]
    process(db_factory, first, clock, RecordingDispatcher())
    gone = post_gitlab(client, gitlab_push("openstack/nova", ZERO_SHA, head)).json()["delivery"]
    assert "component paused" in process(db_factory, gone, clock, RecordingDispatcher())
    assert client.get("/api/v1/components/nova").json()["paused"] is True
    tracking = client.get("/api/v1/components/nova/tracking").json()
    assert tracking["paused"] is True and "deleted upstream" in tracking["paused_reason"]
    back = post_gitlab(client, gitlab_push("openstack/nova", sha("n2"))).json()["delivery"]
    assert "resumed" in process(db_factory, back, clock, RecordingDispatcher())
    assert client.get("/api/v1/components/nova").json()["paused"] is False


def test_a_github_force_push_is_recorded_and_moves_the_head(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    a, b, c = sha("q1"), sha("q2"), sha("q3-rewritten")
    for payload in (github_push("openstack/neutron", a),
                    github_push("openstack/neutron", b, a, commits=[(b, "q2")]),
                    github_push("openstack/neutron", c, b, commits=[(c, "q3")], forced=True)):
        delivery_id = post_github(client, payload).json()["delivery"]
        outcome = process(db_factory, delivery_id, clock, RecordingDispatcher())
    assert outcome.startswith("force-push")
    with session_scope(db_factory) as session:
        rows = {r.sha: r.gone_at for r in session.scalars(select(models.Commit))}
        assert rows[c] is None and rows[a] is None
        audit = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "force_push")).one()
        assert (audit.detail["old"], audit.detail["new"]) == (b, c)
        assert components.heads(session)["neutron"].sha == c


def test_the_delivery_detail_shows_the_payload_and_unknown_ids_are_404(
    client: TestClient, tracked: None,
) -> None:
    delivery_id = post_gitlab(client, gitlab_push("openstack/nova", sha("n1"))).json()["delivery"]
    detail = client.get(f"/api/v1/deliveries/{delivery_id}").json()
    assert detail["payload"]["project"]["path_with_namespace"] == "openstack/nova"
    assert detail["headers"]["x-gitlab-event"] == "Push Hook"
    assert client.get("/api/v1/deliveries/999999").status_code == 404
    assert client.get("/api/v1/deliveries?source=gitlab&state=pending").json()["items"][0][
        "id"] == delivery_id
    assert client.get("/api/v1/deliveries?source=bitbucket").status_code == 422


@pytest.mark.parametrize("payload", [
    {}, {"object_kind": "push"}, {"object_kind": "push", "project": "x"},
    {"object_kind": "push", "project": {"path_with_namespace": "openstack/nova"},
     "ref": "refs/heads/main", "after": "zz"},
    {"object_kind": "push", "project": {"path_with_namespace": "openstack/nova"},
     "ref": "refs/heads/main", "after": "a" * 40, "commits": [None, 3, {"id": "q"}]},
    {"object_kind": "push", "project": {"path_with_namespace": "../../etc"},
     "ref": "refs/heads/main", "after": "a" * 40},
    {"object_kind": "push", "project": {"path_with_namespace": "openstack/nova"},
     "ref": "refs/heads/main;reboot", "after": "a" * 40},
    {"object_kind": "push", "project": {"path_with_namespace": "openstack/nova"},
     "ref": "refs/heads/main", "after": "a" * 40, "total_commits_count": 10**30},
])
def test_odd_signed_payloads_are_answered_never_500(
    client: TestClient, tracked: None, payload: dict[str, Any],
    db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    response = post_gitlab(client, payload)
    assert response.status_code == 202, response.text
    delivery_id = response.json()["delivery"]
    process(db_factory, delivery_id, clock, RecordingDispatcher())
    assert client.get(f"/api/v1/deliveries/{delivery_id}").json()["state"] == "processed"


def test_the_webhook_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/webhooks/{forge}", "/api/v1/deliveries",
            "/api/v1/deliveries/{delivery_id}", "/api/v1/components/{name}/tracking"} <= set(paths)
    assert json.dumps(paths["/api/v1/webhooks/{forge}"]).count("401") >= 1
