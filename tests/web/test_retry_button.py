"""The candidate page offers a retry exactly when the candidate's infra retries ran out, and a
stop of culprit finding exactly while one runs."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import actions
from tests.api.test_actions import RETRY_POLICY, exhausted, searching
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


def test_a_candidate_whose_culprit_finding_runs_offers_to_stop_it(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    _, cid, _ = searching(session_factory, clock)
    page = client.get(f"/candidates/{cid}").text
    action = f'data-action="stop-culprit-finding" action="/api/v1/candidates/{cid}/culprit/stop"'
    assert action in page
    form = page.split('data-action="stop-culprit-finding"', 1)[1].split("</form>", 1)[0]
    assert "data-unavailable" not in form.split(">", 1)[0]  # this app serves the endpoint
    assert 'name="reason" required' in form and "Stop culprit finding</button>" in form


def test_once_stopped_the_page_offers_no_stop(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    _, cid, _ = searching(session_factory, clock)
    with session_scope(session_factory) as session:
        actions.stop_culprit_finding(session, clock, cid, "token:olga", "gate1 stays busy")
    page = client.get(f"/candidates/{cid}").text
    assert 'data-action="stop-culprit-finding"' not in page
    assert "stopped by token:olga: gate1 stays busy" in page  # the search's reason, shown


def test_a_candidate_without_culprit_finding_offers_no_stop(
    client: TestClient, world: World,
) -> None:
    cid = exhausted(world)  # gating, never rejected
    assert 'data-action="stop-culprit-finding"' not in client.get(f"/candidates/{cid}").text
