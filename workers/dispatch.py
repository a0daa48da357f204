"""The Celery implementation of the services' Dispatcher: send tasks by name, ids only.

Importing this module imports no Celery: the app is handed in, or built by
:class:`OnFirstSend` only when something is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RUN_TASK = "certifier.execute_run"
RECONCILE_TASK = "certifier.reconcile"
PROCESS_DELIVERY_TASK = "certifier.process_delivery"
POLL_COMPONENT_TASK = "certifier.poll_component"
POLL_DUE_TASK = "certifier.poll_due"
SWEEP_DELIVERIES_TASK = "certifier.sweep_deliveries"
DELIVER_NOTIFICATIONS_TASK = "certifier.deliver_notifications"
ARCHIVE_TASK = "certifier.archive_known_goods"


class OnFirstSend:
    """Stands in for a Celery app that is built when the first task is sent: a command that may
    send nothing (``certifier reconcile`` with no run to start) then builds no app at all."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._app: Any = None

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        if self._app is None:
            self._app = self._build()
        return self._app.send_task(*args, **kwargs)


class CeleryDispatcher:
    def __init__(self, app: Any) -> None:
        self._app = app

    def enqueue_run(self, run_id: int) -> None:
        self._app.send_task(RUN_TASK, args=[run_id])

    def request_reconcile(self) -> None:
        self._app.send_task(RECONCILE_TASK)

    # Upstream tracking (certifier.tracking.deliveries.TrackingDispatcher). No publish retries:
    # the delivery is already stored, and the sweep sends it again if the broker is down.
    def process_delivery(self, delivery_id: int) -> None:
        self._app.send_task(PROCESS_DELIVERY_TASK, args=[delivery_id], retry=False)

    def poll_component(self, component_id: int) -> None:
        self._app.send_task(POLL_COMPONENT_TASK, args=[component_id], retry=False)

    # Outgoing notifications (certifier.pipeline.notify.NotificationDispatcher): no publish
    # retries either; the rows are stored and beat's next tick sends them.
    def deliver_notifications(self) -> None:
        self._app.send_task(DELIVER_NOTIFICATIONS_TASK, retry=False)
