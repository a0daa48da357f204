"""Serving an app for a benchmark: a free port, the process, waiting until it answers; and wrk.

Every benchmark runs its bare servers the same way (one uvicorn process, httptools, no access
log), so that side-by-side figures differ only in the application. :func:`wrk` runs Debian's
``wrk`` (one thread) and reads requests per second, p99 and non-2xx/3xx answers from its output.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
_PIDS: dict[str, int] = {}  # base URL -> the process serving it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(argv: Sequence[str], env: dict[str, str], port: int, probe: str = "/healthz",
           output: IO[bytes] | None = None) -> Iterator[str]:
    """Run ``argv`` (a server on ``port``); yields its base URL once ``probe`` answers."""
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with status {proc.returncode}")
            try:
                httpx.get(f"{url}{probe}", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        _PIDS[url] = proc.pid
        yield url
    finally:
        _PIDS.pop(url, None)
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def uvicorn_server(app: str, env: dict[str, str], probe: str = "/healthz",
                   factory: bool = True) -> Iterator[str]:
    """Run ``app`` (``module:callable``) on a free port; yields its base URL once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--no-access-log",
            "--log-level", "warning", "--http", "httptools"]
    with served([*argv, "--factory"] if factory else argv, env, port, probe) as url:
        yield url


def cpu_seconds(url: str) -> float:
    """CPU time (user + system) used so far by the server at ``url`` and its child processes
    (``--workers``): what the server spent, whatever else the machine was doing."""
    tree, ticks = {_PIDS[url]}, 0
    stats = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats.append((int(stat.parent.name), int(fields[1]), int(fields[11]) + int(fields[12])))
    grown = True
    while grown:
        before = len(tree)
        tree |= {pid for pid, ppid, _ in stats if ppid in tree}
        grown = len(tree) > before
    ticks = sum(used for pid, _, used in stats if pid in tree)
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(url: str, duration: float, connections: int,
        headers: Sequence[str] = ()) -> dict[str, float]:
    """One wrk run against ``url``: requests/s, p99 in ms and the non-2xx/3xx answers."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                         timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    return {"rps": rps, "p99_ms": p99_ms,
            "errors": float(non2xx.group(1)) if non2xx else 0.0}
