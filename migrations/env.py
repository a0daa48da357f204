"""Alembic environment: runs the revisions in ``versions/`` against one database connection.

:mod:`certifier.db.migrate` is the usual way in: it opens the connection (holding the lock that
keeps two processes from migrating at once) and hands it over in ``config.attributes``. Run by
hand (``alembic upgrade head`` with the top-level ``alembic.ini``), this file opens its own
connection to ``sqlalchemy.url`` if set, else to the database the Certifier settings name.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import TypeDecorator
from sqlalchemy.engine import Connection

from certifier.db.migrate import compare_type
from certifier.db.models import Base

config = context.config
if config.config_file_name is not None:  # run by hand through alembic.ini: log like Alembic does
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our TypeDecorators (e.g. ``UTCDateTime``) as their plain SQLAlchemy type.

    A revision must not import the models: it describes the schema as it was at that revision,
    and the models keep changing after it is written.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _url() -> str:
    """``sqlalchemy.url`` from the Alembic config if given, else the Certifier settings' URL."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from certifier.settings import load_settings

    return load_settings().resolved_database_url


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things, so autogenerate writes batch operations (which
        # recreate the table on SQLite and are plain ALTERs on PostgreSQL): one script, both.
        render_as_batch=True,
        compare_type=compare_type,  # VARCHAR lengths count on PostgreSQL only (migrate.py)
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return

    from certifier.db.session import make_engine

    engine = make_engine(_url())
    try:
        with engine.connect() as own_connection:
            run_migrations(own_connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    """``alembic upgrade --sql``: print the SQL for a database administrator to review."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
