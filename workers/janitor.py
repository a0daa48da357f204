"""Recovery at worker start: tear down testbeds of dead runs and finish runs whose worker died.

A SIGKILLed worker cannot clean up after itself, so the next worker on the host does: testbed
records whose owner process is gone are reaped (namespaces, processes), and runs still marked
``running`` by a dead process on this host become ``infra_error`` — then the reconcile loop retries
them. Nothing outside the project's own ``cf-`` prefix is ever touched.
"""

from __future__ import annotations

import logging
import os
import socket

from sqlalchemy import select

from certifier.db import models
from certifier.db.session import session_scope
from certifier.pipeline import runs
from certifier.pipeline.dispatch import reconcile_after_commit
from workers.context import WorkerContext
from workers.testbed import janitor as testbed_janitor

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(ctx: WorkerContext) -> list[int]:
    """Reap dead testbeds and fail the runs of dead workers on this host; returns those runs."""
    removed = testbed_janitor.reap(ctx.settings.records_dir)
    if removed:
        log.warning("janitor removed leftovers of dead runs: %s", ", ".join(removed))
    host = socket.gethostname()
    lost: list[int] = []
    with session_scope(ctx.session_factory) as session:
        for run in session.scalars(select(models.Run).where(
                models.Run.state == runs.RunState.RUNNING)):
            worker_host, _, pid = (run.worker or "").rpartition(":")
            if worker_host == host and pid.isdigit() and not _alive(int(pid)):
                runs.lost_worker(session, run.id, ctx.clock,
                                 f"worker {run.worker} died during the run; testbed cleaned up")
                lost.append(run.id)
        if lost:
            reconcile_after_commit(session, ctx.dispatcher)
    return lost
