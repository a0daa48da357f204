"""A/B runs in the database: every measurement keeps its side, round and counts, and the readers
of a known-good's own numbers (baseline, detector history, candidate page, /metrics) ignore the
control rows its runs carry (those are an older known-good's values, measured beside it).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.routers.metrics import _last_measurements
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.detector import DetectorPolicy
from certifier.domain.promotion import SoakPolicy
from certifier.domain.results import Side
from certifier.pipeline import read, runs
from tests.factories import SOAK, World, ab_results

KEY = "ping.loss_pct{dst=h2,src=h1}"
OWN, CONTROL = 1.0, 99.0  # the run's own value, and the value its control measured


def _finish(world: World, run_id: int, rounds: int = 2) -> None:
    world.claim(run_id)
    world.finish(run_id, ab_results(rounds, OWN, CONTROL), rounds)
    world.clock.advance(timedelta(minutes=1))


def _promote_with_ab_runs(world: World) -> int:
    """Known-good #1 whose gate and soak runs were A/B runs; its candidate id."""
    world.commit("nova", "n1")
    report = world.reconcile()
    _finish(world, report.runs_created[-1])
    report = world.reconcile()
    _finish(world, report.runs_created[-1])
    world.clock.advance(SOAK.duration)
    report = world.reconcile()
    assert report.promoted
    return report.promoted[0]


def test_a_finished_run_keeps_each_measurement_s_side_round_and_counts(world: World) -> None:
    world.commit("nova", "n1")
    run_id = world.reconcile().runs_created[-1]
    _finish(world, run_id, rounds=3)
    with session_scope(world.factory) as session:
        stored = runs.measurements(session, run_id)
        assert runs.get_run(session, run_id).rounds == 3
    assert stored == [m for r in ab_results(3, OWN, CONTROL) for m in r.measurements]


def test_a_single_sided_run_records_zero_rounds_and_candidate_rows(world: World) -> None:
    world.commit("nova", "n1")
    run_id = world.reconcile().runs_created[-1]
    world.claim(run_id)
    world.finish(run_id)
    with session_scope(world.factory) as session:
        assert runs.get_run(session, run_id).rounds == 0
        assert {(m.side, m.round) for m in runs.measurements(session, run_id)} == {
            (Side.CANDIDATE, 0)}


def test_the_known_good_s_baseline_ignores_the_control_rows_of_its_runs(world: World) -> None:
    _promote_with_ab_runs(world)
    with session_scope(world.factory) as session:
        baseline = runs.baseline(session)
    assert baseline is not None
    assert baseline.samples[KEY] == [OWN] * 4  # gate and soak, two rounds each


def test_the_detector_history_ignores_the_control_rows(world: World) -> None:
    _promote_with_ab_runs(world)
    world.commit("nova", "n2")
    report = world.reconcile()
    _finish(world, report.runs_created[-1])
    with session_scope(world.factory) as session:
        run = runs.get_run(session, report.runs_created[-1])
        history = runs.history(session, run, DetectorPolicy.soak(runs=4))
    assert history is not None
    assert history.baseline[KEY] == (OWN, OWN)


def test_the_candidate_page_and_metrics_show_the_runs_own_side_only(world: World) -> None:
    kg_candidate = _promote_with_ab_runs(world)
    world.commit("nova", "n2")
    _finish(world, world.reconcile().runs_created[-1])
    with session_scope(world.factory) as session:
        cand_id = session.scalars(select(models.Candidate.id)
                                  .order_by(models.Candidate.id.desc())).first()
        assert cand_id is not None
        page = read.candidate_page(session, cand_id, world.clock.now(),
                                    SoakPolicy(duration=timedelta(days=7)))
        exported = _last_measurements(session, kg_candidate)
    (series,) = page.series
    assert [p.value for p in series.points] == [OWN, OWN]
    assert series.baseline is not None and series.baseline.high == OWN
    assert [row[-1] for row in exported] == [OWN]


def test_the_run_detail_shows_each_series_by_side_and_round(
        world: World, session_factory: sessionmaker[Session]) -> None:
    world.commit("nova", "n1")
    run_id = world.reconcile().runs_created[-1]
    _finish(world, run_id, rounds=3)
    with session_scope(session_factory) as session:
        page = read.run_page(session, run_id)
    assert page.rounds == 3 and page.ab
    (series,) = page.series
    assert (series.title, series.rounds) == ("ping loss_pct h1→h2", (0, 1, 2))
    assert (series.candidate, series.control) == ((OWN,) * 3, (CONTROL,) * 3)
    assert series.change_pct == pytest.approx(100 * (OWN - CONTROL) / CONTROL)
