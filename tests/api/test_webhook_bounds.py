"""Webhook bodies are bounded too: deep nesting is a counted 400, a deep GitLab group path is
stored, and refusals come in the one error shape."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.limits import JSON_DEPTH_MAX, PROJECT_MAX
from certifier.pipeline import components
from certifier.settings import ComponentConfig
from tests.factories import sha
from tests.tracking.payloads import gitlab_headers, gitlab_push

from .test_webhooks import GITLAB_SECRET, count, dispatcher, post_gitlab, secrets, tracked

__all__ = ["dispatcher", "secrets", "tracked"]  # fixtures shared with test_webhooks


def test_a_signed_body_nested_too_deep_is_a_counted_400_not_a_500(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session],
) -> None:
    body = b"[" * 50_000 + b"]" * 50_000
    answer = client.post("/api/v1/webhooks/gitlab", content=body,
                         headers=gitlab_headers(GITLAB_SECRET))
    assert answer.status_code == 400
    assert answer.json() == {"detail": f"malformed JSON payload: JSON nested deeper than "
                                       f"{JSON_DEPTH_MAX} levels", "errors": []}
    assert count(db_factory, models.Delivery) == 0
    with session_scope(db_factory) as session:
        assert session.scalar(select(models.WebhookRejection.count)) == 1


def test_a_bad_signature_is_refused_in_the_one_error_shape(client: TestClient,
                                                           tracked: None) -> None:
    answer = post_gitlab(client, gitlab_push("openstack/nova", sha("x")), secret="nope")
    assert answer.status_code == 401
    assert answer.json() == {"detail": "missing or invalid webhook signature", "errors": []}


def test_a_push_from_a_deep_gitlab_group_is_stored(
    client: TestClient, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    project = "/".join(f"group-{i:02d}-" + "y" * 60 for i in range(19)) + "/nova"
    assert 1000 < len(project) <= PROJECT_MAX
    with session_scope(db_factory) as session:
        components.create_component(session, ComponentConfig(
            name="nova", source="gitlab", url=f"https://gitlab.example/{project}.git",
            project=project), clock)
    answer = post_gitlab(client, gitlab_push(project, sha("x")))
    assert (answer.status_code, answer.json()["status"]) == (202, "accepted")
    with session_scope(db_factory) as session:
        assert session.scalar(select(models.Delivery.project)) == project


def test_a_signed_push_with_a_commit_dated_year_9999_is_accepted_not_a_500(
    client: TestClient, tracked: None, db_factory: sessionmaker[Session],
) -> None:
    payload = gitlab_push("openstack/nova", sha("late"))
    payload["commits"][0]["timestamp"] = "9999-12-31T23:00:00-05:00"
    answer = post_gitlab(client, payload)
    assert (answer.status_code, answer.json()["status"]) == (202, "accepted")
