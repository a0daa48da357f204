"""Starting and stopping Certifier's own processes (API, worker, beat) as children of one command.

``certifier up`` and the demo use this: each child is ``python -m certifier <role>`` in its own
process group, configured only through ``CERTIFIER_*`` environment variables, and stopping sends
SIGTERM to the whole group, then SIGKILL after a grace period, so no worker child outlives us.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from certifier.settings import Settings


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


def stop(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
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
