"""The seam between services and the task queue.

Services never import Celery; they hand ids to a :class:`Dispatcher` after the transaction
commits. The Celery implementation lives in ``workers/dispatch.py``; tests use
:class:`RecordingDispatcher`. There is one protocol with every task the services send, and
every dispatcher implements all of it (mypy checks that), so no call is silently dropped because
a dispatcher lacks a method.

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
    """Every task a service sends, by id. Sending may raise (a broker outage): the callers that
    must not fail for it guard the call (``deliveries.send_after_commit``, ``notify``)."""

    def enqueue_run(self, run_id: int) -> None: ...

    def request_reconcile(self) -> None: ...

    def process_delivery(self, delivery_id: int) -> None:
        """Process one stored webhook delivery (upstream tracking)."""
        ...

    def poll_component(self, component_id: int) -> None:
        """Poll one component's upstream now (upstream tracking)."""
        ...

    def deliver_notifications(self) -> None:
        """Send the outgoing notifications that are due."""
        ...


class NullDispatcher(Dispatcher):
    """Dispatches nothing: for read-only processes and one-shot CLI commands."""

    def enqueue_run(self, run_id: int) -> None:
        return None

    def request_reconcile(self) -> None:
        return None

    def process_delivery(self, delivery_id: int) -> None:
        return None

    def poll_component(self, component_id: int) -> None:
        return None

    def deliver_notifications(self) -> None:
        return None


class RecordingDispatcher(Dispatcher):
    """Remembers what it was asked to send, for tests."""

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.reconciles = 0
        self.deliveries: list[int] = []
        self.polls: list[int] = []
        self.notification_passes = 0

    def enqueue_run(self, run_id: int) -> None:
        self.runs.append(run_id)

    def request_reconcile(self) -> None:
        self.reconciles += 1

    def process_delivery(self, delivery_id: int) -> None:
        self.deliveries.append(delivery_id)

    def poll_component(self, component_id: int) -> None:
        self.polls.append(component_id)

    def deliver_notifications(self) -> None:
        self.notification_passes += 1


def enqueue_run_after_commit(session: Session, dispatcher: Dispatcher, run_id: int) -> None:
    after_commit(session, lambda: dispatcher.enqueue_run(run_id))


def reconcile_after_commit(session: Session, dispatcher: Dispatcher) -> None:
    """Ask for a reconcile pass once this transaction commits; extra passes are harmless."""
    after_commit(session, dispatcher.request_reconcile)
