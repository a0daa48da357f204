"""Culprit finding through the reconcile loop, on SQLite and PostgreSQL, with a fake clock.

A world of three components reaches known-good #1 through the real services; then every
component moves on, one commit of ``neutron`` breaks a check, and the candidate is rejected. The
runs' outcomes depend only on the combination each run deploys (``runs.plan``), as a real
testbed's would: whatever contains a broken commit fails. The tests follow what the pipeline
promises: bisect runs named by their own combination, a ``culprit`` excuse with its evidence,
the next candidate waiting meanwhile and then holding the culprit's component at its last good
commit; infra errors retried and then inconclusive; the setting that turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.bisection import BisectPolicy
from certifier.domain.clock import FakeClock
from certifier.domain.judgement import JudgementPolicy
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import actions, knowngood, runs, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ConfigError, Settings, parse_config_text
from tests.api.factories import SOAK, World, passing_results
from workers.context import WorkerContext

BISECT = BisectPolicy(max_steps=12, max_infra_retries=1, infra_backoff=timedelta(seconds=30))
ON = scheduler.SchedulerPolicy(soak=SOAK, bisection=BISECT)
OFF = scheduler.SchedulerPolicy(soak=SOAK, bisection=None)


def failing() -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False,
                                                    "100 % loss")])]


class Upstreams:
    """Three components at known-good #1; ``broken`` holds the shas that break a check."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.clock = FakeClock()
        self.world = World(factory, self.clock)
        self.factory = factory
        for name in ("cinder", "neutron", "nova"):
            self.world.component(name)
        self.world.testbed("gate1")
        self.good = {name: self.world.commit(name, f"{name}-0") for name in
                     ("cinder", "neutron", "nova")}
        self.world.promote_heads()
        self.broken: set[str] = set()
        self.infra: set[str] = set()  # shas whose runs hit testbed errors

    def push(self, name: str, *seeds: str, breaks_from: str | None = None) -> list[str]:
        """Commits on ``name``'s branch, oldest first; from ``breaks_from`` on they break it."""
        shas = []
        for seed in seeds:
            shas.append(self.world.commit(name, seed))
            if breaks_from is not None and seed >= breaks_from:
                self.broken.add(shas[-1])
        return shas

    def reconcile(self, policy: scheduler.SchedulerPolicy = ON) -> scheduler.ReconcileReport:
        with session_scope(self.factory) as session:
            return scheduler.reconcile(session, self.clock, policy, self.world.dispatcher)

    def execute(self, run_ids: Iterable[int]) -> None:
        """Claim and finish runs the way a testbed would judge the combination each deploys."""
        for run_id in run_ids:
            with session_scope(self.factory) as session:
                shas = {c.sha for c in runs.plan(session, run_id).components}
            self.world.claim(run_id)
            self.clock.advance(timedelta(minutes=5))
            with session_scope(self.factory) as session:
                if shas & self.infra:
                    runs.finish(session, run_id, [], self.clock, JudgementPolicy(),
                                setup_error="testbed: could not create namespace")
                else:
                    runs.finish(session, run_id, failing() if shas & self.broken
                                else passing_results(), self.clock, JudgementPolicy())

    def until_quiet(self, policy: scheduler.SchedulerPolicy = ON,
                    passes: int = 30) -> list[scheduler.ReconcileReport]:
        """Reconcile and run what each pass asks for, until a pass asks for nothing."""
        reports = []
        for _ in range(passes):
            report = self.reconcile(policy)
            reports.append(report)
            if not report.runs_created:
                return reports
            self.execute(report.runs_created)
            self.clock.advance(timedelta(minutes=1))
        raise AssertionError("the pipeline never settled")

    def candidate(self, cid: int) -> models.Candidate:
        with session_scope(self.factory) as session:
            cand = session.get_one(models.Candidate, cid)
            session.refresh(cand, ["runs"])
            session.expunge(cand)
            return cand

    def combination(self, cid: int) -> dict[str, str]:
        with session_scope(self.factory) as session:
            cand = session.get_one(models.Candidate, cid)
            return dict(knowngood.combination_of(session, cand.combination_hash))

    def audit(self, action: str) -> list[models.AuditEvent]:
        with session_scope(self.factory) as session:
            events = list(session.scalars(select(models.AuditEvent).where(
                models.AuditEvent.action == action).order_by(models.AuditEvent.id)))
            session.expunge_all()
            return events


@pytest.fixture
def up(session_factory: sessionmaker[Session]) -> Upstreams:
    return Upstreams(session_factory)


def _reject(up: Upstreams, policy: scheduler.SchedulerPolicy = ON,
            ) -> tuple[int, list[str], scheduler.ReconcileReport]:
    """Every component moves on; neutron's third of five new commits breaks the ping check.
    Returns the rejected candidate, neutron's new commits and the pass that rejected it (its
    gate may be rechecked first: a failed check is not trusted on one run)."""
    up.push("cinder", "cinder-1")
    neutron = up.push("neutron", "neutron-1", "neutron-2", "neutron-3", "neutron-4",
                      "neutron-5", breaks_from="neutron-3")
    up.push("nova", "nova-1")
    cid, report = _until_rejected(up, policy)
    return cid, neutron, report


def _until_rejected(up: Upstreams, policy: scheduler.SchedulerPolicy = ON,
                    ) -> tuple[int, scheduler.ReconcileReport]:
    """Board the heads and run the gate until the candidate is rejected."""
    report = up.reconcile(policy)
    assert len(report.boarded) == 1
    cid = report.boarded[0]
    for _ in range(5):
        up.execute(report.runs_created)
        up.clock.advance(timedelta(minutes=1))
        report = up.reconcile(policy)
        if report.rejected:
            assert report.rejected == [cid]
            return cid, report
    raise AssertionError("the candidate was never rejected")


def test_a_rejection_is_bisected_to_the_first_bad_commit_with_evidence(up: Upstreams) -> None:
    cid, neutron, rejecting = _reject(up)
    assert rejecting.bisections_started == [cid] and len(rejecting.runs_created) == 1
    up.execute(rejecting.runs_created)
    reports = up.until_quiet()
    assert [r.bisections_ended for r in reports if r.bisections_ended] == [[cid]]

    cand = up.candidate(cid)
    state = cand.bisection
    assert state is not None and state["status"] == "found"
    result = state["result"]
    assert (result["component"], result["sha"], result["last_good"]) == (
        "neutron", neutron[2], neutron[1])
    assert result["carriers"] == neutron[2:]
    assert state["ranges"]["neutron"] == neutron

    bisect_runs = [r for r in cand.runs if r.kind == "bisect"]
    assert [r.attempt for r in bisect_runs] == list(range(1, len(bisect_runs) + 1))
    assert all(r.combination_hash and r.combination_hash != cand.combination_hash
               for r in bisect_runs)
    assert [s["run"] for s in state["steps"]] == [r.id for r in bisect_runs]
    assert [s["phase"] for s in state["steps"][:3]] == ["swap"] * 3
    assert [s["verdict"] for s in state["steps"][:3]] == ["failed", "passed", "failed"]
    assert len(bisect_runs) <= 3 + 3  # three swaps, then log2 of five commits
    assert set(result["evidence"]) <= {r.id for r in cand.runs}

    excuse = next(e for e in cand.excuses if e["kind"] == "culprit")
    assert excuse["subject"] == "component neutron"
    assert neutron[2][:12] in excuse["message"] and "neutron-3" in excuse["message"]
    assert (excuse["data"]["sha"], excuse["data"]["last_good"]) == (neutron[2], neutron[1])
    assert excuse["data"]["evidence"] == result["evidence"]
    assert cand.excuses[0]["kind"] == "check"  # the rejection's own reason stays first
    culprit = up.audit("culprit")
    assert [(e.subject, e.detail["status"], e.detail["sha"]) for e in culprit] == [
        (f"candidate {cid}", "found", neutron[2])]


def test_the_next_candidate_waits_for_culprit_finding_then_holds_the_last_good_commit(
    up: Upstreams,
) -> None:
    cid, neutron, report = _reject(up)  # the pass also starts culprit finding
    nova = up.push("nova", "nova-2")
    waiting = up.reconcile()
    assert len(waiting.formed) == 1 and waiting.boarded == []
    queued = up.candidate(waiting.formed[0])
    assert queued.state == "queued"
    assert any(e["kind"] == "culprit_wait" and f"waiting for culprit finding of #{cid}"
               in e["message"] for e in queued.excuses)

    up.execute(report.runs_created)
    reports = up.until_quiet()
    ended = next(r for r in reports if r.bisections_ended)
    assert ended.bisections_ended == [cid]
    # The pass that named the culprit formed the next candidate holding it, and boarded it.
    assert ended.superseded == [queued.id] and len(ended.formed) == 1
    assert ended.boarded == ended.formed
    nxt = ended.formed[0]
    assert up.combination(nxt) == {**up.combination(cid), "neutron": neutron[1],
                                   "nova": nova[0]}
    hold = up.audit("hold")[-1]
    assert hold.detail == {"candidate": nxt, "culprit": neutron[-1], "held_at": neutron[1],
                           "blamed_by": cid}
    assert up.candidate(nxt).state in ("gating", "soaking")
    assert not any(e["kind"] == "culprit_wait" for e in up.candidate(nxt).excuses)


def test_a_newer_neutron_head_ends_the_hold(up: Upstreams) -> None:
    _, _, report = _reject(up)
    up.execute(report.runs_created)
    up.until_quiet()
    fix = up.push("neutron", "neutron-6")
    up.clock.advance(SOAK.duration)
    report = up.until_quiet()
    formed = [c for r in report for c in r.formed]
    assert formed and up.combination(formed[-1])["neutron"] == fix[0]


def test_a_single_component_moved_by_several_commits_is_bisected_without_swapping(
    up: Upstreams,
) -> None:
    neutron = up.push("neutron", "neutron-1", "neutron-2", "neutron-3", breaks_from="neutron-2")
    cid, report = _until_rejected(up)
    up.execute(report.runs_created)
    up.until_quiet()
    state = up.candidate(cid).bisection
    assert state is not None and state["status"] == "found"
    assert {s["phase"] for s in state["steps"]} == {"bisect"}
    assert (state["result"]["sha"], state["result"]["last_good"]) == (neutron[1], neutron[0])


def test_a_single_commit_rejection_needs_no_culprit_finding(up: Upstreams) -> None:
    up.push("neutron", "neutron-1", breaks_from="neutron-1")
    cid, report = _until_rejected(up)
    assert report.bisections_started == [] and report.runs_created == []
    assert up.candidate(cid).bisection is None


def test_infra_errors_are_retried_then_culprit_finding_is_inconclusive_and_isolation_follows(
    up: Upstreams,
) -> None:
    up.infra.add(up.good["cinder"])  # the first swap-back (cinder at known-good) never deploys
    cid, _, report = _reject(up)
    up.execute(report.runs_created)
    reports = []
    for _ in range(10):
        reports += up.until_quiet()
        up.clock.advance(timedelta(minutes=10))  # past the retry's backoff
        if any(r.bisections_ended for r in reports):
            break
    cand = up.candidate(cid)
    state = cand.bisection
    assert state is not None and state["status"] == "inconclusive"
    tries = 1 + BISECT.max_infra_retries
    assert [s["verdict"] for s in state["steps"]] == ["infra_error"] * tries
    assert "testbed or tool errors 2 times" in state["reason"]
    assert any(e["kind"] == "bisection" and "inconclusive" in e["message"] for e in cand.excuses)
    assert [e.detail["status"] for e in up.audit("culprit")] == ["inconclusive"]
    isolating = up.audit("isolate")
    assert isolating and isolating[-1].subject == "component cinder"


def test_turned_off_a_rejection_isolates_as_before(up: Upstreams) -> None:
    cid, _, report = _reject(up, OFF)
    assert report.bisections_started == [] and report.runs_created == []
    up.until_quiet(OFF)  # the next pass forms the isolating candidate
    assert up.candidate(cid).bisection is None
    assert not any(r.kind == "bisect" for r in up.candidate(cid).runs)
    assert up.audit("isolate")[0].subject == "component cinder"


def test_turning_it_off_stops_a_running_search_and_withdraws_its_pending_run(
    up: Upstreams,
) -> None:
    cid, _, rejecting = _reject(up)
    pending = rejecting.runs_created
    assert len(pending) == 1
    report = up.reconcile(OFF)
    assert report.bisections_ended == [cid]
    state = up.candidate(cid).bisection
    assert state is not None and state["status"] == "stopped"
    assert state["steps"][0]["withdrawn"] is True
    with session_scope(up.factory) as session:  # (SQLite may give its id to a new run)
        assert session.scalars(select(models.Run).where(
            models.Run.candidate_id == cid, models.Run.kind == "bisect")).all() == []
    assert up.audit("culprit")[-1].detail["withdrawn_runs"] == pending


def test_the_api_and_the_candidate_page_show_the_culprit_with_its_evidence(
    up: Upstreams, tmp_path: Path,
) -> None:
    cid, neutron, report = _reject(up)
    up.execute(report.runs_created)
    up.until_quiet()
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(),
                     clock=up.clock, session_factory=up.factory)
    with TestClient(app) as client:
        detail = client.get(f"/api/v1/candidates/{cid}").json()
        excuses = client.get(f"/api/v1/candidates/{cid}/excuses").json()
        page = client.get(f"/candidates/{cid}").text
        unknown = client.get("/api/v1/candidates/999999/excuses")

    found = detail["bisection"]
    assert found["status"] == "found" and found["commits"]["neutron"] == len(neutron)
    assert (found["culprit"]["sha"], found["culprit"]["last_good"]) == (neutron[2], neutron[1])
    steps = found["steps"]
    assert [s["run"] for s in steps] == [r["id"] for r in detail["runs"] if r["kind"] == "bisect"]
    assert all(s["verdict"] in ("passed", "failed") and s["combination"] for s in steps)
    assert steps[1]["combination"]["neutron"] == up.good["neutron"]  # neutron swapped back
    assert excuses["bisection"] == found
    assert any(e["kind"] == "culprit" for e in excuses["excuses"])
    assert unknown.status_code == 404
    assert 'id="culprit-finding"' in page
    assert f'title="{neutron[2]}"' in page and f'title="{neutron[1]}"' in page
    for run_id in found["culprit"]["evidence"]:
        assert f'href="#run-{run_id}"' in page and f'id="run-{run_id}"' in page
    assert "changed only" not in page  # the single-change note would blame the wrong commit


def test_a_candidate_re_queued_by_a_waiver_stops_its_culprit_finding(up: Upstreams) -> None:
    cid, _, report = _reject(up)
    with session_scope(up.factory) as session:
        _, requeued = actions.waive(session, up.clock, cid, "token:alice", "ping.h1 reaches h2",
                                    "known lab issue", None)
    assert requeued
    stopped = up.reconcile()
    assert stopped.bisections_ended == [cid]
    state = up.candidate(cid).bisection
    assert state is not None and state["status"] == "stopped"
    assert state["reason"] == "the candidate is queued again"
    assert up.audit("culprit")[-1].detail["withdrawn_runs"] == report.runs_created


def test_the_config_file_sets_culprit_finding_for_the_workers_scheduler(tmp_path: Path) -> None:
    text = "soak: {max_infra_retries: 3}\nbisection: {max_steps: 9}\n"
    on = WorkerContext(Settings(data_dir=tmp_path, config=parse_config_text(text)))
    assert on.scheduler_policy.bisection == BisectPolicy(max_steps=9, max_infra_retries=3)
    off = parse_config_text("bisection: {enabled: false}")
    assert WorkerContext(Settings(data_dir=tmp_path, config=off)).scheduler_policy.bisection is None
    with pytest.raises(ConfigError, match=r"bisection\.max_steps"):
        parse_config_text("bisection: {max_steps: 0}")
