"""Engines and sessions, the same code for SQLite (embedded default) and PostgreSQL.

Transactions are committed at the boundary — the request dependency, the task wrapper, the CLI
command — via :func:`session_scope`; services only flush. Work that must follow a commit (sending a
Celery task) registers with :func:`after_commit`, so a task never races ahead of the row it reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_AFTER_COMMIT = "certifier_after_commit"
CONNECT_TIMEOUT_S = 10  # PostgreSQL; a URL's own ?connect_timeout= wins
LOCK_TIMEOUT_S = 30
"""PostgreSQL: the longest a statement waits for a lock (a row, the passes' or the promotion
lock) before it fails with a clear error, as long as SQLite's ``busy_timeout``. Without it a
person's action behind a stuck pass, or a pass behind a forgotten transaction, waits forever.
Set on each new connection, so it passes connection poolers that refuse startup options; a
``lock_timeout`` in the URL's ``?options=`` or in ``PGOPTIONS`` wins."""


def make_engine(url: str, *, lock_timeout_s: float | None = LOCK_TIMEOUT_S,
                **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs for concurrent workers;
    ``lock_timeout_s``: PostgreSQL's lock timeout (None: the server's, which waits forever)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # Pre-ping: a connection the server dropped (a restart) is replaced, not handed out.
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    query = make_url(url).query
    if "connect_timeout" not in query:
        # A database host that accepts nothing and refuses nothing would otherwise hold each
        # connecting request for the kernel's TCP timeout (minutes): bound it, then 503.
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        kwargs["connect_args"] = connect_args
    engine = create_engine(url, **kwargs)
    options = query.get("options", "")
    options = " ".join(options) if isinstance(options, tuple) else options
    if lock_timeout_s is None or "lock_timeout" in f"{options} {os.environ.get('PGOPTIONS')}":
        return engine
    setting = f"SET lock_timeout = '{round(lock_timeout_s * 1000)}ms'"

    @event.listens_for(engine, "connect")
    def _lock_timeout(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a session setting, outside any transaction
        with dbapi_conn.cursor() as cur:
            cur.execute(setting)
        dbapi_conn.autocommit = autocommit

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], None], *, once: bool = False) -> None:
    """Run ``callback`` once the session's current transaction commits (dropped on rollback).

    ``once``: not if an equal callback (the same bound method) is already waiting, so services
    that each ask for the same after-commit work in one transaction cause it once.
    """
    pending = session.info.setdefault(_AFTER_COMMIT, [])
    if not (once and callback in pending):
        pending.append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    """Run the callbacks; one that fails is logged and the others still run.

    The transaction is committed by now and nothing can undo it. Raising here would make a
    committed request answer 500, and make a task take a broker outage for a database error
    (SQLAlchemy refuses the rollback that follows: "session is in 'committed' state"). Every
    task sent after a commit has a way back: the delivery sweep, the run redispatch, beat.
    """
    callbacks = session.info.pop(_AFTER_COMMIT, [])
    for callback in callbacks:
        try:
            callback()
        except Exception as exc:  # a broker error, typically; see above
            log.warning("a task could not be sent after the commit (it will be sent again "
                        "later): %s", exc)


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
