"""Cached dashboard pages: one render per change, never older than the pipeline or a few seconds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from certifier.api.app import create_app
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import actions
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.web.pagecache import MAX_AGE_S, PageCache, VersionProbe
from tests.factories import SOAK, World
from tests.web.live import LiveServer, live_server
from tests.web.scenes import Scene, busy_pipeline, world_settings


def page_cache(app: FastAPI) -> PageCache:
    """The app's PageCache middleware (the stack is built at the first request)."""
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, PageCache):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, PageCache)
    return layer


def test_a_page_is_rendered_once_and_served_again_while_nothing_changes(
    app: FastAPI, client: TestClient, world: World
) -> None:
    busy_pipeline(Scene(world.factory, world.clock))
    first = client.get("/")
    cache = page_cache(app)
    renders = cache.renders
    again = [client.get("/") for _ in range(3)]
    assert cache.renders == renders
    assert all(r.status_code == 200 and r.text == first.text for r in again)
    assert again[0].headers["content-security-policy"] == first.headers["content-security-policy"]


def test_a_candidate_moving_state_is_visible_on_the_next_get(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(Scene(world.factory, world.clock))
    page = f"/candidates/{busy.soaking}"
    assert "cancelled by" not in client.get(page).text
    with session_scope(world.factory) as session:  # the clock stands still: only the row moves
        actions.cancel(session, world.clock, busy.soaking, "ops", "a test")
    assert "cancelled by ops: a test" in client.get(page).text


def test_a_new_run_is_visible_on_the_next_get(client: TestClient, world: World) -> None:
    scene = Scene(world.factory, world.clock)
    busy = busy_pipeline(scene)
    page = f"/candidates/{busy.soaking}"
    before = client.get(page).text
    scene.finish(busy.soak_run)
    scene.clock.advance(SOAK.interval)
    next_run = scene.reconcile().runs_created
    assert next_run
    after = client.get(page).text
    assert after != before
    for run_id in next_run:
        assert f"/runs/{run_id}" in after and f"/runs/{run_id}" not in before


def test_a_page_is_rendered_again_once_it_is_a_few_seconds_old(
    app: FastAPI, client: TestClient, world: World
) -> None:
    busy_pipeline(Scene(world.factory, world.clock))
    client.get("/")
    cache = page_cache(app)
    renders = cache.renders
    world.clock.advance(timedelta(seconds=MAX_AGE_S / 2))
    client.get("/")
    assert cache.renders == renders  # young enough
    world.clock.advance(timedelta(seconds=MAX_AGE_S))
    client.get("/")
    assert cache.renders == renders + 1


def test_pages_are_kept_per_host_since_the_overview_names_its_own_url(
    client: TestClient,
) -> None:
    client.get("/")
    other = client.get("/", headers={"host": "certifier.example"}).text
    assert 'value="http://certifier.example/api/v1/manifest"' in other
    assert 'value="http://testserver/api/v1/manifest"' in client.get("/").text


def test_only_dashboard_pages_are_kept(app: FastAPI, client: TestClient) -> None:
    client.get("/")
    cache = page_cache(app)
    renders = cache.renders
    for path in ("/healthz", "/api/v1/components", "/static/nope.js", "/candidates?before=0"):
        client.get(path)
    assert cache.renders == renders


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path) as live:
        yield live


def test_many_viewers_after_a_change_cost_one_render(server: LiveServer) -> None:
    busy_pipeline(server.scene)
    before = httpx.get(server.url + "/").text
    cache = page_cache(server.app)
    renders = cache.renders
    server.scene.commit("cinder", "c9", "Volume: retype in place")  # a change, from elsewhere
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: httpx.get(server.url + "/", timeout=20).text, range(8)))
    assert cache.renders == renders + 1
    assert len(set(pages)) == 1 and pages[0] != before  # the new version, the same bytes


def test_every_caller_gets_a_version_read_after_it_called() -> None:
    started, release = threading.Event(), threading.Event()
    reads: list[int] = []

    def probe() -> str:
        reads.append(len(reads) + 1)
        if len(reads) == 1:
            started.set()
            release.wait(5)
        return f"v{len(reads)}"

    async def callers(probe_: VersionProbe) -> list[str]:
        first = asyncio.ensure_future(probe_.current())
        assert await asyncio.to_thread(started.wait, 5)
        later = [asyncio.ensure_future(probe_.current()) for _ in range(5)]  # during read 1
        await asyncio.sleep(0.05)
        release.set()
        return [await first, *[await f for f in later]]

    versions = asyncio.run(callers(VersionProbe(probe)))
    assert versions == ["v1"] + ["v2"] * 5  # five late callers share one later read
    assert reads == [1, 2]


def test_an_aged_page_is_served_only_while_its_new_render_runs(
    app: FastAPI, client: TestClient, clock: FakeClock
) -> None:
    client.get("/")
    cache = page_cache(app)
    key, page = next(iter(cache._pages.items()))  # the one page
    clock.advance(timedelta(seconds=MAX_AGE_S * 1.5))
    assert cache._fresh(key, page.version, rendering=False) is None
    assert cache._fresh(key, page.version, rendering=True) is page
    assert cache._fresh(key, "another version", rendering=True) is None
    clock.advance(timedelta(seconds=MAX_AGE_S))
    assert cache._fresh(key, page.version, rendering=True) is None


def test_without_a_database_the_page_answers_as_it_would_uncached(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'no.sqlite'}")
    app = create_app(world_settings(tmp_path), dispatcher=RecordingDispatcher(),
                     session_factory=make_session_factory(engine))
    with TestClient(app) as client:
        assert client.get("/").status_code == 503
        assert page_cache(app).renders == 0
    engine.dispose()
