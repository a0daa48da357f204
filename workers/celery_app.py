"""The Celery app, built from the same Settings object as the web app.

Redis when ``CERTIFIER_BROKER_URL`` is set; otherwise an embedded broker that needs no server:
kombu's filesystem transport in the data folder, served to a real worker process (not eager
mode). Tasks acknowledge late and are idempotent, so a redelivery does no harm; beat sends the
reconcile pass that drives soak re-runs.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from certifier.db.session import session_scope
from certifier.pipeline import runs, scheduler
from certifier.settings import Settings
from workers import janitor, runner
from workers.context import WorkerContext
from workers.dispatch import RECONCILE_TASK, RUN_TASK, CeleryDispatcher

log = logging.getLogger(__name__)


def broker_options(settings: Settings) -> dict[str, Any]:
    if not settings.embedded_broker:
        timeout = int(settings.config.scheduler.run_timeout.total_seconds()) + 600
        return {"broker_url": settings.broker_url,
                "broker_transport_options": {"visibility_timeout": timeout},
                "result_backend_transport_options": {"visibility_timeout": timeout}}
    folder = (settings.data_dir / "broker").resolve()
    (folder / "queue").mkdir(parents=True, exist_ok=True)
    (folder / "processed").mkdir(parents=True, exist_ok=True)
    (folder / "control").mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        },
    }


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
        },
        beat_schedule_filename=str((settings.data_dir / "celerybeat-schedule").resolve()),
    )
    context = ctx or WorkerContext(settings)
    context.dispatcher = CeleryDispatcher(app)
    app.certifier = context

    @app.task(name=RUN_TASK, bind=True, acks_late=True, max_retries=720,
              time_limit=run_limit + 120, soft_time_limit=run_limit + 60)
    def execute_run(self: Any, run_id: int) -> str:
        claim = runner.execute(context, run_id)
        if claim is runs.Claim.BUSY:
            raise self.retry(countdown=5)
        return str(claim)

    @app.task(name=RECONCILE_TASK, acks_late=True, time_limit=300)
    def reconcile() -> dict[str, list[int]]:
        with session_scope(context.session_factory) as session:
            report = scheduler.reconcile(session, context.clock, context.scheduler_policy,
                                         context.dispatcher)
        return {k: v for k, v in vars(report).items() if v}

    @worker_ready.connect(weak=False)
    def _on_ready(**_: Any) -> None:
        janitor.recover(context)

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: Any) -> None:
        context.after_fork()

    return app
