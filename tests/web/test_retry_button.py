"""The candidate page offers a retry exactly when the candidate's infra retries ran out."""

from __future__ import annotations

from fastapi.testclient import TestClient

from certifier.db.session import session_scope
from certifier.pipeline import actions
from tests.api.test_actions import RETRY_POLICY, exhausted
from tests.factories import World


def test_a_candidate_whose_infra_retries_ran_out_offers_a_retry(
    client: TestClient, world: World,
) -> None:
    cid = exhausted(world)
    page = client.get(f"/candidates/{cid}").text
    assert f'data-action="retry" action="/api/v1/candidates/{cid}/retry"' in page
    form_tag = page.split('data-action="retry"', 1)[1].split(">", 1)[0]
    assert "data-unavailable" not in form_tag  # this app serves the endpoint


def test_once_retried_the_page_offers_no_retry(client: TestClient, world: World) -> None:
    cid = exhausted(world)
    with session_scope(world.factory) as session:
        actions.retry(session, world.clock, cid, "token:olga", "fixed", RETRY_POLICY.soak)
    assert 'data-action="retry"' not in client.get(f"/candidates/{cid}").text
