"""Shared database fixtures: every test that asks for the database runs on SQLite and PostgreSQL.

``database_url`` is one migrated database per backend for the whole session (the schema comes from
``migrate.upgrade``, never ``create_all``, so the tests also prove the migrations). Each test then
gets ``session_factory`` on one connection inside an outer transaction that is rolled back when
the test ends; sessions join it through SAVEPOINTs, so code under test may ``commit()`` as in
production and still leave nothing behind. ``empty_database_url`` is a fresh, unmigrated database
of its own for tests of the migrations themselves. ``world`` is the usual starting point of a
pipeline test on that database: one component and one gate testbed, built by
``tests/factories.World`` on the shared fake ``clock``.

PostgreSQL is ``postgresql://postgres@127.0.0.1:5432/test`` unless ``CERTIFIER_TEST_POSTGRES_URL``
says otherwise; each test database is created there and dropped afterwards. If the server is not
reachable the PostgreSQL half is skipped on a workstation, but fails under ``CI=true``: CI must
never go green by quietly testing one backend.

``no_testbed_left_behind`` watches the whole session: a ``cf-`` network namespace that appears
during the tests and is still there at the end is an error, since every namespace a run (or a
test) creates must be removed afterwards, also after a crash — a test that kills a worker must
leave a worker behind it that reaps. Run nothing else that builds Certifier testbeds beside
the tests (a demo, the noise harness): its namespaces would be counted too.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from certifier.db import migrate
from certifier.db.session import make_engine
from certifier.domain.clock import FakeClock
from tests.factories import World
from tests.requirements import unavailable
from workers.testbed.netns import list_namespaces

BACKENDS = ["sqlite", "postgresql"]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

_database_numbers = itertools.count()
_postgres_errors: list[str] = []  # remembered, so an absent server costs one timeout, not many


def postgres_admin_url() -> str:
    """The PostgreSQL database we connect to in order to create and drop the test databases."""
    return os.environ.get("CERTIFIER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _postgres_unavailable(reason: str) -> NoReturn:
    where = make_url(postgres_admin_url()).render_as_string(hide_password=True)
    message = f"PostgreSQL at {where} is not reachable ({reason})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires the PostgreSQL tests to run", pytrace=False)
    pytest.skip(f"{message}; set CERTIFIER_TEST_POSTGRES_URL to run the PostgreSQL tests")


TEST_REDIS_URL = os.environ.get("CERTIFIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _certifier_namespaces() -> set[str]:
    return {name for name in list_namespaces() if name.startswith("cf-")}


@pytest.fixture(scope="session", autouse=True)
def no_testbed_left_behind() -> Iterator[None]:
    """Fail the session if a ``cf-`` namespace made during it outlives it (root only: nobody
    else can make one)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield
        return
    before = _certifier_namespaces()
    yield
    left = sorted(_certifier_namespaces() - before)
    if left:
        raise AssertionError(
            f"{len(left)} network namespace(s) made during the tests are still there: "
            f"{' '.join(left)} (a testbed whose teardown or reaping failed; or another "
            "Certifier instance on this machine built them meanwhile)")


@contextmanager
def flushed_redis_database(number: int) -> Iterator[str]:
    """Redis database ``number`` on the test server, flushed before and after; its URL.

    Each process-level test takes its own number (e2e 11, scale-out 12), so they never see
    each other's messages.
    """
    import redis  # here: most tests need no Redis client

    base, _, _ = TEST_REDIS_URL.rpartition("/")
    url = f"{base}/{number}"
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url} does not answer: {exc}")
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@contextmanager
def fresh_postgres_database(name: str) -> Iterator[str]:
    """Create database ``name`` on the test server, yield its URL, drop it afterwards."""
    if _postgres_errors:
        _postgres_unavailable(_postgres_errors[0])
    admin = make_engine(
        postgres_admin_url(),
        isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE cannot run inside a transaction
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        _postgres_errors.append(str(exc.orig or exc).strip().splitlines()[0])
        _postgres_unavailable(_postgres_errors[0])
    try:
        url = make_url(postgres_admin_url()).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:  # FORCE: a leaked connection must not keep it alive
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _empty_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    number = next(_database_numbers)
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp(f'db{number}') / 'certifier.sqlite'}"
        return
    with fresh_postgres_database(f"certifier_unit_{os.getpid()}_{number}") as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS, ids=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per backend for the session, migrated to head."""
    with _empty_database(request.param, tmp_path_factory) as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh database of the test's own, never migrated, dropped when the test ends."""
    with _empty_database(request.param, tmp_path_factory) as url:
        yield url


def _sqlite_transactions_we_control(engine: Engine) -> None:
    """Make pysqlite's SAVEPOINTs nest inside our outer transaction.

    pysqlite's legacy mode emits BEGIN only before DML, so a SAVEPOINT issued first would open a
    transaction of its own and "rolling back" the test would keep its rows. We switch pysqlite's
    own BEGIN off and emit it ourselves whenever SQLAlchemy begins (SQLAlchemy's documented recipe).
    The listener is added after make_engine's, so the WAL pragma still runs outside a transaction.
    """

    @event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _emit_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the session's migrated database; its connections carry the rolled-back tests."""
    engine = make_engine(database_url)
    if engine.dialect.name == "sqlite":
        _sqlite_transactions_we_control(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db_connection(engine: Engine) -> Iterator[Connection]:
    """One connection in an outer transaction that is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            if transaction.is_active:
                transaction.rollback()


@pytest.fixture
def session_factory(db_connection: Connection) -> sessionmaker[Session]:
    """Sessions for code under test: their commits release SAVEPOINTs in the outer transaction."""
    return sessionmaker(
        bind=db_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def clock() -> FakeClock:
    """The test's fake clock: the world, the app and the services under test all read it."""
    return FakeClock()


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FakeClock) -> World:
    """Component ``nova`` and gate testbed ``gate1`` on the test's ``clock``. A module that needs
    more asks for this one and adds to it (``def world(world): world.testbed("gate2") ...``);
    tests/api and tests/web start from an empty world of their own."""
    w = World(session_factory, clock)
    w.component("nova")
    w.testbed("gate1")
    return w
