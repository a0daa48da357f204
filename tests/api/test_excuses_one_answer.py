"""The API and the dashboard answer "why is this candidate not known-good?" alike: both ask the
policy now, so neither repeats what the last reconcile pass stored an hour ago."""

from __future__ import annotations

import html
from datetime import timedelta

from fastapi.testclient import TestClient

from certifier.db import models
from certifier.db.session import session_scope
from tests.api.test_actions import _soaking
from tests.factories import World


def test_the_api_and_the_candidate_page_give_the_same_excuses_now(
        client: TestClient, world: World) -> None:
    cid = _soaking(world)
    world.clock.advance(timedelta(hours=2))  # the stored excuses are now two hours old
    with session_scope(world.factory) as session:
        stored = [e.message for e in session.get_one(models.Candidate, cid).excuses]

    answer = client.get(f"/api/v1/candidates/{cid}/excuses").json()
    detail = client.get(f"/api/v1/candidates/{cid}").json()
    page = client.get(f"/candidates/{cid}")

    assert page.status_code == 200 and answer["as_of"] is None
    messages = [e["message"] for e in answer["excuses"]]
    assert messages and messages == [e["message"] for e in detail["excuses"]]
    assert messages != stored  # the pass's answer, two hours on, is not today's
    for message in messages:
        assert html.escape(message) in page.text
    for old in set(stored) - set(messages):
        assert html.escape(old) not in page.text
