"""``/events``: server-sent events that tell open pages the pipeline moved, from a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

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
