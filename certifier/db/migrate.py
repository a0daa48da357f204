"""Schema migrations: upgrade, downgrade, report and check a database against the models.

The revisions live in the top-level ``migrations/`` folder; the Alembic configuration is built
here, so neither the CLI nor the processes need an ``alembic.ini`` (the one at the top level is for
people running ``alembic`` by hand). The API and the worker both upgrade at start, often at the
same moment, so an upgrade first takes a lock that only one process holds: an exclusive
``flock`` on a file next to the SQLite database, or a PostgreSQL session advisory lock. The
second process then waits, finds the schema at head, and does nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, String, make_url, text
from sqlalchemy.engine import Connection, Engine

from certifier.db.models import Base
from certifier.db.session import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# New revisions are date-prefixed, so ``ls migrations/versions`` reads in order of writing.
# ``%%`` because Alembic reads the option through configparser interpolation.
FILE_TEMPLATE = (
    "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s"
)

# Any fixed 64-bit key will do, as long as nothing else in the database uses it.
_PG_LOCK_KEY = 0x63657274_6D696772  # "certmigr"


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration for our ``migrations/`` folder, optionally bound to a connection.

    Handing env.py an open connection (rather than a URL) is what lets the caller hold the
    migration lock around the whole run.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("timezone", "UTC")
    config.set_main_option("truncate_slug_length", "40")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str | None:
    """The newest revision in ``migrations/versions`` (None if there are none)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision``, safely even if another process does it too."""
    # No lock timeout: a migration waits for the transactions before it, and for another
    # migrator, as long as they take (a service that starts fails instead of waiting 30 s).
    engine = make_engine(url, lock_timeout_s=None)
    try:
        with _migration_lock(engine, url), engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` drops every table)."""
    engine = make_engine(url)
    try:
        with _migration_lock(engine, url), engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def check(url: str, metadata: MetaData | None = None) -> list[str]:
    """Differences between the models (or ``metadata``) and the database's schema.

    An empty list means they agree. A database behind the newest revision is a difference too,
    so a model change without its migration and a missing upgrade both show up here.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": compare_type})
            at, newest = context.get_current_revision(), head()
            problems = [] if at == newest else [f"database at revision {at}, head is {newest}"]
            diffs = compare_metadata(context, metadata if metadata is not None else Base.metadata)
            return problems + [_describe(diff) for diff in diffs]
    finally:
        engine.dispose()


def compare_type(context: MigrationContext, _inspected_column: Any, _metadata_column: Any,
                 inspected_type: Any, metadata_type: Any) -> bool | None:
    """Alembic's type comparison, except that a VARCHAR length is no difference on SQLite.

    SQLite does not enforce lengths, and changing one there means rebuilding the table, which
    with ``foreign_keys=ON`` cascades a delete to every referencing row (a widened
    ``components.url`` would empty ``commits``). Migrations change lengths on PostgreSQL only.
    """
    if (context.dialect.name == "sqlite" and isinstance(inspected_type, String)
            and isinstance(metadata_type, String)):
        return False
    return None  # Alembic's own comparison


def _describe(diff: Any) -> str:
    """One line for one autogenerate difference (a tuple, or a list of column-modify tuples)."""
    if isinstance(diff, list):
        return "; ".join(_describe(part) for part in diff)
    operation = diff[0]
    if operation.startswith("modify_"):
        _, _schema, table, column, _existing, old, new = diff
        return f"{operation}: {table}.{column}: {old!r} -> {new!r}"
    if operation in ("add_column", "remove_column"):
        _, _schema, table, column = diff
        return f"{operation}: {table}.{column.name}"
    return f"{operation}: " + ", ".join(_name(item) for item in diff[1:] if item is not None)


def _name(item: Any) -> str:
    """``table.name`` for an index or constraint, ``name`` for a table, repr for anything else."""
    if isinstance(item, str):
        return item
    name = getattr(item, "name", None)
    table_name = getattr(getattr(item, "table", None), "name", None)
    if isinstance(name, str) and isinstance(table_name, str):
        return f"{table_name}.{name}"
    return name if isinstance(name, str) else repr(item)


@contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """Hold the one-migrator-at-a-time lock for the database at ``url``."""
    if engine.dialect.name == "sqlite":
        database = make_url(url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield  # private in-memory database (or a URI we do not parse): nobody to race
            return
        lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    if engine.dialect.name == "postgresql":
        # A session-level lock on its own autocommit connection: held across the migration's
        # transaction, released by the unlock below or, if this process dies, by the server.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY}
                )
        return
    yield
