"""Flaky checks through the scheduler, the API and the dashboard, on SQLite and PostgreSQL.

Runs are finished with fake results, as in tests/pipeline/test_scheduler.py: a check that fails
and passes on its recheck makes the candidate soak with a ``flaky`` excuse, keeps it from being
promoted at the end of the soak, and a waiver (by the actions module or over the API) lets it go.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.promotion import SoakPolicy
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import actions, knowngood, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import CertifierConfig, Settings, SoakConfig
from tests.factories import World

SOAK = SoakPolicy(duration=timedelta(hours=1), interval=timedelta(minutes=10), min_runs=2,
                  max_infra_retries=1, recheck_failed=1)
SUBJECT = "ping.reachable h1→h2"
OPERATE = "operator-secret-0123456789"
ADMIN = "admin-secret-0123456789abc"


def ping(reach: bool) -> list[SuiteResult]:
    return [SuiteResult("ping", checks=[Check("ping", "reachable h1→h2", reach,
                                              "0 % loss" if reach else "100 % loss")])]



@pytest.fixture
def world(world: World) -> World:
    world.policy = scheduler.SchedulerPolicy(soak=SOAK)
    return world


@pytest.fixture
def client(tmp_path: Path, session_factory: sessionmaker[Session],
           clock: FakeClock) -> Iterator[TestClient]:
    soak = SoakConfig(duration=SOAK.duration, interval=SOAK.interval, min_runs=SOAK.min_runs,
                      max_infra_retries=SOAK.max_infra_retries,
                      recheck_failed=SOAK.recheck_failed)
    settings = Settings(data_dir=tmp_path, config=CertifierConfig(soak=soak),
                        api_tokens=f"olga:{OPERATE},adam/admin:{ADMIN}")
    app = create_app(settings, dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=session_factory)
    with TestClient(app) as test_client:
        yield test_client


def run(world: World, run_id: int, reach: bool = True) -> None:
    world.claim(run_id)
    world.finish(run_id, ping(reach))
    world.clock.advance(timedelta(minutes=1))


def candidate(world: World, cid: int) -> models.Candidate:
    with session_scope(world.factory) as session:
        cand = session.get_one(models.Candidate, cid)
        session.expunge(cand)
        return cand


def excuse_kinds(world: World, cid: int) -> list[str]:
    return [e.kind for e in candidate(world, cid).excuses]


def flaky_gate(world: World) -> int:
    """A candidate whose gate check failed, then passed on its recheck; now soaking."""
    world.commit("nova", "n1")
    report = world.reconcile()
    cid = report.formed[0]
    run(world, report.runs_created[-1], reach=False)
    report = world.reconcile()
    assert report.rejected == [] and len(report.runs_created) == 1, "expected a recheck"
    assert excuse_kinds(world, cid) == ["recheck"]
    run(world, report.runs_created[0], reach=True)
    report = world.reconcile()
    assert cid in report.started_soak
    for run_id in report.runs_created:  # the first soak run, created in the same pass
        run(world, run_id)
    return cid


def soak_to_the_end(world: World) -> scheduler.ReconcileReport:
    """Pass every soak run until the soak's duration is over; the report of the last pass."""
    end = world.clock.now() + SOAK.duration
    while world.clock.now() < end:
        report = world.reconcile()
        for run_id in report.runs_created:
            run(world, run_id)
        world.clock.advance(SOAK.interval)
    return world.reconcile()


def test_a_flaky_gate_check_soaks_but_is_not_promoted(world: World) -> None:
    cid = flaky_gate(world)
    assert "flaky" in excuse_kinds(world, cid)
    report = soak_to_the_end(world)
    assert report.promoted == [] and report.runs_created == []  # waits for a person
    cand = candidate(world, cid)
    assert cand.state == "soaking"
    flaky = [e for e in cand.excuses if e.kind == "flaky"]
    assert [e.subject for e in flaky] == [SUBJECT]
    with session_scope(world.factory) as session:
        gate_runs = sorted(r.id for r in session.get_one(models.Candidate, cid).runs
                           if r.kind == "gate")
    assert (flaky[0].data["failed_run"], flaky[0].data["passed_run"]) == tuple(gate_runs)
    assert cand.excuses[-1].kind == "awaiting_waiver"
    with session_scope(world.factory) as session:
        assert knowngood.current(session) is None


def test_a_waiver_through_the_actions_module_lets_the_flaky_candidate_promote(
    world: World,
) -> None:
    cid = flaky_gate(world)
    soak_to_the_end(world)
    with session_scope(world.factory) as session:
        _, requeued = actions.waive(session, world.clock, cid, "cli:olga", SUBJECT,
                                    "known flaky ping on this lab's bridge", None)
    assert requeued is False  # it never left the pipeline
    assert world.reconcile().promoted == [cid]
    assert candidate(world, cid).state == "promoted"


def test_a_flaky_soak_check_is_rechecked_at_once_and_keeps_the_candidate_soaking(
    world: World,
) -> None:
    world.commit("nova", "n1")
    report = world.reconcile()
    cid = report.formed[0]
    run(world, report.runs_created[-1])
    report = world.reconcile()
    assert cid in report.started_soak
    run(world, report.runs_created[-1], reach=False)  # the first soak run fails its check
    report = world.reconcile()
    assert report.rejected == [] and len(report.runs_created) == 1  # before the interval
    run(world, report.runs_created[0])
    world.reconcile()
    assert candidate(world, cid).state == "soaking"
    assert "flaky" in excuse_kinds(world, cid)
    report = soak_to_the_end(world)
    assert report.promoted == []
    assert excuse_kinds(world, cid)[-1] == "awaiting_waiver"


def test_the_api_and_the_dashboard_show_the_flaky_check_and_the_api_waives_it(
    world: World, client: TestClient,
) -> None:
    cid = flaky_gate(world)
    soak_to_the_end(world)
    detail = client.get(f"/api/v1/candidates/{cid}").json()
    flaky = [e for e in detail["excuses"] if e["kind"] == "flaky"]
    assert [e["subject"] for e in flaky] == [SUBJECT]
    assert "passed on its recheck" in flaky[0]["message"]
    listed = client.get(f"/api/v1/candidates/{cid}/excuses").json()["excuses"]
    assert [e["subject"] for e in listed if e["kind"] == "flaky"] == [SUBJECT]
    page = client.get(f"/candidates/{cid}").text
    assert "flaky check ping.reachable h1→h2" in page
    assert f'<option value="{SUBJECT}">' in page  # offered in the waive form

    auth = {"Authorization": f"Bearer {ADMIN}"}
    refused = client.post(f"/api/v1/candidates/{cid}/promote", json={"reason": "ship"},
                          headers=auth)
    assert refused.status_code == 409 and SUBJECT in refused.json()["detail"]

    waived = client.post(f"/api/v1/candidates/{cid}/waive",
                         json={"subject": SUBJECT, "reason": "known flaky"},
                         headers={"Authorization": f"Bearer {OPERATE}"})
    assert waived.status_code == 200, waived.text
    live = client.get(f"/candidates/{cid}").text
    assert "flaky check ping.reachable h1→h2" not in live  # the page applies the waiver too
    assert world.reconcile().promoted == [cid]
    assert client.get("/api/v1/manifest").json()["candidate"] == cid


def test_a_forced_promotion_by_hand_goes_past_a_flaky_check(
    world: World, client: TestClient,
) -> None:
    cid = flaky_gate(world)
    answer = client.post(f"/api/v1/candidates/{cid}/promote",
                         json={"reason": "hotfix", "force": True},
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    event = client.get("/api/v1/audit?action=promote").json()["items"][0]
    assert event["detail"]["forced"] is True


def test_the_recheck_budget_comes_from_the_soak_settings() -> None:
    assert Settings(config=CertifierConfig()).soak_policy().recheck_failed == 1
    none = CertifierConfig(soak=SoakConfig(recheck_failed=0))
    assert Settings(config=none).soak_policy().recheck_failed == 0
    with pytest.raises(ValidationError, match="recheck_failed"):
        SoakConfig(recheck_failed=-1)
