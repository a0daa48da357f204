"""The seam between services and the task queue.

Services never import Celery; they hand ids to a :class:`Dispatcher` after the transaction
commits. The Celery implementation lives in ``workers/dispatch.py``; tests use
:class:`RecordingDispatcher`. There is one protocol with every task the services send, and
every dispatcher implements all of it (mypy checks that), so no call is silently dropped because
a dispatcher lacks a method.

Services register their own after-commit work, so the API, the CLI and tasks behave the same:
the boundary that opens a session says where that work goes (:func:`bind`: its dispatcher, and
who hears that the known-good changed, e.g. the API's manifest cache), and a service that changes
what the scheduler acts on calls :func:`reconcile_after_commit`, one that changes the known-good
:func:`known_good_changed`. Both fire only once the transaction commits and are dropped on a
rollback. An unbound session (a one-shot script) sends nothing.

A run is sent without a testbed: every worker consumes the one queue, and the claim
(``runs.claim``, bound to one testbed for a ``certifier worker --testbed``) decides where it runs,
from the leases at that moment. Picking a testbed here would mean guessing which one will be
free (docs/architecture.md, "Scale-out").
"""

from __future__ import annotations

from collections.abc import Callable
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


_BOUND = "certifier_dispatcher"
_KNOWN_GOOD_LISTENERS = "certifier_known_good_listeners"


def bind(session: Session, dispatcher: Dispatcher,
         on_known_good_change: Callable[[], None] | None = None) -> Session:
    """Where this session's after-commit work goes; called by the boundary that opened it.

    The binding lasts as long as the session (every transaction of it), unlike the after-commit
    callbacks, which belong to one transaction.
    """
    session.info[_BOUND] = dispatcher
    listeners = session.info.setdefault(_KNOWN_GOOD_LISTENERS, [])
    if on_known_good_change is not None:
        listeners.append(on_known_good_change)
    return session


def bound(session: Session) -> Dispatcher | None:
    """The dispatcher :func:`bind` gave this session, if any."""
    dispatcher: Dispatcher | None = session.info.get(_BOUND)
    return dispatcher


def enqueue_run_after_commit(session: Session, dispatcher: Dispatcher, run_id: int) -> None:
    after_commit(session, lambda: dispatcher.enqueue_run(run_id))


def reconcile_after_commit(session: Session, dispatcher: Dispatcher | None = None) -> None:
    """Ask for a reconcile pass once this transaction commits; extra passes are harmless, but
    one transaction asks once. Without ``dispatcher``, the session's bound one (if any)."""
    dispatcher = dispatcher or bound(session)
    if dispatcher is not None:
        after_commit(session, dispatcher.request_reconcile, once=True)


def known_good_changed(session: Session) -> None:
    """Tell the session's listeners, once this transaction commits, that the known-good changed
    (a promotion or a revocation): a cache of the manifest is stale from the commit on, and
    clearing it before would let a concurrent read cache the old manifest again."""
    for listener in session.info.get(_KNOWN_GOOD_LISTENERS, ()):
        after_commit(session, listener, once=True)
