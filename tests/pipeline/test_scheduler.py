"""The reconcile loop and runs, on SQLite and PostgreSQL, with a fake clock: a week in seconds.

These call the services the way the tasks do (claim, finish, reconcile) and check what the
pipeline promises: idempotent passes and claims, tasks sent only after a commit, soak timing,
bounded infra retries that never reject, bootstrap without a known-good, one version per
promotion.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.promotion import SoakPolicy
from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.pipeline import actions, components, knowngood, runs, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.pipeline.errors import Conflict
from tests.factories import World, passing_results

WEEK = SoakPolicy(duration=timedelta(days=7), interval=timedelta(hours=6), min_runs=4,
                  max_infra_retries=2)



@pytest.fixture
def world(world: World) -> World:
    world.component("neutron")
    world.policy = scheduler.SchedulerPolicy(soak=WEEK)
    return world


def _candidate(world: World, cid: int) -> models.Candidate:
    with session_scope(world.factory) as session:
        cand = session.get(models.Candidate, cid)
        assert cand is not None
        session.expunge(cand)
        return cand


def _bandwidth(gbps: float) -> list[SuiteResult]:
    return [SuiteResult(
        suite="bandwidth",
        checks=[Check("bandwidth", "h1→h2 connects", True)],
        measurements=[Measurement("bandwidth", "throughput_gbps", gbps, "Gbit/s", Better.HIGHER,
                                  {"src": "h1", "dst": "h2"})],
    )]


def _gate(world: World, results: list[SuiteResult] | None = None) -> int:
    """Report heads, board the candidate and finish its gate run; the candidate's id."""
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    report = world.reconcile()
    assert len(report.formed) == 1 and report.boarded == report.formed
    world.claim(report.runs_created[0])
    world.finish(report.runs_created[0], results)
    return report.formed[0]


def test_a_reported_commit_forms_boards_and_dispatches_one_gate_run(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    report = world.reconcile()
    assert len(report.formed) == 1
    assert report.boarded == report.formed
    assert len(report.runs_created) == 1
    assert world.dispatcher.runs == report.runs_created
    cand = _candidate(world, report.formed[0])
    assert cand.state == "gating"
    assert sorted(cand.changed) == ["neutron", "nova"]
    assert cand.base_version is None


def test_reconciling_again_creates_no_second_candidate_or_run(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    first = world.reconcile()
    second = world.reconcile()
    assert (second.formed, second.runs_created) == ([], [])
    with session_scope(world.factory) as session:
        assert session.scalar(select(func.count()).select_from(models.Run)) == 1
        assert session.scalar(select(func.count()).select_from(models.Candidate)) == 1
    assert world.dispatcher.runs == first.runs_created


def test_no_candidate_forms_until_every_component_has_a_commit(world: World) -> None:
    world.commit("nova", "n1")
    assert world.reconcile().formed == []


def test_runs_are_dispatched_only_after_the_transaction_commits(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    dispatcher = RecordingDispatcher()
    with pytest.raises(RuntimeError), session_scope(world.factory) as session:
        report = scheduler.reconcile(session, world.clock,
                                     scheduler.SchedulerPolicy(soak=WEEK), dispatcher)
        assert report.runs_created
        raise RuntimeError("the pass fails before it commits")
    assert dispatcher.runs == []
    with session_scope(world.factory) as session:
        assert session.scalar(select(func.count()).select_from(models.Run)) == 0


def test_a_redelivered_run_task_finds_nothing_to_claim(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    run_id = world.reconcile().runs_created[0]
    lease = timedelta(minutes=30)
    with session_scope(world.factory) as session:
        assert runs.claim(session, run_id, "w1", world.clock, lease) is runs.Claim.CLAIMED
    with session_scope(world.factory) as session:
        assert runs.claim(session, run_id, "w2", world.clock, lease) is runs.Claim.NOT_PENDING
    world.finish(run_id)
    with session_scope(world.factory) as session:
        assert runs.claim(session, run_id, "w3", world.clock, lease) is runs.Claim.NOT_PENDING
        run = runs.get_run(session, run_id)
        assert (run.worker, run.verdict) == ("w1", "passed")
        assert session.scalar(select(func.count()).select_from(models.Run)) == 1


def test_a_run_waits_while_the_only_testbed_is_leased(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    run_id = world.reconcile().runs_created[0]
    with session_scope(world.factory) as session:
        session.execute(models.Testbed.__table__.update().values(
            leased_by_run_id=None, lease_expires_at=world.clock.now() + timedelta(hours=1)))
        bed = session.get(models.Testbed, "gate1")
        assert bed is not None
        other = models.Run(candidate_id=_candidate_id(session), kind="baseline", attempt=1,
                           state="running", created_at=world.clock.now())
        session.add(other)
        session.flush()
        bed.leased_by_run_id = other.id
    with session_scope(world.factory) as session:
        claim = runs.claim(session, run_id, "w1", world.clock, timedelta(minutes=30))
    assert claim is runs.Claim.BUSY
    world.clock.advance(timedelta(hours=2))  # the other lease expired: it can be taken over
    with session_scope(world.factory) as session:
        claim = runs.claim(session, run_id, "w1", world.clock, timedelta(minutes=30))
    assert claim is runs.Claim.CLAIMED


def _candidate_id(session: Session) -> int:
    return int(session.scalars(select(models.Candidate.id)).one())


def test_a_week_of_soak_takes_seconds_and_promotes_after_the_full_duration(world: World) -> None:
    cid = _gate(world)
    soak_runs = 0
    promoted_after = None
    for step in range(1, 40):
        report = world.reconcile()
        if report.promoted:
            promoted_after = step
            break
        assert _candidate(world, cid).state == "soaking"
        for run_id in report.runs_created:
            world.claim(run_id)
            world.finish(run_id)
            soak_runs += 1
        world.clock.advance(WEEK.interval)
    assert promoted_after is not None
    cand = _candidate(world, cid)
    assert cand.state == "promoted"
    assert cand.soak_started_at is not None and cand.finished_at is not None
    assert cand.finished_at - cand.soak_started_at >= WEEK.duration
    assert soak_runs == 28  # one run every 6 h for 7 days
    with session_scope(world.factory) as session:
        kg = knowngood.current(session)
        assert kg is not None and (kg.version, kg.candidate_id) == (1, cid)


def test_a_soaking_candidate_explains_how_long_it_has_left(world: World) -> None:
    cid = _gate(world)
    report = world.reconcile()
    world.claim(report.runs_created[0])
    world.finish(report.runs_created[0])
    world.clock.advance(timedelta(days=3, hours=4))
    world.reconcile()
    messages = [e.message for e in _candidate(world, cid).excuses]
    assert "soaking: 3 d 4 h of 7 d" in messages
    assert "passing soak runs: 1 of at least 4" in messages


def test_infra_errors_are_retried_a_bounded_number_of_times_and_never_reject(
    world: World,
) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    report = world.reconcile()
    cid = report.formed[0]
    run_id = report.runs_created[0]
    attempts = []
    for _ in range(5):
        attempts.append(run_id)
        world.claim(run_id)
        world.finish(run_id, [], setup_error="iperf3: not installed")
        world.clock.advance(WEEK.infra_backoff_max)  # past any backoff (tests/pipeline/...backoff)
        report = world.reconcile()
        if not report.runs_created:
            break
        run_id = report.runs_created[0]
    assert len(attempts) == 1 + WEEK.max_infra_retries
    cand = _candidate(world, cid)
    assert cand.state == "gating"
    assert any(e.kind == "infra_error" and "retries exhausted" in e.message
               and "iperf3: not installed" in e.message for e in cand.excuses)


def test_without_a_known_good_the_first_candidate_is_judged_on_its_checks_alone(
    world: World,
) -> None:
    cid = _gate(world, _bandwidth(0.001))  # any number passes: there is nothing to compare with
    assert world.reconcile().started_soak == [cid]


def test_a_failed_check_that_fails_its_recheck_rejects_the_candidate_with_an_excuse(
    world: World,
) -> None:
    failing = [SuiteResult(suite="ping",
                           checks=[Check("ping", "h1 reaches h2", False, "100 % loss")])]
    cid = _gate(world, failing)
    report = world.reconcile()  # a failed check is rechecked first (tests/domain/test_flaky.py)
    assert report.rejected == [] and len(report.runs_created) == 1
    world.claim(report.runs_created[0])
    world.finish(report.runs_created[0], failing)
    report = world.reconcile()
    assert report.rejected == [cid]
    cand = _candidate(world, cid)
    assert cand.state == "rejected"
    assert any("h1 reaches h2" in e.message and "100 % loss" in e.message
               for e in cand.excuses)


def test_a_bandwidth_regression_against_the_known_good_rejects_naming_the_metric(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    world = World(session_factory, clock)
    world.component("neutron")
    world.testbed("gate1")
    world.commit("neutron", "good")
    report = world.reconcile()
    for results in (_bandwidth(10.0), _bandwidth(10.2)):  # gate, then the soak run
        world.claim(report.runs_created[-1])
        world.finish(report.runs_created[-1], results)
        clock.advance(timedelta(minutes=1))
        report = world.reconcile()
    clock.advance(timedelta(days=1))
    assert world.reconcile().promoted
    world.commit("neutron", "halves-bandwidth")
    report = world.reconcile()
    world.claim(report.runs_created[0])
    world.finish(report.runs_created[0], _bandwidth(5.0))
    report = world.reconcile()
    assert len(report.rejected) == 1
    excuse = " ".join(e.message for e in _candidate(world, report.rejected[0]).excuses)
    assert "bandwidth throughput_gbps h1→h2" in excuse
    assert "known-good #1" in excuse and "-50" in excuse


def test_two_promotions_on_the_same_base_cannot_both_win(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    first_id = world.reconcile().formed[0]
    newer = world.commit("nova", "n2")
    with session_scope(world.factory) as session:
        first = session.get(models.Candidate, first_id)
        assert first is not None
        combo = knowngood.combination_of(session, first.combination_hash).replace(nova=newer)
        components.ensure_combination(session, combo, world.clock)
        now = world.clock.now()
        rival = models.Candidate(combination_hash=combo.hash, state="soaking", base_version=None,
                                 changed=["nova"], excuses=[], created_at=now, updated_at=now)
        session.add(rival)
        session.flush()
        assert knowngood.promote(session, first, world.clock, reason="test").version == 1
        with pytest.raises(Conflict, match="formed on known-good #None"):
            knowngood.promote(session, rival, world.clock, reason="test")
    with session_scope(world.factory) as session:
        assert [kg.version for kg in knowngood.history(session)] == [1]


def test_a_run_whose_worker_vanished_ends_as_an_infra_error_and_is_retried(
    world: World,
) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    run_id = world.reconcile().runs_created[0]
    world.claim(run_id)
    world.clock.advance(timedelta(hours=1))  # beyond the default 30-minute run timeout
    report = world.reconcile()
    assert report.runs_expired == [run_id]
    assert report.runs_created == []  # the retry waits out its backoff first
    world.clock.advance(WEEK.retry_delay(1))
    report = world.reconcile()
    assert len(report.runs_created) == 1 and report.runs_created[0] != run_id
    with session_scope(world.factory) as session:
        run = runs.get_run(session, run_id)
        assert run.verdict == "infra_error"
        assert "run timeout" in run.excuses[0].message
        bed = session.get(models.Testbed, "gate1")
        assert bed is not None and bed.leased_by_run_id is None


def test_a_pending_run_whose_message_was_lost_is_dispatched_again(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    run_id = world.reconcile().runs_created[0]
    world.clock.advance(timedelta(minutes=5))
    report = world.reconcile()
    assert report.runs_redispatched == [run_id]
    assert world.dispatcher.runs == [run_id, run_id]


def test_a_passing_gate_starts_the_soak_with_its_first_run_at_once(world: World) -> None:
    cid = _gate(world, passing_results())
    report = world.reconcile()
    assert report.started_soak == [cid]
    assert len(report.runs_created) == 1
    with session_scope(world.factory) as session:
        assert runs.get_run(session, report.runs_created[0]).kind == "soak"


def test_cancelling_a_candidate_withdraws_its_runs_that_have_not_started(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    report = world.reconcile()
    run_id = report.runs_created[0]
    with session_scope(world.factory) as session:
        actions.cancel(session, world.clock, report.formed[0], "token:alice", "wrong branch")
    with session_scope(world.factory) as session:
        assert runs.claim(session, run_id, "w1", world.clock,
                          timedelta(minutes=30)) is runs.Claim.NOT_PENDING
        assert session.scalar(select(func.count()).select_from(models.Run)) == 0
        bed = session.get(models.Testbed, "gate1")
        assert bed is not None and bed.leased_by_run_id is None
    assert world.reconcile().runs_created == []
    assert _candidate(world, report.formed[0]).state == "cancelled"
