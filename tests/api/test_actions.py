"""People's controls over the API: cancel, waive, retry, promote, revoke, stopping culprit
finding, and the audit log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from tests.factories import SOAK, World
from tests.pipeline.test_bisection import Upstreams, _reject

OPERATE = "operator-secret-0123456789"
ADMIN = "admin-secret-0123456789abc"
READ = "reader-secret-0123456789ab"
TOKENS = f"olga:{OPERATE},adam/admin:{ADMIN},rita/read:{READ}"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    settings = Settings(data_dir=tmp_path, api_tokens=TOKENS)
    return create_app(settings, dispatcher=dispatcher, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def failing_ping() -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False, "100 % loss")],
                        measurements=[], tool_versions={})]


def _formed(world: World) -> tuple[int, int]:
    """A new candidate, boarded at once: (its id, its gate run)."""
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    report = world.reconcile()
    return report.formed[0], report.runs_created[-1]


def _queued(world: World) -> int:
    return _formed(world)[0]


def _rejected(world: World) -> int:
    """A candidate whose gate run failed the ping check 'ping.h1 reaches h2'."""
    cid, gate = _formed(world)
    world.clock.advance(timedelta(minutes=1))
    world.finish(gate, failing_ping())
    assert cid in world.reconcile().rejected
    return cid


def _soaking(world: World) -> int:
    cid, gate = _formed(world)
    world.clock.advance(timedelta(minutes=1))
    world.finish(gate)
    assert cid in world.reconcile().started_soak
    return cid


def test_mutating_endpoints_refuse_without_a_token(client: TestClient, world: World) -> None:
    cid = _queued(world)
    for path, body in ((f"/api/v1/candidates/{cid}/cancel", {"reason": "x"}),
                       (f"/api/v1/candidates/{cid}/waive", {"subject": "a", "reason": "x"}),
                       (f"/api/v1/candidates/{cid}/promote", {"reason": "x"}),
                       (f"/api/v1/candidates/{cid}/culprit/stop", {"reason": "x"}),
                       ("/api/v1/known-good/1/revoke", {"reason": "x"})):
        answer = client.post(path, json=body)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
        assert client.post(path, json=body, headers=bearer("not-a-token-at-all")
                           ).status_code == 401
        assert client.post(path, json=body, headers=bearer(READ)).status_code == 403


def test_cancel_takes_a_queued_candidate_out_and_is_audited(
    client: TestClient, world: World, dispatcher: RecordingDispatcher,
) -> None:
    cid = _queued(world)
    pending = [r["id"] for r in client.get(f"/api/v1/candidates/{cid}").json()["runs"]
               if r["state"] == "pending"]
    path = f"/api/v1/candidates/{cid}/cancel"
    assert client.post(path, json={}, headers=bearer(OPERATE)).status_code == 422
    assert client.post(path, json={"reason": "  "}, headers=bearer(OPERATE)).status_code == 422
    answer = client.post(path, json={"reason": "wrong branch"}, headers=bearer(OPERATE))
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "cancelled"
    assert "wrong branch" in answer.json()["excuses"][0]["message"]
    assert dispatcher.reconciles >= 1
    assert client.post(path, json={"reason": "again"}, headers=bearer(OPERATE)).status_code == 409
    assert client.post("/api/v1/candidates/999/cancel", json={"reason": "x"},
                       headers=bearer(OPERATE)).status_code == 404
    event = client.get("/api/v1/audit?action=cancel").json()["items"][0]
    assert (event["actor"], event["subject"], event["detail"]) == (
        "token:olga", f"candidate {cid}", {"reason": "wrong branch", "withdrawn_runs": pending})
    assert client.get(f"/api/v1/candidates/{cid}").json()["runs"] == []


def test_waiving_the_only_failure_of_a_rejected_candidate_requeues_it(
    client: TestClient, world: World,
) -> None:
    cid = _rejected(world)
    path = f"/api/v1/candidates/{cid}/waive"
    bad = client.post(path, json={"subject": "bandwidth.nope", "reason": "noise"},
                      headers=bearer(OPERATE))
    assert bad.status_code == 422 and "ping.h1 reaches h2" in bad.json()["detail"]
    answer = client.post(path, json={"subject": "ping.h1 reaches h2", "reason": "lab cable"},
                         headers=bearer(OPERATE))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["requeued"] is True and body["candidate"]["state"] == "queued"
    assert (body["waiver"]["author"], body["waiver"]["active"]) == ("token:olga", True)
    waivers = client.get(f"/api/v1/candidates/{cid}").json()["waivers"]
    assert [(w["subject"], w["reason"]) for w in waivers] == [("ping.h1 reaches h2", "lab cable")]
    # Back in the pipeline: it boards, and its gate, failing only on the waived check, counts.
    report = world.reconcile()
    assert cid in report.boarded and cid in report.started_soak
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["items"]]
    assert actions[:2] == ["reinstate", "waive"]


def test_an_expired_waiver_stops_counting(client: TestClient, world: World) -> None:
    cid = _rejected(world)
    answer = client.post(f"/api/v1/candidates/{cid}/waive",
                         json={"subject": "ping.h1 reaches h2", "reason": "for a day",
                               "expires_in": "1h"}, headers=bearer(OPERATE))
    assert answer.status_code == 200 and answer.json()["requeued"] is True
    world.clock.advance(timedelta(hours=2))
    report = world.reconcile()
    assert cid in report.boarded and cid in report.rejected
    detail = client.get(f"/api/v1/candidates/{cid}").json()
    assert detail["state"] == "rejected" and detail["waivers"][0]["active"] is False


def test_a_waive_with_a_bad_expiry_or_on_a_finished_candidate_is_refused(
    client: TestClient, world: World,
) -> None:
    cid = _rejected(world)
    path = f"/api/v1/candidates/{cid}/waive"
    assert client.post(path, json={"subject": "ping.h1 reaches h2", "reason": "x",
                                   "expires_in": "soon"}, headers=bearer(OPERATE)
                       ).status_code == 422
    assert client.post(path, json={"subject": "ping.h1 reaches h2"},
                       headers=bearer(OPERATE)).status_code == 422
    queued = _queued_second(world)
    client.post(f"/api/v1/candidates/{queued}/cancel", json={"reason": "x"},
                headers=bearer(OPERATE))
    assert client.post(f"/api/v1/candidates/{queued}/waive",
                       json={"subject": "a", "reason": "x"},
                       headers=bearer(OPERATE)).status_code == 409


def _queued_second(world: World) -> int:
    world.commit("nova", "n2")
    return world.reconcile().formed[0]


def test_promote_needs_admin_and_goes_through_the_compare_and_swap(
    client: TestClient, world: World,
) -> None:
    cid = _soaking(world)
    path = f"/api/v1/candidates/{cid}/promote"
    assert client.post(path, json={"reason": "urgent fix"},
                       headers=bearer(OPERATE)).status_code == 403
    answer = client.post(path, json={"reason": "urgent fix"}, headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    assert answer.json()["candidate"]["state"] == "promoted"
    assert answer.json()["known_good"]["version"] == 1
    assert "urgent fix" in answer.json()["known_good"]["reason"]
    assert client.get("/api/v1/manifest").json()["candidate"] == cid
    again = client.post(path, json={"reason": "twice"}, headers=bearer(ADMIN))
    assert again.status_code == 409
    event = client.get("/api/v1/audit?action=promote").json()["items"][0]
    assert event["actor"] == "token:adam" and event["detail"]["manual"] is True


def test_promote_refuses_unwaived_failures_unless_forced(
    client: TestClient, world: World,
) -> None:
    cid = _soaking(world)
    soak = world.reconcile().runs_created or []
    with world.factory() as session:
        from certifier.db import models
        run_id = max(r.id for r in session.get_one(models.Candidate, cid).runs)
    assert soak == [] or run_id in soak
    world.clock.advance(timedelta(minutes=1))
    world.finish(run_id, failing_ping())
    path = f"/api/v1/candidates/{cid}/promote"
    refused = client.post(path, json={"reason": "ship it"}, headers=bearer(ADMIN))
    assert refused.status_code == 409 and "h1 reaches h2" in refused.json()["detail"]
    forced = client.post(path, json={"reason": "ship it", "force": True}, headers=bearer(ADMIN))
    assert forced.status_code == 200, forced.text


def test_revoke_falls_back_to_the_previous_known_good_at_once(
    client: TestClient, world: World,
) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    first = world.promote_heads()
    world.commit("nova", "n2")
    second = world.promote_heads()
    assert client.get("/api/v1/manifest").json()["version"] == second  # now cached
    path = f"/api/v1/known-good/{second}/revoke"
    assert client.post(path, json={"reason": "bad"}, headers=bearer(OPERATE)).status_code == 403
    assert client.post(path, json={}, headers=bearer(ADMIN)).status_code == 422
    answer = client.post(path, json={"reason": "breaks upgrades"}, headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked"]["revoked_at"] is not None
    assert answer.json()["current"]["version"] == first
    assert client.get("/api/v1/manifest").json()["version"] == first
    assert client.post(path, json={"reason": "again"}, headers=bearer(ADMIN)).status_code == 409
    assert client.post("/api/v1/known-good/99/revoke", json={"reason": "x"},
                       headers=bearer(ADMIN)).status_code == 404
    event = client.get("/api/v1/audit?action=revoke").json()["items"][0]
    assert (event["actor"], event["subject"]) == ("token:adam", f"known-good {second}")


def test_the_audit_log_pages_newest_first(client: TestClient, world: World) -> None:
    first_id = _queued(world)
    client.post(f"/api/v1/candidates/{first_id}/cancel", json={"reason": "one"},
                headers=bearer(OPERATE))
    second_id = _queued_second(world)
    client.post(f"/api/v1/candidates/{second_id}/cancel", json={"reason": "two"},
                headers=bearer(OPERATE))
    page = client.get("/api/v1/audit?limit=1&action=cancel").json()
    assert [e["detail"]["reason"] for e in page["items"]] == ["two"]
    older = client.get(f"/api/v1/audit?limit=1&action=cancel&before={page['next_before']}"
                       ).json()
    assert [e["detail"]["reason"] for e in older["items"]] == ["one"]
    assert older["next_before"] is None
    assert client.get("/api/v1/audit?limit=0").status_code == 422


# Retry (issue #13, item 4): a candidate whose infra retries ran out ---------------------------

# The app's policy is the default config's (two infra retries, 30 s backoff): the world's too.
RETRY_POLICY = scheduler.SchedulerPolicy(soak=replace(SOAK, max_infra_retries=2,
                                                      infra_backoff=timedelta(seconds=30)))


def _infra_error(world: World, run_id: int) -> None:
    world.claim(run_id)
    world.finish(run_id, [],
                 setup_error=f"commit {'a' * 40} of nova is not in https://git.example/nova")


def exhausted(world: World) -> int:
    """A gating candidate whose three gate runs all hit infra errors: it waits for a person."""
    world.policy = RETRY_POLICY
    cid, run_id = _formed(world)
    for _ in range(3):
        _infra_error(world, run_id)
        world.clock.advance(timedelta(minutes=10))
        created = world.reconcile().runs_created
        run_id = created[-1] if created else run_id
    assert not world.reconcile().runs_created
    assert [e.kind for e in _candidate(world, cid).excuses] == ["infra_error"]
    return cid


def _candidate(world: World, cid: int) -> models.Candidate:
    with session_scope(world.factory) as session:
        cand = session.get_one(models.Candidate, cid)
        session.expunge(cand)
        return cand


def test_a_retry_gives_the_candidate_its_runs_back_at_the_next_pass(
    client: TestClient, world: World, dispatcher: RecordingDispatcher,
) -> None:
    cid = exhausted(world)
    response = client.post(f"/api/v1/candidates/{cid}/retry", json={"reason": "disk replaced"},
                           headers=bearer(OPERATE))
    assert response.status_code == 200, response.text
    assert response.json()["retried_at"] is not None
    assert dispatcher.reconciles >= 1

    report = world.reconcile()

    assert len(report.runs_created) == 1
    assert [e.kind for e in _candidate(world, cid).excuses] == ["gating"]


def test_a_retry_is_audited_with_the_runs_it_gave_up_on(client: TestClient, world: World) -> None:
    cid = exhausted(world)
    client.post(f"/api/v1/candidates/{cid}/retry", json={"reason": "disk replaced"},
                headers=bearer(OPERATE))
    with session_scope(world.factory) as session:
        [event] = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "retry")).all()
        gate_runs = session.scalars(select(models.Run.id).where(
            models.Run.candidate_id == cid)).all()
    assert (event.actor, event.subject) == ("token:olga", f"candidate {cid}")
    assert event.detail["reason"] == "disk replaced"
    assert sorted(event.detail["runs"]) == sorted(gate_runs)
    assert "retries exhausted" in event.detail["after"]


def test_nothing_to_retry_is_a_409(client: TestClient, world: World) -> None:
    cid = _queued(world)  # boarded: gating, its gate run pending, nothing has failed
    response = client.post(f"/api/v1/candidates/{cid}/retry", json={"reason": "why not"},
                           headers=bearer(OPERATE))
    assert response.status_code == 409
    assert "has nothing to retry" in response.json()["detail"]


def test_a_retry_needs_an_operate_token(client: TestClient, world: World) -> None:
    cid = exhausted(world)
    none = client.post(f"/api/v1/candidates/{cid}/retry", json={"reason": "x"})
    read = client.post(f"/api/v1/candidates/{cid}/retry", json={"reason": "x"},
                       headers=bearer(READ))
    assert (none.status_code, read.status_code) == (401, 403)
    assert _candidate(world, cid).retried_at is None


def test_a_retry_without_a_reason_is_a_422(client: TestClient, world: World) -> None:
    cid = exhausted(world)
    response = client.post(f"/api/v1/candidates/{cid}/retry", json={"reason": " "},
                           headers=bearer(OPERATE))
    assert response.status_code == 422


def test_an_operator_retries_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'certifier.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    world = World(make_session_factory(engine), FakeClock())
    cid = exhausted(world)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    environ["CERTIFIER_DATA_DIR"] = str(tmp_path)

    def certifier(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "certifier", "candidate", "retry", *args],
                              capture_output=True, text=True, env=environ, timeout=60,
                              check=False)

    done = certifier(str(cid), "--reason", "lab network is back")
    again = certifier(str(cid), "--reason", "twice")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"candidate {cid}: gating; retried")
    assert _candidate(world, cid).retried_at is not None
    assert again.returncode == 1 and "nothing to retry" in again.stderr
    engine.dispose()


# Stopping culprit finding: a search that holds the train ------------------------------------


def searching(factory: sessionmaker[Session], clock: FakeClock) -> tuple[Upstreams, int, list[int]]:
    """A rejected candidate whose culprit finding runs (three components moved, a neutron commit
    breaks the ping check): (the world, the candidate, the search's pending run)."""
    up = Upstreams(factory, clock)
    cid, _, rejecting = _reject(up)
    return up, cid, rejecting.runs_created


def test_stopping_culprit_finding_answers_the_rejected_candidate_and_is_audited(
    client: TestClient, db_factory: sessionmaker[Session], clock: FakeClock,
    dispatcher: RecordingDispatcher,
) -> None:
    _, cid, pending = searching(db_factory, clock)
    answer = client.post(f"/api/v1/candidates/{cid}/culprit/stop",
                         json={"reason": "gate1 stays busy"}, headers=bearer(OPERATE))
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "rejected"
    assert "culprit finding stopped by token:olga: gate1 stays busy" in [
        e["message"] for e in answer.json()["excuses"]]
    assert dispatcher.reconciles >= 1  # the next pass lets the train move on at once
    detail = client.get(f"/api/v1/candidates/{cid}").json()
    assert detail["bisection"]["status"] == "stopped"
    assert detail["bisection"]["reason"] == "stopped by token:olga: gate1 stays busy"
    assert not [r for r in detail["runs"] if r["kind"] == "bisect"]  # withdrawn
    event = client.get("/api/v1/audit?action=culprit").json()["items"][0]
    assert (event["actor"], event["subject"]) == ("token:olga", f"candidate {cid}")
    assert event["detail"]["withdrawn_runs"] == pending


def test_stopping_culprit_finding_when_none_runs_is_a_409_and_an_unknown_candidate_a_404(
    client: TestClient, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    _, cid, _ = searching(db_factory, clock)
    path = f"/api/v1/candidates/{cid}/culprit/stop"
    assert client.post(path, json={"reason": "x"}, headers=bearer(OPERATE)).status_code == 200
    again = client.post(path, json={"reason": "x"}, headers=bearer(OPERATE))
    assert again.status_code == 409
    assert "has no culprit finding running: it was already stopped" in again.json()["detail"]
    unknown = client.post("/api/v1/candidates/999999/culprit/stop", json={"reason": "x"},
                          headers=bearer(OPERATE))
    assert unknown.status_code == 404 and "no candidate 999999" in unknown.json()["detail"]


def test_stopping_culprit_finding_needs_an_operate_token_and_a_reason(
    client: TestClient, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    up, cid, _ = searching(db_factory, clock)
    path = f"/api/v1/candidates/{cid}/culprit/stop"
    assert client.post(path, json={"reason": "x"}).status_code == 401
    assert client.post(path, json={"reason": "x"}, headers=bearer(READ)).status_code == 403
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 2001},
                 {"reason": "x", "force": True}):
        refused = client.post(path, json=body, headers=bearer(OPERATE))
        assert refused.status_code == 422, body
        assert refused.json()["errors"], body
    assert client.post("/api/v1/candidates/0/culprit/stop", json={"reason": "x"},
                       headers=bearer(OPERATE)).status_code == 422
    state = up.candidate(cid).bisection
    assert state is not None and state.status == "running"  # nothing refused touched it


def test_stopping_culprit_finding_is_documented_with_its_error_answers(
    client: TestClient,
) -> None:
    operation = client.get("/openapi.json").json()["paths"][
        "/api/v1/candidates/{candidate_id}/culprit/stop"]["post"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(operation["responses"])
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/StopCulpritRequest")
