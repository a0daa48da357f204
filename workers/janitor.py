"""Recovery and upkeep on a worker's host: dead runs' testbeds, runs of dead workers, held testbeds.

A SIGKILLed worker cannot clean up after itself, so the next worker on the host does
(:func:`recover`, at worker start): testbed records whose owner process is gone are reaped
(namespaces, mounts, processes), and runs still marked ``running`` by a dead process on this host
become ``infra_error`` — then the reconcile loop retries them. Nothing outside the project's own
``cf-`` prefix is ever touched.

A worker that stays up while a run of its host dies (its pool process killed at the task's time
limit, or hung until its lease expired) cleans up too, so that the leftovers never meet the next
run: :func:`sweep_dead`, with every reconcile pass, tears down testbeds whose owner is gone, and
:func:`clear_testbed`, right after a claim, reaps whatever earlier runs left of the testbed the
run has just leased — before it is built again, by the worker that is about to use it.

Held testbeds (autoholds) must survive both: their record is handed to a *keeper* — a sleeping
process in its own session that lives until the hold's deadline — so the reaper sees a live owner
and leaves the testbed alone even across worker restarts. :func:`sweep_holds`, run with every
reconcile pass, expires holds whose time is up and tears down the testbeds of released ones; if no
worker is left to do it, the keeper's own deadline makes the testbed an ordinary orphan that the
next worker start reaps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from certifier.db import models
from certifier.db.session import session_scope
from certifier.pipeline import autohold, runs
from certifier.pipeline.dispatch import reconcile_after_commit
from workers.context import WorkerContext
from workers.testbed import reaper, records
from workers.testbed.process import InfraError, pid_alive, start_ticks
from workers.testbed.tags import control_tag, run_tag, run_tag_prefix

log = logging.getLogger(__name__)

KEEPER_GRACE = timedelta(minutes=5)  # the keeper outlives the hold a little: the sweep goes first


def recover(ctx: WorkerContext) -> list[int]:
    """Reap dead testbeds and fail the runs of dead workers on this host; returns those runs."""
    removed = reaper.reap(ctx.settings.records_dir,
                          owned_prefix=run_tag_prefix(ctx.settings))
    if removed:
        log.warning("janitor removed leftovers of dead runs: %s", ", ".join(removed))
    host = socket.gethostname()
    lost: list[int] = []
    with session_scope(ctx.session_factory) as session:
        for run in session.scalars(select(models.Run).where(
                models.Run.state == runs.RunState.RUNNING)):
            worker_host, _, pid = (run.worker or "").rpartition(":")
            # pid_alive: a zombie (its parent died with it) is dead too.
            if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
                runs.lost_worker(session, run.id, ctx.clock,
                                 f"worker {run.worker} died during the run; testbed cleaned up")
                lost.append(run.id)
        if lost:
            reconcile_after_commit(session, ctx.dispatcher)
    sweep_holds(ctx)
    return lost


def sweep_dead(ctx: WorkerContext) -> list[str]:
    """Tear down this host's testbeds whose owner died while this worker lives on."""
    removed = reaper.reap_dead(ctx.settings.records_dir)
    if removed:
        log.warning("janitor removed leftovers of dead runs: %s", ", ".join(removed))
    return removed


def clear_testbed(ctx: WorkerContext, testbed: str, run_id: int) -> list[str]:
    """Make ``testbed``, just leased by run ``run_id``, clean on this host; returns what went.

    The lease is this run's now, so nothing an earlier run made for the testbed may stay, even
    if its owner still lives (a hung run whose lease expired, the keeper of an expired hold):
    every other record of this testbed in the data folder is torn down (a control twin's record
    names the same testbed), and so are the objects of the previous holder's tags (its own and
    its control's) that no record lists. Only ``cf-`` objects of this instance's
    tags are touched, and the previous holder's processes are found by cookie, never by name.
    """
    settings = ctx.settings
    own = run_tag(settings, run_id)
    with session_scope(ctx.session_factory) as session:
        previous = session.scalar(
            select(models.Run.id)
            .where(models.Run.testbed == testbed, models.Run.id != run_id,
                   models.Run.started_at.is_not(None))
            .order_by(models.Run.started_at.desc(), models.Run.id.desc()).limit(1))
    tags = {record.tag for record in records.read_all(settings.records_dir).values()
            if record is not None and record.testbed == testbed and record.tag != own}
    if previous is not None:  # its own testbed and, in an A/B run, its control's twin
        tags.update((run_tag(settings, previous), control_tag(settings, previous)))
    if not tags:
        return []
    removed = reaper.reap(settings.records_dir, stale_tags=sorted(tags),
                          orphan_tags=tags, owned_prefix=run_tag_prefix(settings))
    if removed:
        log.warning("janitor: before run %s on testbed %s, removed %s", run_id, testbed,
                    ", ".join(removed))
    return removed


def keep(records_dir: Path, tag: str, lifetime: timedelta) -> int | None:
    """Hand testbed ``tag``'s record to a keeper process that lives for ``lifetime`` (plus grace).

    From then on the reaper sees a live owner and leaves the testbed alone, whoever restarts.
    Returns the keeper's pid; None when there is no record (nothing left to keep).
    """
    record = records.read(records.path_for(records_dir, tag))
    if record is None:
        return None
    seconds = int((lifetime + KEEPER_GRACE).total_seconds())
    # Its own session, and no testbed cookie: neither a worker's death nor a teardown by cookie
    # takes it down; only its deadline or release() does.
    keeper = subprocess.Popen(["sleep", str(seconds)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, close_fds=True)
    records.write(records_dir, replace(record, owner_pid=keeper.pid,
                                       owner_ticks=start_ticks(keeper.pid)))
    return keeper.pid


def release(records_dir: Path, tag: str) -> list[str]:
    """Stop the keeper of a held testbed and tear the testbed down from its record."""
    path = records.path_for(records_dir, tag)
    record = records.read(path)
    if record is None:
        return []
    if pid_alive(record.owner_pid, record.owner_ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(record.owner_pid, signal.SIGKILL)
    return reaper.destroy(record, records_dir)


def sweep_holds(ctx: WorkerContext) -> list[int]:
    """Expire holds whose time is up and tear down released ones kept on this host.

    Returns the holds whose testbed was torn down. A testbed that will not go away keeps its hold
    in ``releasing``, so the next pass tries again.
    """
    host = socket.gethostname()
    with session_scope(ctx.session_factory) as session:
        expired = autohold.expire_due(session, ctx.clock)
        if expired:
            log.info("holds expired: %s", expired)
            reconcile_after_commit(session, ctx.dispatcher)  # their testbeds are free again
        pending = [(h.id, h.tag) for h in autohold.releasing_on(session, host)]
    done: list[int] = []
    for hold_id, tag in pending:
        try:
            removed = release(ctx.settings.records_dir, tag) if tag else []
        except InfraError as exc:
            log.error("could not tear down the testbed of hold %s (tag %s): %s", hold_id, tag,
                      exc)
            continue
        log.warning("hold %s released: removed %s", hold_id, ", ".join(removed) or "nothing")
        with session_scope(ctx.session_factory) as session:
            autohold.torn_down(session, hold_id, ctx.clock)
        done.append(hold_id)
    return done
