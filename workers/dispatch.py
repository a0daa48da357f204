"""The Celery implementation of the services' Dispatcher: send tasks by name, ids only."""

from __future__ import annotations

from typing import Any

RUN_TASK = "certifier.execute_run"
RECONCILE_TASK = "certifier.reconcile"


class CeleryDispatcher:
    def __init__(self, app: Any) -> None:
        self._app = app

    def enqueue_run(self, run_id: int) -> None:
        self._app.send_task(RUN_TASK, args=[run_id])

    def request_reconcile(self) -> None:
        self._app.send_task(RECONCILE_TASK)
