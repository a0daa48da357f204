"""The environment check in the pipeline: a run finished on a too-busy testbed is ``infra_error``
with the excuse, is retried with the usual backoff, and is never counted against the candidate.

Driven through ``runs.finish`` and the real reconcile loop, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.environment import EnvironmentPolicy
from certifier.domain.judgement import Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.pipeline import read, runs
from tests.factories import World

POLICY = EnvironmentPolicy()


def busy(cpu: float) -> dict[str, Any]:
    """What the runner stores: here just the start probe's background pressure."""
    return {"version": 1, "host": {}, "spans": {},
            "probes": {"start": {"background": {"cpu_pressure_pct": cpu}}}}


def _finish(world: World, run_id: int, environment: dict[str, Any] | None,
            results: list[SuiteResult] | None = None) -> Verdict:
    world.claim(run_id)
    world.clock.advance(timedelta(minutes=1))
    return world.finish(run_id, results, environment=environment,
                        environment_policy=POLICY).verdict


def _run(world: World, run_id: int) -> tuple[str | None, bool, list[str], Any]:
    with session_scope(world.factory) as session:
        run = runs.get_run(session, run_id)
        return run.verdict, run.too_busy, [e.message for e in run.excuses], run.environment


def _candidate(world: World) -> tuple[str, list[str]]:
    with session_scope(world.factory) as session:
        cand = session.scalars(select(models.Candidate).order_by(models.Candidate.id.desc())
                               ).first()
        assert cand is not None
        return cand.state, [str(e.message) for e in cand.excuses]


def _gate_run(world: World, seed: str) -> int:
    world.commit("nova", seed)
    report = world.reconcile()
    assert len(report.runs_created) == 1
    return report.runs_created[0]


def test_a_too_busy_run_is_infra_error_with_the_excuse_and_stores_its_figures(
        world: World) -> None:
    run_id = _gate_run(world, "n1")
    assert _finish(world, run_id, busy(63.0)) is Verdict.INFRA_ERROR
    verdict, too_busy, excuses, stored = _run(world, run_id)
    assert (verdict, too_busy) == ("infra_error", True)
    assert excuses == ["testbed too busy: cpu pressure 63 % (ceiling 50 %)"]
    assert stored == busy(63.0)


def test_a_too_busy_gate_run_is_retried_after_its_backoff_and_the_candidate_goes_on(
        world: World) -> None:
    _finish(world, _gate_run(world, "n1"), busy(63.0))
    assert world.reconcile().runs_created == []
    state, excuses = _candidate(world)
    assert state == CandidateState.GATING
    assert any("testbed too busy" in m and "waiting for the testbed to calm down" in m
               for m in excuses), excuses
    world.clock.advance(world.policy.soak.infra_backoff)
    (retry,) = world.reconcile().runs_created
    assert _finish(world, retry, busy(2.0)) is Verdict.PASSED
    assert world.reconcile().started_soak


def test_a_failed_check_on_a_too_busy_run_still_fails(world: World) -> None:
    cut_off = [SuiteResult(suite="ping", checks=[Check("ping", "reach h1->h2", False,
                                                       "h1 cannot reach h2")])]
    run_id = _gate_run(world, "n1")
    assert _finish(world, run_id, busy(63.0), cut_off) is Verdict.FAILED
    assert _run(world, run_id)[2] == ["ping check 'reach h1->h2' failed: h1 cannot reach h2"]
    world.reconcile()
    assert _candidate(world)[0] == CandidateState.REJECTED


def test_a_regression_on_a_too_busy_run_is_not_counted(world: World) -> None:
    world.commit("nova", "n1")
    world.promote_heads()
    slow = [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", True)],
                        measurements=[Measurement("ping", "rtt_avg_ms", 5.0, "ms", Better.LOWER,
                                                  {"source": "h1", "destination": "h2"})])]
    run_id = _gate_run(world, "n2")
    assert _finish(world, run_id, busy(63.0), slow) is Verdict.INFRA_ERROR
    assert not any("rtt" in m for m in _run(world, run_id)[2])
    world.reconcile()
    assert _candidate(world)[0] == CandidateState.GATING


def _quiet_history(world: World) -> None:
    """Five passed gate runs on an idle testbed (background cpu pressure about 2 %)."""
    for i, cpu in enumerate((2.0, 1.5, 2.5, 2.0, 3.0)):
        world.commit("nova", f"quiet{i}")
        (run_id,) = world.reconcile().runs_created
        assert _finish(world, run_id, busy(cpu)) is Verdict.PASSED
        _free_testbed(world)


def _free_testbed(world: World) -> None:
    """Let the judged candidate move on, then cancel it, so the next one gates at once."""
    world.reconcile()
    with session_scope(world.factory) as session:
        for cand in session.scalars(select(models.Candidate).where(
                models.Candidate.state.in_(("gating", "soaking")))):
            cand.state = CandidateState.CANCELLED


def test_a_deviation_from_the_testbeds_usual_range_is_too_busy(world: World) -> None:
    _quiet_history(world)
    run_id = _gate_run(world, "loud")
    assert _finish(world, run_id, busy(40.0)) is Verdict.INFRA_ERROR
    assert _run(world, run_id)[2] == ["testbed too busy: cpu pressure 40 % vs usual 2 %"]


def _finish_controlled(world: World, run_id: int, cpu: float,
                       policy: EnvironmentPolicy = POLICY) -> Verdict:
    world.claim(run_id)
    world.clock.advance(timedelta(minutes=1))
    return world.finish(run_id, rounds=2, environment=busy(cpu),
                        environment_policy=policy).verdict


def test_a_run_with_controls_is_judged_on_a_busier_testbed_noted_and_kept_out_of_history(
        world: World) -> None:
    """An A/B run's controls share the testbed's load: busier than usual, it is judged, not
    refused; the figure is noted with the run (its page says so) and the run stays out of the
    testbed's history. A ceiling still refuses it, and ``controlled: usual`` judges it as a
    single-sided run."""
    _quiet_history(world)
    run_id = _gate_run(world, "loud")
    assert _finish_controlled(world, run_id, 40.0) is Verdict.PASSED
    verdict, too_busy, excuses, stored = _run(world, run_id)
    assert (verdict, too_busy, excuses) == ("passed", False, [])
    assert stored["unusual"] == ["cpu pressure 40 % vs usual 2 %"]
    with session_scope(world.factory) as session:
        line = read.run_view(runs.get_run(session, run_id)).environment
        assert line == ("cpu pressure 40 %; unusual for this testbed, so judged against its "
                        "controls only: cpu pressure 40 % vs usual 2 %")
        later = models.Run(candidate_id=runs.get_run(session, run_id).candidate_id,
                           kind="gate", attempt=99, state="pending", testbed="gate1",
                           created_at=world.clock.now())
        session.add(later)
        session.flush()
        history = runs.environment_history(session, later, 20)
        assert {"background_cpu_pressure_pct": 40.0} not in history and len(history) == 5
    _free_testbed(world)
    refused = _gate_run(world, "ceiling")
    assert _finish_controlled(world, refused, 63.0) is Verdict.INFRA_ERROR
    assert _run(world, refused)[2] == ["testbed too busy: cpu pressure 63 % vs usual 2 % "
                                       "(ceiling 50 %)"]
    world.clock.advance(world.policy.soak.infra_backoff)
    (again,) = world.reconcile().runs_created
    strict = EnvironmentPolicy(controlled="usual")
    assert _finish_controlled(world, again, 40.0, strict) is Verdict.INFRA_ERROR


def test_the_history_leaves_out_runs_refused_as_too_busy(world: World) -> None:
    _finish(world, _gate_run(world, "n1"), busy(63.0))
    world.clock.advance(world.policy.soak.infra_backoff)
    (retry,) = world.reconcile().runs_created
    _finish(world, retry, busy(2.0))
    with session_scope(world.factory) as session:
        probe = models.Run(candidate_id=runs.get_run(session, retry).candidate_id, kind="gate",
                           attempt=99, state="pending",
                           testbed="gate1", created_at=world.clock.now())
        session.add(probe)
        session.flush()
        assert runs.environment_history(session, probe, 20) == [
            {"background_cpu_pressure_pct": 2.0}]


def test_the_history_pages_back_past_runs_noted_as_unusual(world: World) -> None:
    """A long busy spell of A/B runs (each noted as unusual) does not push the testbed's quiet
    history out of reach: the history pages back until its window is full."""
    gate = _gate_run(world, "n1")
    with session_scope(world.factory) as session:
        cid = runs.get_run(session, gate).candidate_id
        start = world.clock.now()
        for i in range(5 + 30):  # oldest first: 5 quiet runs, then 30 unusual ones
            environment: dict[str, Any] = busy(2.0 if i < 5 else 40.0)
            if i >= 5:
                environment["unusual"] = ["cpu pressure 40 % vs usual 2 %"]
            session.add(models.Run(candidate_id=cid, kind="gate", attempt=100 + i,
                                   state="finished", verdict="passed", testbed="gate1",
                                   created_at=start, finished_at=start + timedelta(minutes=i),
                                   environment=environment))
        probe = models.Run(candidate_id=cid, kind="gate", attempt=999, state="pending",
                           testbed="gate1", created_at=start)
        session.add(probe)
        session.flush()
        history = runs.environment_history(session, probe, 5)  # a page is 20 runs
        assert history == [{"background_cpu_pressure_pct": 2.0}] * 5


def test_a_disabled_check_stores_the_figures_and_judges_nothing(world: World) -> None:
    run_id = _gate_run(world, "n1")
    world.claim(run_id)
    verdict = world.finish(run_id, environment=busy(99.0),
                           environment_policy=EnvironmentPolicy(enabled=False)).verdict
    assert verdict is Verdict.PASSED
    assert _run(world, run_id)[3] == busy(99.0)
