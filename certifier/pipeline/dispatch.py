"""The seam between services and the task queue.

Services never import Celery; they hand ids to a :class:`Dispatcher` after the transaction
commits. The Celery implementation lives in ``workers/dispatch.py``; tests use
:class:`RecordingDispatcher`.

A run is sent without a testbed: every worker consumes the one queue, and the claim
(``runs.claim``, bound to one testbed for a ``certifier worker --testbed``) decides where it runs,
from the leases at that moment. Picking a testbed here would mean guessing which one will be
free (docs/architecture.md, "Scale-out").
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from certifier.db.session import after_commit


class Dispatcher(Protocol):
    def enqueue_run(self, run_id: int) -> None: ...

    def request_reconcile(self) -> None: ...


class NullDispatcher:
    """Dispatches nothing: for read-only processes and one-shot CLI commands."""

    def enqueue_run(self, run_id: int) -> None:
        return None

    def request_reconcile(self) -> None:
        return None


class RecordingDispatcher:
    """Remembers what it was asked to send, for tests."""

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.reconciles = 0

    def enqueue_run(self, run_id: int) -> None:
        self.runs.append(run_id)

    def request_reconcile(self) -> None:
        self.reconciles += 1


def enqueue_run_after_commit(session: Session, dispatcher: Dispatcher, run_id: int) -> None:
    after_commit(session, lambda: dispatcher.enqueue_run(run_id))


def reconcile_after_commit(session: Session, dispatcher: Dispatcher) -> None:
    """Ask for a reconcile pass once this transaction commits; extra passes are harmless."""
    after_commit(session, dispatcher.request_reconcile)
