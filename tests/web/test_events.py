"""``/events``: server-sent events that tell open pages the pipeline moved, from a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from certifier.pipeline import read
from tests.web.live import LiveServer, live_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path) as live:
        yield live


def _events(response: httpx.Response) -> Iterator[dict[str, str]]:
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            event[key] = value


def test_the_first_event_is_the_version_the_page_shows(server: LiveServer) -> None:
    page = httpx.get(server.url + "/").text
    shown = re.search(r'name="certifier-state" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    with httpx.stream("GET", server.url + "/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = _events(response)
        assert "retry" in next(events)
        first = next(events)
    assert first["event"] == "changed"
    assert json.loads(first["data"]) == {"version": shown}


def test_a_change_in_the_database_is_announced(server: LiveServer) -> None:
    with httpx.stream("GET", server.url + "/events", timeout=10) as response:
        events = _events(response)
        next(events)  # retry
        first = json.loads(next(events)["data"])["version"]
        server.scene.component("nova")
        server.scene.commit("nova", "n1")  # a new commit: the digest moves
        second = json.loads(next(events)["data"])["version"]
    assert second != first


def test_time_passing_is_announced_once_a_minute(server: LiveServer) -> None:
    with httpx.stream("GET", server.url + "/events", timeout=10) as response:
        events = _events(response)
        next(events)
        first = json.loads(next(events)["data"])["version"]
        server.clock.advance(timedelta(minutes=1))
        second = json.loads(next(events)["data"])["version"]
    assert first.split("-")[0] == second.split("-")[0] and first != second


def test_a_page_never_carries_a_version_newer_than_what_it_shows(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change committed while a page renders, after its data was read: the page must carry the
    version from before the change, or live.js, told of the new version, would think it has it
    and never fetch the page again (a CI run once saw a promotion never reach an open page)."""
    server.scene.component("nova")
    overview = read.overview

    def change_after_reading(*args: object, **kwargs: object) -> object:
        data = overview(*args, **kwargs)  # type: ignore[arg-type]
        server.scene.commit("nova", "n1")  # lands after the data, before the page is done
        return data

    monkeypatch.setattr(read, "overview", change_after_reading)
    page = httpx.get(server.url + "/", timeout=10).text
    monkeypatch.setattr(read, "overview", overview)
    shown = re.search(r'name="certifier-state" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    with httpx.stream("GET", server.url + "/events", timeout=10) as response:
        events = _events(response)
        next(events)  # retry
        now = json.loads(next(events)["data"])["version"]
    assert shown != now  # the page is behind, and says so: live.js fetches it again
    fresh = httpx.get(server.url + "/", timeout=10).text
    assert f'content="{now}"' in fresh
