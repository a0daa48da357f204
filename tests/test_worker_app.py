"""Building the Celery app, as the processes and the CLI do, and sending through it lazily."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from celery.app import base as celery_base
from celery.exceptions import DuplicateTaskNameWarning
from celery.signals import worker_shutting_down

from certifier.settings import Settings
from workers import celery_app
from workers.celery_app import create_celery
from workers.dispatch import (
    RECONCILE_TASK,
    RUN_TASK,
    SWEEP_DELIVERIES_TASK,
    CeleryDispatcher,
    OnFirstSend,
)


def _two_apps(tmp_path: Path) -> tuple[Any, Any]:
    """Two apps in one process, as the CLI, tests and benchmarks build them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DuplicateTaskNameWarning)
        first = create_celery(Settings(data_dir=tmp_path / "a"))
        first.finalize()
        second = create_celery(Settings(data_dir=tmp_path / "b"))
        second.finalize()
    return first, second


def test_building_two_apps_in_one_process_warns_of_no_duplicate_task(tmp_path: Path) -> None:
    first, second = _two_apps(tmp_path)
    assert first.tasks[SWEEP_DELIVERIES_TASK] is not second.tasks[SWEEP_DELIVERIES_TASK]


def test_in_a_process_started_by_multiprocessing_each_app_keeps_its_own_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``FORKED_BY_MULTIPROCESSING`` in the environment, Celery makes a lazy task shared:
    the second app would warn for every name and run the first app's closures."""
    monkeypatch.setattr(celery_base, "USING_EXECV", "1")
    first, second = _two_apps(tmp_path)
    for name in (SWEEP_DELIVERIES_TASK, RECONCILE_TASK):
        assert first.tasks[name].app is first and second.tasks[name].app is second
        assert first.tasks[name].run is not second.tasks[name].run


def test_on_first_send_builds_the_app_only_when_a_task_is_sent() -> None:
    built: list[str] = []

    class App:
        def send_task(self, name: str, **options: Any) -> str:
            return f"sent {name}"

    def build() -> App:
        built.append("app")
        return App()

    dispatcher = CeleryDispatcher(OnFirstSend(build))
    assert built == []
    dispatcher.request_reconcile()
    dispatcher.enqueue_run(7)
    assert built == ["app"]


def test_a_worker_that_is_shutting_down_starts_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the warm shutdown has begun, a pool process (one Celery forks to replace a pool
    process the SIGTERM ended inherits the flag) declines a run instead of building a testbed
    that the grace period's SIGKILL would leave behind; the run stays pending for the next."""
    monkeypatch.setattr(celery_app, "_stopping", False)
    started: list[int] = []
    monkeypatch.setattr(celery_app.runner, "execute",
                        lambda ctx, run_id, *more: started.append(run_id) or "claimed")
    app = create_celery(Settings(data_dir=tmp_path / "data"))
    app.finalize()
    assert app.tasks[RUN_TASK].run(7) == "claimed" and started == [7]

    worker_shutting_down.send(sender="worker@test", sig="SIGTERM", how="Warm", exitcode=0)
    assert celery_app._stopping
    assert app.tasks[RUN_TASK].run(8) == "declined: worker shutting down"
    assert started == [7]
