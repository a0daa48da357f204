"""A real server for the browser tests, and Debian's Chromium driven by Playwright.

The app runs in uvicorn on a free loopback port, in a thread of the test process, on a migrated
SQLite file of its own (a browser and the app's threads need a real database, not the tests'
rolled-back connection). It shares a fake clock with the :class:`~tests.web.scenes.Scene` that
builds its state, so a test changes the pipeline and moves time, and watches the page follow.

The browser is ``/usr/bin/chromium`` from Debian's ``chromium`` package, never one downloaded
by Playwright. Without it, or without the ``playwright`` package, the browser tests are skipped
with the reason on a workstation and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from certifier.api.app import create_app
from certifier.db import migrate
from certifier.db.session import make_engine, make_session_factory
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from tests.requirements import unavailable
from tests.web.scenes import Scene, world_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def require_browser() -> Any:
    """The Playwright module, or skip/fail with what is missing."""
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("the browser tests need the playwright package (pip install playwright)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        where = shutil.which("chromium") or "nowhere"
        unavailable(f"the browser tests need Debian's chromium at {CHROMIUM} (found: {where}); "
                    "apt-get install chromium")
    return sync_api


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    scene: Scene
    clock: FakeClock
    app: Any = None


@contextmanager
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    database_url = f"sqlite:///{tmp_path / 'live.sqlite'}"
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    clock = FakeClock()
    app = create_app(world_settings(tmp_path), dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=factory)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", Scene(factory, clock), clock, app)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        engine.dispose()
