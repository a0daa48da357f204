"""Starting and stopping Certifier's own processes (API, worker, beat) as children of one command.

``certifier up`` and the demo use this: each child is ``python -m certifier <role>`` in its own
process group, configured only through ``CERTIFIER_*`` environment variables, and stopping sends
SIGTERM to the whole group, then SIGKILL after a grace period, so no worker child outlives us.
SIGTERM and SIGINT interrupt the parent wherever it is (a demo's wait, a migration, a sleep), so
a script's ``kill`` stops everything within ``STOP_GRACE_S`` plus a moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from certifier.settings import Settings

STOP_GRACE_S = 5.0
"""How long children get to exit after SIGTERM before SIGKILL. A worker's pool process turns
SIGTERM into SystemExit, so a run in progress tears its testbed down first (an idle worker's
main process lingers about 6 s in its warm shutdown: it is killed, harmlessly); what a SIGKILL
leaves, the next worker's janitor reaps."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_stop_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, wherever it waits, so the
    ``finally`` that stops the children runs at once (a flag would only be read after the demo
    or whatever else the command was waiting on)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def ignore_stop_signals() -> None:
    """While stopping: a second Ctrl-C or kill must not cut the stop short and orphan children;
    the stop is bounded by ``STOP_GRACE_S`` anyway."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["CERTIFIER_DATA_DIR"] = str(settings.data_dir.resolve())
    env["CERTIFIER_DATABASE_URL"] = settings.resolved_database_url
    env.pop("CERTIFIER_BROKER_URL", None)
    if settings.broker_url:
        env["CERTIFIER_BROKER_URL"] = settings.broker_url
    if settings.config_file:
        env["CERTIFIER_CONFIG"] = str(Path(settings.config_file).resolve())
    return env


def spawn(
    role: list[str], settings: Settings, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``certifier <role...>`` as a child in its own process group."""
    out = log_path.open("ab") if log_path else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "certifier", *role],
            env=child_env(settings), stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def stop(procs: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every child's process group, wait, then SIGKILL whatever is left."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=5)
