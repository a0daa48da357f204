"""The Celery app, built from the same Settings object as the web app.

Redis when ``CERTIFIER_BROKER_URL`` is set; otherwise an embedded broker that needs no server:
kombu's filesystem transport in the data folder, served to a real worker process (not eager
mode). Tasks acknowledge late and are idempotent, so a redelivery does no harm; beat sends the
reconcile pass that drives soak re-runs.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutting_down
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from sqlalchemy.exc import SQLAlchemyError

from certifier.db.session import session_scope
from certifier.pipeline import notify, runs, scheduler
from certifier.settings import Settings
from certifier.tracking import deliveries, polling
from certifier.tracking.sources import source_factory
from workers import archive, broker, janitor, runner
from workers.context import WorkerContext
from workers.dispatch import (
    ARCHIVE_TASK,
    DELIVER_NOTIFICATIONS_TASK,
    POLL_COMPONENT_TASK,
    POLL_DUE_TASK,
    PROCESS_DELIVERY_TASK,
    RECONCILE_TASK,
    RUN_TASK,
    SWEEP_DELIVERIES_TASK,
    CeleryDispatcher,
)

log = logging.getLogger(__name__)
NOTIFY_BUDGET_S = 30  # seconds of POSTs per notification pass

_stopping = False
"""Set in the worker's main process once its warm shutdown has begun.

Stopping a worker (``certifier.processes.stop``) sends SIGTERM to its whole process group: a
pool process running a run turns it into SystemExit and tears its testbed down. But Celery's
main process replaces pool processes that die while it waits out its warm shutdown, and hands
a message it had already prefetched to the new one, which never saw the SIGTERM: its run would
build a testbed only to be SIGKILLed at the end of the grace period, leaving it to the next
worker's janitor (seen: a soak run's calibration probe, left behind by
tests/faults/test_worker_sigkill.py). A pool process forked after this flag is set inherits
it, and declines to start a run: the run stays pending and the scheduler sends it again
(``redispatch_after``) to whichever worker comes next."""


@worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    """Mark this process as stopping (one receiver for the module, however many apps it builds)."""
    global _stopping
    _stopping = True


class _RedisQoS(kombu_redis.QoS):
    """kombu's Redis acknowledgements, except that the prefetch slot is freed even when the
    acknowledgement cannot reach Redis.

    kombu removes the message from Redis' unacked index first and forgets it locally after; with
    Redis down the first step raises, the worker counts the message as in flight for ever, and
    once ``prefetch`` acks have failed it never asks Redis for work again, not even after Redis
    is back (found by tests/faults/test_redis_restart.py). Forgetting it anyway is safe: a
    message still in Redis' unacked index is restored after the visibility timeout and run
    again, and every task is idempotent. The error is still raised, so kombu still logs it.
    """

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except Exception:
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            raise

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except Exception:
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            raise


class _RedisChannel(kombu_redis.Channel):
    QoS = _RedisQoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`_RedisQoS`; chosen by ``broker_transport``."""

    Channel = _RedisChannel


def broker_options(settings: Settings) -> dict[str, Any]:
    if not settings.embedded_broker:
        timeout = int(settings.config.scheduler.run_timeout.total_seconds()) + 600
        # A send to a broker that is down fails after one quick reconnect instead of kombu's
        # default ~6 s of retries: the API sends after its commit, inside the request, and every
        # task it sends has a path back (delivery sweep, run redispatch, beat's reconcile).
        # The worker's own reconnect loop (broker_connection_max_retries) is not affected.
        fail_fast = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5,
                     "interval_max": 0.5}
        plain_redis = urlsplit(str(settings.broker_url)).scheme in ("redis", "rediss")
        return {"broker_url": settings.broker_url,
                **({"broker_transport": f"{__name__}:RedisTransport"} if plain_redis else {}),
                "broker_transport_options": {"visibility_timeout": timeout, **fail_fast},
                "result_backend_transport_options": {"visibility_timeout": timeout},
                # Nothing uses remote control (`celery inspect`), and its pub/sub channel is
                # where kombu's Redis transport can crash the whole worker when Redis restarts
                # ("Unrecoverable error: AttributeError ... 'hostname'", a race in
                # kombu 5.7 found by tests/faults/test_redis_restart.py).
                "worker_enable_remote_control": False}
    folder = (settings.data_dir / "broker").resolve()
    (folder / "queue").mkdir(parents=True, exist_ok=True)
    (folder / "processed").mkdir(parents=True, exist_ok=True)
    (folder / "control").mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": broker.register(),  # kombu's filesystem transport, atomic writes
        "broker_transport_options": {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        },
    }


def _task(app: Celery, name: str, **options: Any) -> Any:
    """``app.task`` for a task that closes over this app's context: registered on this app only,
    and at once, acknowledged late.

    A shared task is registered once per process, and a second app (tests, benchmarks, the CLI)
    would run the first app's closure against the first app's database. ``shared=False`` alone
    does not prevent it: in a process whose environment has ``FORKED_BY_MULTIPROCESSING`` (a
    spawned pool child and whatever it starts), Celery turns every lazy ``app.task`` into a
    shared task, and the second app warns ``DuplicateTaskNameWarning`` for each name (for
    ``certifier.sweep_deliveries`` first) and keeps the first app's tasks. ``lazy=False`` skips
    that path."""
    return app.task(name=name, acks_late=True, shared=False, lazy=False, **options)


def create_celery(settings: Settings, ctx: WorkerContext | None = None) -> Celery:
    app = Celery("certifier")
    sched = settings.config.scheduler
    run_limit = sched.run_timeout.total_seconds()
    app.conf.update(
        **broker_options(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue="certifier",
        beat_schedule={
            "reconcile": {"task": RECONCILE_TASK,
                          "schedule": sched.reconcile_interval.total_seconds()},
            "poll-due": {"task": POLL_DUE_TASK,
                         "schedule": settings.config.tracking.poll_tick.total_seconds()},
            "sweep-deliveries": {"task": SWEEP_DELIVERIES_TASK,
                                 "schedule": settings.config.tracking.sweep_interval
                                 .total_seconds()},
            "deliver-notifications": {"task": DELIVER_NOTIFICATIONS_TASK,
                                      "schedule": settings.config.notifications.tick
                                      .total_seconds()},
        },
        beat_schedule_filename=str((settings.data_dir / "celerybeat-schedule").resolve()),
    )
    context = ctx or WorkerContext(settings)
    context.dispatcher = CeleryDispatcher(app)
    app.certifier = context
    # Every task closes over this app's context (its database, its clock), so none is shared
    # (see _task).

    @_task(app, RUN_TASK, bind=True, max_retries=720,
           # The task is killed before the scheduler may expire the run (at run_timeout) and
           # hand its testbed to another run: never two runs on one testbed.
           time_limit=max(run_limit - 30, 60), soft_time_limit=max(run_limit - 90, 30))
    def execute_run(self: Any, run_id: int) -> str:
        if _stopping:
            log.warning("run %s not started: this worker is shutting down (it stays pending "
                        "and is sent again)", run_id)
            return "declined: worker shutting down"
        claim = runner.execute(context, run_id)
        if claim is runs.Claim.BUSY:
            raise self.retry(countdown=5)
        return str(claim)

    @_task(app, RECONCILE_TASK, time_limit=300)
    def reconcile() -> dict[str, list[int]]:
        with session_scope(context.session_factory) as session:
            report = scheduler.reconcile(session, context.clock, context.scheduler_policy,
                                         context.dispatcher)
        released = janitor.sweep_holds(context)  # autoholds: expire, tear down released ones
        janitor.sweep_dead(context)  # testbeds of runs that died while this worker lives on
        try:  # known-goods' sources, bundled once per archive; the work has its own task
            if archive.missing(context):
                app.send_task(ARCHIVE_TASK, retry=False)
        except Exception:  # the pass is committed: a later one asks again
            log.exception("cannot check or request the known-good archive")
        return {**{k: v for k, v in vars(report).items() if v},
                **({"holds_torn_down": released} if released else {})}

    @_task(app, ARCHIVE_TASK, time_limit=1800, soft_time_limit=1740)
    def archive_known_goods() -> dict[str, Any]:
        kept = archive.keep_known_goods(context)
        return {"written": {str(v): b for v, b in kept.written.items()}, "failed": kept.failed}

    _tracking_tasks(app, context, settings)

    # Outgoing webhooks: the POSTs of one pass stop after NOTIFY_BUDGET_S; the limit leaves
    # room for the last POST's timeout (at most 60 s) on top.
    @_task(app, DELIVER_NOTIFICATIONS_TASK, time_limit=NOTIFY_BUDGET_S + 120,
           soft_time_limit=NOTIFY_BUDGET_S + 90)
    def deliver_notifications() -> dict[str, list[int]]:
        report = notify.deliver_due(context.session_factory, context.clock,
                                    settings.config.notifications, budget_s=NOTIFY_BUDGET_S)
        return {k: v for k, v in vars(report).items() if v}

    @worker_ready.connect(weak=False)
    def _on_ready(**_: Any) -> None:
        janitor.recover(context)

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: Any) -> None:
        context.after_fork()

    return app


def _tracking_tasks(app: Celery, context: WorkerContext, settings: Settings) -> None:
    """Upstream tracking: process stored webhook deliveries, poll components, sweep lost ones."""
    tracking = settings.config.tracking
    sources = source_factory(settings.tracking_dir.resolve(),
                             tracking.http_timeout.total_seconds(),
                             tracking.git_timeout.total_seconds(), settings.config.sources)
    source_time = 3 * tracking.git_timeout.total_seconds() + 60

    @_task(app, PROCESS_DELIVERY_TASK, bind=True, max_retries=5, time_limit=source_time + 30,
           soft_time_limit=source_time)
    def process_delivery(self: Any, delivery_id: int) -> str:
        try:
            return deliveries.process(context.session_factory, delivery_id, sources,
                                      context.clock, context.dispatcher,
                                      tracking.max_new_commits).outcome
        except SQLAlchemyError as exc:  # the row stays pending: a retry, else the sweep
            raise self.retry(countdown=5, exc=exc) from exc

    @_task(app, POLL_COMPONENT_TASK, time_limit=source_time + 30, soft_time_limit=source_time)
    def poll_component(component_id: int) -> str:
        result = polling.poll(context.session_factory, component_id, sources, context.clock,
                              context.dispatcher, limit=tracking.max_new_commits,
                              max_backoff=tracking.poll_max_backoff)
        return result.outcome

    @_task(app, POLL_DUE_TASK, time_limit=120)
    def poll_due() -> list[int]:
        with session_scope(context.session_factory) as session:
            due = polling.due(session, context.clock)
        for component_id in due:
            context.dispatcher.poll_component(component_id)
        return due

    @_task(app, SWEEP_DELIVERIES_TASK, time_limit=120)
    def sweep_deliveries() -> list[int]:
        with session_scope(context.session_factory) as session:
            return deliveries.sweep(session, context.clock, tracking.redispatch_after,
                                    context.dispatcher)
