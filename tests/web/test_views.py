"""The read-only views behind the pages: versions, soak progress, bands, commit ranges."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from certifier.db.session import session_scope
from certifier.pipeline import read
from tests.factories import SOAK, World
from tests.web.scenes import Scene, busy_pipeline


def _version(world: World) -> str:
    with session_scope(world.factory) as session:
        return read.state_version(session)


def test_the_version_moves_when_a_run_finishes_and_not_otherwise(world: World) -> None:
    scene = Scene(world.factory, world.clock)
    busy = busy_pipeline(scene)
    before = _version(world)
    world.clock.advance(timedelta(minutes=5))
    assert _version(world) == before  # time alone is the page's business, not the digest's
    scene.finish(busy.soak_run)
    after = _version(world)
    assert after != before
    assert _version(world) == after


def test_the_version_moves_when_a_commit_arrives(world: World) -> None:
    scene = Scene(world.factory, world.clock)
    scene.component("nova")
    before = _version(world)
    scene.commit("nova", "n1")
    assert _version(world) != before


def test_soak_progress_comes_from_the_promotion_policy(world: World) -> None:
    busy = busy_pipeline(Scene(world.factory, world.clock))
    with session_scope(world.factory) as session:
        data = read.overview(session, world.clock.now(), SOAK)
    (entry,) = data.soaking
    assert entry.id == busy.soaking and entry.soak is not None
    soak = entry.soak
    assert soak.duration == SOAK.duration
    assert timedelta(minutes=20) < soak.elapsed < timedelta(minutes=30)
    assert soak.time_left == SOAK.duration - soak.elapsed
    assert (soak.passing_runs, soak.runs_total, soak.run_in_progress) == (2, 3, True)
    assert entry.current_run is not None and entry.current_run.state == "running"
    assert [e.message for e in entry.excuses][-1] == "soak run in progress"


def test_a_soak_past_its_duration_is_full_and_has_nothing_left(world: World) -> None:
    busy_pipeline(Scene(world.factory, world.clock))
    world.clock.advance(timedelta(days=2))
    with session_scope(world.factory) as session:
        soak = read.overview(session, world.clock.now(), SOAK).soaking[0].soak
    assert soak is not None
    assert (soak.fraction, soak.percent, soak.time_left) == (1.0, 100, timedelta(0))


def test_stale_after_reads_the_dashboard_setting_when_there_is_one() -> None:
    configured = SimpleNamespace(config=SimpleNamespace(
        dashboard=SimpleNamespace(stale_after=timedelta(hours=12))))
    assert read.stale_after(configured) == timedelta(hours=12)
    assert read.stale_after(SimpleNamespace(config=SimpleNamespace())) == timedelta(days=3)


def test_an_overview_without_a_known_good_is_stale(world: World) -> None:
    with session_scope(world.factory) as session:
        data = read.overview(session, world.clock.now(), SOAK)
    assert data.known_good is None and data.stale


@pytest.mark.parametrize(("values", "band"), [
    ([5.0], (1, 5.0, 5.0, 5.0, 5.0, 5.0)),
    ([1.0, 2.0, 3.0, 4.0, 100.0], (5, 3.0, 2.0, 4.0, 1.0, 100.0)),
])
def test_a_band_is_median_quartiles_and_extremes(values: list[float],
                                                 band: tuple[float, ...]) -> None:
    b = read.Band.of(values)
    assert (b.n, b.median, b.q1, b.q3, b.low, b.high) == band


def test_series_compare_with_the_base_known_goods_samples(world: World) -> None:
    busy = busy_pipeline(Scene(world.factory, world.clock))
    with session_scope(world.factory) as session:
        page = read.candidate_page(session, busy.rejected, world.clock.now(), SOAK)
    by_metric = {s.metric: s for s in page.series}
    bw = by_metric["throughput_gbps"]
    assert bw.flagged and not by_metric["rtt_avg_ms"].flagged
    assert bw.baseline is not None and bw.baseline.n == 2  # known-good #2's gate and soak runs
    assert bw.change_pct is not None and bw.change_pct < -50
    assert page.baseline_label == "known-good #2"


def test_the_commits_between_two_known_goods_are_listed_newest_first(world: World) -> None:
    scene = Scene(world.factory, world.clock)
    scene.testbed("gate1")
    scene.component("nova")
    scene.commit("nova", "a", "first")
    scene.promote_heads()
    for seed in ("b", "c", "d"):
        scene.commit("nova", seed, f"nova {seed}")
    scene.promote_heads()
    with session_scope(world.factory) as session:
        (change,) = read.known_good_diff(session, 1, 2)
    assert [c.title for c in change.between] == ["nova d", "nova c", "nova b"]
    assert change.old is not None and change.old.title == "first"
