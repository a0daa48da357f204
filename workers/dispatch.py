"""The Celery implementation of the services' Dispatcher: send tasks by name, ids only.

Importing this module imports no Celery: the app is handed in, or built by
:class:`OnFirstSend` only when something is sent. :class:`OnDemandDispatcher` is the one-shot
commands' (``certifier candidate mark-bad`` …): built on the same, it reports a failed send
instead of raising it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from certifier.pipeline.dispatch import Dispatcher
from certifier.settings import Settings

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


class CeleryDispatcher(Dispatcher):
    """The services' ``Dispatcher`` (certifier/pipeline/dispatch.py), every method of it."""

    def __init__(self, app: Any) -> None:
        self._app = app

    def enqueue_run(self, run_id: int) -> None:
        self._app.send_task(RUN_TASK, args=[run_id])

    def request_reconcile(self) -> None:
        self._app.send_task(RECONCILE_TASK)

    # Upstream tracking. No publish retries:
    # the delivery is already stored, and the sweep sends it again if the broker is down.
    def process_delivery(self, delivery_id: int) -> None:
        self._app.send_task(PROCESS_DELIVERY_TASK, args=[delivery_id], retry=False)

    def poll_component(self, component_id: int) -> None:
        self._app.send_task(POLL_COMPONENT_TASK, args=[component_id], retry=False)

    # Outgoing notifications: no publish retries either; the rows are stored and beat's next
    # tick sends them.
    def deliver_notifications(self) -> None:
        self._app.send_task(DELIVER_NOTIFICATIONS_TASK, retry=False)


class OnDemandDispatcher(Dispatcher):
    """A :class:`CeleryDispatcher` built at the first send; a send that fails goes to
    ``on_error`` instead of being raised (the periodic passes do the work anyway)."""

    def __init__(self, settings: Settings, on_error: Callable[[Exception], None]) -> None:
        self._on_error = on_error
        self._celery = CeleryDispatcher(OnFirstSend(lambda: _create_celery(settings)))

    def _send(self, send: Callable[[CeleryDispatcher], None]) -> None:
        try:
            send(self._celery)
        except Exception as exc:  # any broker trouble: reported, never raised
            self._on_error(exc)

    def enqueue_run(self, run_id: int) -> None:
        self._send(lambda celery: celery.enqueue_run(run_id))

    def request_reconcile(self) -> None:
        self._send(lambda celery: celery.request_reconcile())

    def process_delivery(self, delivery_id: int) -> None:
        self._send(lambda celery: celery.process_delivery(delivery_id))

    def poll_component(self, component_id: int) -> None:
        self._send(lambda celery: celery.poll_component(component_id))

    def deliver_notifications(self) -> None:
        self._send(lambda celery: celery.deliver_notifications())


def _create_celery(settings: Settings) -> Any:
    from workers.celery_app import create_celery  # it imports this module

    return create_celery(settings)
