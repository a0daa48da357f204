"""Culprit finding through the reconcile loop, on SQLite and PostgreSQL, with a fake clock.

A world of three components reaches known-good #1 through the real services; then every
component moves on, one commit of ``neutron`` breaks a check, and the candidate is rejected. The
runs' outcomes depend only on the combination each run deploys (``runs.plan``), as a real
testbed's would: whatever contains a broken commit fails. The tests follow what the pipeline
promises: a first bisect run that reproduces the rejection (or ends the search when it does not),
bisect runs named by their own combination, a ``culprit`` excuse with its evidence, the next
candidate waiting meanwhile and then holding the culprit's component at its last good commit;
infra errors retried and then inconclusive, a busy testbed waited for; no search from a
known-good that is no longer the current one; the setting that turns it off, and a stop that
spares a run a worker already took.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.bisection import BisectPolicy
from certifier.domain.bisection_state import Record
from certifier.domain.clock import FakeClock
from certifier.domain.environment import EnvironmentPolicy
from certifier.domain.judgement import JudgementPolicy, Verdict
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import actions, bisection, knowngood, runs, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ConfigError, NotificationsConfig, Settings, parse_config_text
from tests.factories import SOAK, World, passing_results
from tests.pipeline import test_detector_pipeline as detector
from workers.context import WorkerContext

# The search's shape, one run per step; the confirmation of failing steps is tested on its own.
BISECT = BisectPolicy(max_steps=12, confirm_failures=False, max_infra_retries=1,
                      infra_backoff=timedelta(seconds=30))
CONFIRMING = scheduler.SchedulerPolicy(
    soak=SOAK, bisection=BisectPolicy(max_steps=20, infra_backoff=timedelta(seconds=30)))
ON = scheduler.SchedulerPolicy(soak=SOAK, bisection=BISECT)
OFF = scheduler.SchedulerPolicy(soak=SOAK, bisection=None)
PARALLEL = scheduler.SchedulerPolicy(soak=SOAK, bisection=BISECT, parallel_gates=2)
BUSY_HOST = {"version": 1, "host": {}, "spans": {},  # above the default ceiling of 50 %
             "probes": {"start": {"background": {"cpu_pressure_pct": 90.0}}}}


def stored(state: Record | None) -> dict[str, Any] | None:
    """A candidate's culprit finding as its column stores it (the JSON shape never changed)."""
    return None if state is None else state.as_dict()


def failing() -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False,
                                                    "100 % loss")])]


class Upstreams:
    """Three components at known-good #1; ``broken`` holds the shas that break a check."""

    def __init__(self, factory: sessionmaker[Session], clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()  # an app's, when a test asks it too
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
        self.busy: set[str] = set()  # shas whose runs find the testbed too busy

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
                if shas & self.infra:  # on a busy host too, when also in ``busy``
                    runs.finish(session, run_id, [], self.clock, JudgementPolicy(),
                                setup_error="testbed: could not create namespace",
                                environment=BUSY_HOST if shas & self.busy else None,
                                environment_policy=EnvironmentPolicy())
                elif shas & self.busy:  # the start probe saw the host 90 % cpu-starved
                    runs.finish(session, run_id, passing_results(), self.clock,
                                JudgementPolicy(), environment=BUSY_HOST,
                                environment_policy=EnvironmentPolicy())
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
    state = stored(cand.bisection)
    assert state is not None and state["status"] == "found"
    result = state["result"]
    assert (result["component"], result["sha"], result["last_good"]) == (
        "neutron", neutron[2], neutron[1])
    assert result["carriers"] == neutron[2:]
    assert state["ranges"]["neutron"] == neutron

    bisect_runs = [r for r in cand.runs if r.kind == "bisect"]
    assert [r.attempt for r in bisect_runs] == list(range(1, len(bisect_runs) + 1))
    reproduce, *probes = bisect_runs  # the first tests the candidate's own combination again
    assert reproduce.combination_hash == cand.combination_hash
    assert all(r.combination_hash and r.combination_hash != cand.combination_hash
               for r in probes)
    assert [s["run"] for s in state["steps"]] == [r.id for r in bisect_runs]
    assert [s["phase"] for s in state["steps"][:4]] == ["reproduce"] + ["swap"] * 3
    assert [s["verdict"] for s in state["steps"][:4]] == ["failed", "failed", "passed", "failed"]
    assert len(bisect_runs) <= 1 + 3 + 3  # reproduce, three swaps, then log2 of five commits
    assert set(result["evidence"]) <= {r.id for r in bisect_runs}  # never the rejection alone

    excuse = next(e for e in cand.excuses if e.kind == "culprit")
    assert excuse.subject == "component neutron"
    assert neutron[2][:12] in excuse.message and "neutron-3" in excuse.message
    assert (excuse.data["sha"], excuse.data["last_good"]) == (neutron[2], neutron[1])
    assert excuse.data["evidence"] == result["evidence"]
    assert cand.excuses[0].kind == "check"  # the rejection's own reason stays first
    culprit = up.audit("culprit")
    assert [(e.subject, e.detail["status"], e.detail["sha"]) for e in culprit] == [
        (f"candidate {cid}", "found", neutron[2])]


def test_with_confirmation_every_failing_step_is_seen_twice_before_it_counts(
        up: Upstreams) -> None:
    cid, neutron, rejecting = _reject(up, CONFIRMING)
    up.execute(rejecting.runs_created)
    up.until_quiet(CONFIRMING)

    state = stored(up.candidate(cid).bisection)
    assert state is not None and state["status"] == "found"
    assert (state["result"]["sha"], state["result"]["last_good"]) == (neutron[2], neutron[1])
    failed: dict[str, list[list[str]]] = {}
    for step in state["steps"]:
        key = repr(sorted(step["combination"].items()))
        if step["verdict"] == "failed":
            failed.setdefault(key, []).append(step["failures"])
        else:
            assert key not in failed  # a combination that failed never passed after
    assert failed and all(len(seen) == 2 for seen in failed.values())
    assert all(seen[0] == seen[1] == ["check:ping.h1 reaches h2"] for seen in failed.values())


def test_the_next_candidate_waits_for_culprit_finding_then_holds_the_last_good_commit(
    up: Upstreams,
) -> None:
    cid, neutron, report = _reject(up)  # the pass also starts culprit finding
    nova = up.push("nova", "nova-2")
    waiting = up.reconcile()
    assert len(waiting.formed) == 1 and waiting.boarded == []
    queued = up.candidate(waiting.formed[0])
    assert queued.state == "queued"
    assert any(e.kind == "culprit_wait" and f"waiting for culprit finding of #{cid}"
               in e.message for e in queued.excuses)

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
    assert not any(e.kind == "culprit_wait" for e in up.candidate(nxt).excuses)


def test_a_newer_neutron_head_ends_the_hold(up: Upstreams) -> None:
    _, _, report = _reject(up)
    up.execute(report.runs_created)
    up.until_quiet()
    fix = up.push("neutron", "neutron-6")
    up.clock.advance(SOAK.duration)
    reports = up.until_quiet()
    formed = [c for r in reports for c in r.formed]
    assert formed and up.combination(formed[-1])["neutron"] == fix[0]


def test_a_single_component_moved_by_several_commits_is_bisected_without_swapping(
    up: Upstreams,
) -> None:
    neutron = up.push("neutron", "neutron-1", "neutron-2", "neutron-3", breaks_from="neutron-2")
    cid, report = _until_rejected(up)
    up.execute(report.runs_created)
    up.until_quiet()
    state = stored(up.candidate(cid).bisection)
    assert state is not None and state["status"] == "found"
    assert state["steps"][0]["phase"] == "reproduce"
    assert {s["phase"] for s in state["steps"][1:]} == {"bisect"}
    assert (state["result"]["sha"], state["result"]["last_good"]) == (neutron[1], neutron[0])


def test_a_single_commit_rejection_needs_no_culprit_finding(up: Upstreams) -> None:
    up.push("neutron", "neutron-1", breaks_from="neutron-1")
    cid, report = _until_rejected(up)
    assert report.bisections_started == [] and report.runs_created == []
    assert up.candidate(cid).bisection is None


@pytest.mark.parametrize("busy_too", [False, True], ids=["idle", "busy-too"])
def test_infra_errors_are_retried_then_culprit_finding_is_inconclusive_and_isolation_follows(
    up: Upstreams, busy_too: bool,
) -> None:
    """A testbed that fails to build is an error whether or not the host is also busy: the
    retries run out, and the search ends."""
    up.infra.add(up.good["cinder"])  # the first swap-back (cinder at known-good) never deploys
    if busy_too:
        up.busy.add(up.good["cinder"])
    cid, _, report = _reject(up)
    up.execute(report.runs_created)
    reports = []
    for _ in range(10):
        reports += up.until_quiet()
        up.clock.advance(timedelta(minutes=10))  # past the retry's backoff
        if any(r.bisections_ended for r in reports):
            break
    cand = up.candidate(cid)
    state = stored(cand.bisection)
    assert state is not None and state["status"] == "inconclusive"
    tries = 1 + BISECT.max_infra_retries
    assert [s["verdict"] for s in state["steps"]] == ["failed"] + ["infra_error"] * tries
    assert "testbed or tool errors 2 times" in state["reason"]
    assert any(e.kind == "bisection" and "inconclusive" in e.message for e in cand.excuses)
    assert [e.detail["status"] for e in up.audit("culprit")] == ["inconclusive"]
    isolating = up.audit("isolate")
    assert isolating and isolating[-1].subject == "component cinder"


def test_a_busy_testbed_delays_culprit_finding_but_never_ends_it(up: Upstreams) -> None:
    """Bisect runs the environment check refuses wait for the testbed to calm down, as gate
    runs do: more of them than the retry budget and the step limit allow, and the search still
    finds the culprit once the testbed is quiet."""
    up.busy.add(up.good["cinder"])  # the first swap-back (cinder at known-good) is refused
    cid, _, report = _reject(up)
    up.execute(report.runs_created)
    refusals = BISECT.max_infra_retries + BISECT.max_steps + 2
    for _ in range(refusals):
        up.until_quiet()
        up.clock.advance(timedelta(minutes=10))  # past the backoff (at most 10 minutes)
    cand = up.candidate(cid)
    state = stored(cand.bisection)
    assert state is not None and state["status"] == "running"
    busy_steps = [s for s in state["steps"] if s.get("busy")]
    assert len(busy_steps) >= refusals - 1
    assert all(s["verdict"] == "infra_error" for s in busy_steps)
    progress = [e for e in cand.excuses if e.kind == "bisection"]
    assert len(progress) == 1 and "calm down" in progress[0].message, progress
    assert "step 1 of at most" in progress[0].message  # only the reproducing run counted
    assert progress[0].data["busy_runs"] == len(busy_steps)
    up.busy.clear()  # the testbed calms down
    reports = []
    for _ in range(10):
        reports += up.until_quiet()
        up.clock.advance(timedelta(minutes=10))
        if any(r.bisections_ended for r in reports):
            break
    state = stored(up.candidate(cid).bisection)
    assert state is not None and state["status"] == "found", state.get("reason")
    assert state["result"]["component"] == "neutron"
    assert not up.audit("isolate")


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
    state = stored(up.candidate(cid).bisection)
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
    assert steps[0]["phase"] == "reproduce" and steps[0]["combination"] == up.combination(cid)
    assert steps[2]["combination"]["neutron"] == up.good["neutron"]  # neutron swapped back
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
    state = stored(up.candidate(cid).bisection)
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


def test_a_rejection_that_does_not_reproduce_in_a_bisect_run_ends_inconclusive_and_isolates(
    up: Upstreams,
) -> None:
    cid, _, rejecting = _reject(up)
    [reproduce] = rejecting.runs_created
    up.broken.clear()  # what failed the gate does not show again (the lab, not the code)
    up.execute([reproduce])
    reports = up.until_quiet()

    cand = up.candidate(cid)
    state = stored(cand.bisection)
    assert state is not None and state["status"] == "inconclusive"
    assert [s["run"] for s in state["steps"]] == [reproduce]  # no probe after it
    assert state["steps"][0]["verdict"] == "passed"
    assert state["reason"].startswith("the failure did not reproduce in a gate run: ")
    assert f"passed in run {reproduce}" in state["reason"]
    assert f"gate run {state['failed_run']}" in state["reason"]
    assert bisection.bisected(cand.bisection) is None  # no culprit to hold
    assert any(e.kind == "bisection" and "did not reproduce" in e.message
               for e in cand.excuses)
    assert [e.detail["status"] for e in up.audit("culprit")] == ["inconclusive"]
    assert [r.bisections_ended for r in reports if r.bisections_ended] == [[cid]]
    isolating = up.audit("isolate")  # the pipeline falls back to isolation, as before
    assert isolating and isolating[-1].subject == "component cinder"


def test_a_regression_only_the_detector_sees_is_not_blamed_on_the_candidates_own_commit(
    session_factory: sessionmaker[Session],
) -> None:
    """A 5 % bandwidth loss over two commits, found by the statistical detector over a soak:
    one bisect run judged by the margin passes it, so the search must not conclude that the
    candidate's head is the culprit (every probe would pass too)."""
    world = World(session_factory, FakeClock())
    world.component("nova")
    world.testbed("gate1")
    rng = random.Random(7)
    detector._known_good(world, rng)
    world.commit("nova", "n2")
    world.commit("nova", "n3-slower")
    cid = detector._soak(world, rng, level=9.5)

    with session_scope(session_factory) as session:
        cand = session.get_one(models.Candidate, cid)
        assert cand.state == "rejected"
        state = stored(cand.bisection)
        assert state is not None and state["status"] == "running"
        rejecting = session.get_one(models.Run, state["failed_run"])
        assert rejecting.kind == "soak" and rejecting.verdict == "regressed"
        [reproduce] = [s["run"] for s in state["steps"]]
    assert detector._run(world, reproduce, 9.5) is Verdict.PASSED  # within the margin
    detector._reconcile(world)

    with session_scope(session_factory) as session:
        cand = session.get_one(models.Candidate, cid)
        state = stored(cand.bisection)
        assert state is not None and state["status"] == "inconclusive"
        assert state["result"] is None and len(state["steps"]) == 1
        assert (f"soak run {rejecting.id}, by the statistical detector rejected it"
                in state["reason"])
        assert not any(r.kind == "bisect" and r.state == "pending" for r in cand.runs)


def _two_gating(up: Upstreams) -> tuple[int, int, int]:
    """With two gates at once: candidate A (cinder moves, fine) and then B (every component
    moves, neutron breaks) both gating on known-good #1. Returns A, B and B's gate run."""
    up.push("cinder", "cinder-1")
    first = up.reconcile(PARALLEL)
    [a] = first.boarded
    up.push("neutron", "neutron-1", "neutron-2", "neutron-3", breaks_from="neutron-2")
    up.push("nova", "nova-1")
    second = up.reconcile(PARALLEL)
    [b] = second.boarded
    [b_gate] = second.runs_created
    up.execute(first.runs_created)  # A's gate passes
    return a, b, b_gate


def _promote(up: Upstreams, cid: int) -> None:
    """Carry candidate ``cid`` through its soak to the next known-good, running only its runs."""
    for _ in range(10):
        up.execute(sorted(_runs_of(up, cid, state="pending")))
        up.clock.advance(SOAK.duration)
        if cid in up.reconcile(PARALLEL).promoted:
            return
    raise AssertionError(f"candidate {cid} was never promoted")


def _runs_of(up: Upstreams, cid: int, state: str | None = None) -> set[int]:
    return {r.id for r in up.candidate(cid).runs if state in (None, r.state)}


def test_a_candidate_formed_on_a_known_good_that_moved_is_not_searched(up: Upstreams) -> None:
    a, b, b_gate = _two_gating(up)
    _promote(up, a)  # known-good #2 while B still gates on #1
    up.execute([b_gate])
    report = up.reconcile(PARALLEL)
    assert report.rejected == [b]
    assert report.bisections_started == [] and report.runs_created == []

    cand = up.candidate(b)
    state = stored(cand.bisection)
    assert cand.base_version == 1
    assert state is not None and state["status"] == "inconclusive" and state["steps"] == []
    assert "formed on known-good #1 and the known-good is #2 now" in state["reason"]
    assert not any(r.kind == "bisect" for r in cand.runs)
    assert any(e.kind == "bisection" and "#2 now" in e.message for e in cand.excuses)
    assert [e.detail["status"] for e in up.audit("culprit")] == ["inconclusive"]


def test_a_search_stops_when_the_known_good_moves_under_it(up: Upstreams) -> None:
    a, b, b_gate = _two_gating(up)
    up.execute([b_gate])
    rejecting = up.reconcile(PARALLEL)  # B rejected on #1, still current: the search starts
    assert rejecting.bisections_started == [b]
    [reproduce] = set(rejecting.runs_created) & _runs_of(up, b)
    _promote(up, a)
    stopped = up.reconcile(PARALLEL)

    assert stopped.bisections_ended == [b] and stopped.runs_created == []
    state = stored(up.candidate(b).bisection)
    assert state is not None and state["status"] == "stopped"
    assert "formed on known-good #1 and the known-good is #2 now" in state["reason"]
    assert state["steps"][0]["run"] == reproduce and state["steps"][0]["withdrawn"] is True
    assert up.audit("culprit")[-1].detail["withdrawn_runs"] == [reproduce]


def test_stopping_spares_a_bisect_run_that_a_worker_claimed_meanwhile(up: Upstreams) -> None:
    cid, _, rejecting = _reject(up)
    [run_id] = rejecting.runs_created
    with session_scope(up.factory) as session:
        cand = session.get_one(models.Candidate, cid)
        assert [r.state for r in cand.runs if r.kind == "bisect"] == ["pending"]  # as read
        up.world.claim(run_id)  # a worker takes it, in its own transaction, right then
        report = scheduler.ReconcileReport()
        report.fold(bisection.advance_all(session, up.clock, None, up.world.dispatcher))
    assert report.bisections_ended == [cid]

    state = stored(up.candidate(cid).bisection)
    assert state is not None and state["status"] == "stopped"
    assert "withdrawn" not in state["steps"][0]
    assert up.audit("culprit")[-1].detail["withdrawn_runs"] == []
    with session_scope(up.factory) as session:
        run = session.get_one(models.Run, run_id)
        assert run.state == "running"
        bed = session.get_one(models.Testbed, run.testbed)
        assert bed.leased_by_run_id == run_id  # the lease stays with the run that holds it
        runs.finish(session, run_id, passing_results(), up.clock, JudgementPolicy())
    with session_scope(up.factory) as session:
        assert session.get_one(models.Testbed, "gate1").leased_by_run_id is None


def test_the_rejection_notification_carries_the_rejections_excuses_only(
    up: Upstreams,
) -> None:
    notifying = scheduler.SchedulerPolicy(
        soak=SOAK, bisection=BISECT, notifications=NotificationsConfig.model_validate(
            {"targets": [{"name": "chat", "url": "https://chat.example.invalid/hook",
                          "secret": "not-a-real-secret"}]}))
    cid, _, rejecting = _reject(up, notifying)
    assert rejecting.bisections_started == [cid]
    assert any(e.kind == "bisection" for e in up.candidate(cid).excuses)
    with session_scope(up.factory) as session:
        [sent] = session.scalars(select(models.Notification).where(
            models.Notification.event == "rejected")).all()
        kinds = [e["kind"] for e in sent.payload["excuses"]]
    assert "check" in kinds and "bisection" not in kinds
