"""Serving an app under uvicorn for a benchmark: a free port, the process, waiting until it answers.

Every benchmark runs its servers the same way (one uvicorn process, httptools, no access log),
so that side-by-side figures differ only in the application.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(app: str, env: dict[str, str], probe: str = "/healthz",
                   factory: bool = True) -> Iterator[str]:
    """Run ``app`` (``module:callable``) on a free port; yields its base URL once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--no-access-log",
            "--log-level", "warning", "--http", "httptools"]
    proc = subprocess.Popen([*argv, "--factory"] if factory else argv, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}{probe}", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
