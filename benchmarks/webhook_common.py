"""Shared by the webhook benchmarks: a scratch PostgreSQL database, settings, servers, payloads.

The app under test is the real one (``create_app`` with the Celery dispatcher on Redis), built
by :func:`certifier_app` in the uvicorn process from ``BENCH_*`` environment variables; it also
carries ``POST /bench/bare``, the baseline: a bare endpoint that only stores the body (one
INSERT, one commit, same engine, same uvicorn).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Response
from sqlalchemy import make_url, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import uvicorn_server  # noqa: E402
from certifier.api.routers.webhooks import raw_body  # noqa: E402
from certifier.db import migrate  # noqa: E402
from certifier.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from certifier.domain.clock import SystemClock  # noqa: E402
from certifier.pipeline.components import sync_from_config  # noqa: E402
from certifier.settings import (  # noqa: E402
    CertifierConfig,
    ComponentConfig,
    Settings,
    TestbedConfig,
)

SECRET = "bench-secret"  # noqa: S105 - a benchmark's throwaway webhook secret
REPO = "bench/comp"
POSTGRES = os.environ.get("CERTIFIER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def config() -> CertifierConfig:
    return CertifierConfig(
        components=(ComponentConfig(name="comp", source="github",
                                    url=f"https://github.com/{REPO}", poll_interval=None),),
        testbeds=(TestbedConfig(name="gate1", driver="local"),))


def settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, broker_url=REDIS,
                    config=config())


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    admin = make_engine(POSTGRES, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        with session_scope(make_session_factory(engine)) as session:
            sync_from_config(session, config().components, config().testbeds, SystemClock())
            session.execute(text("CREATE TABLE bench_bodies (id serial PRIMARY KEY, body text)"))
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def certifier_app() -> Any:
    """The uvicorn factory: the real API plus the bare baseline route."""
    from certifier.api.app import create_app
    from workers.celery_app import create_celery
    from workers.dispatch import CeleryDispatcher

    conf = settings(Path(os.environ["BENCH_DATA_DIR"]), os.environ["BENCH_DATABASE_URL"])
    engine = make_engine(conf.resolved_database_url, pool_size=20)
    factory = make_session_factory(engine)
    app = create_app(conf, dispatcher=CeleryDispatcher(create_celery(conf)),
                     session_factory=factory)

    @app.post("/bench/bare", status_code=202, include_in_schema=False)
    def bare(body: Annotated[bytes, Depends(raw_body)]) -> Response:
        # Like the webhook route: the raw body from an async dependency, the database work in
        # FastAPI's thread pool, one transaction.
        with session_scope(factory) as session:
            session.execute(text("INSERT INTO bench_bodies (body) VALUES (:b)"),
                            {"b": body.decode()})
        return Response(b'{"status":"stored"}', status_code=202,
                        media_type="application/json")

    return app


@contextmanager
def api_server(data_dir: Path, database_url: str) -> Iterator[str]:
    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir), "BENCH_DATABASE_URL": database_url,
           "CERTIFIER_GITHUB_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    with uvicorn_server("benchmarks.webhook_common:certifier_app", env) as url:
        yield url


def sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324 - a fake commit id


def push(after: str, before: str | None = None) -> bytes:
    zero = "0" * 40
    commit = {"id": after, "message": "a change\n", "timestamp": "2026-01-01T10:00:00+00:00",
              "author": {"name": "Dev", "email": "dev@example.org"}}
    return json.dumps({"ref": "refs/heads/main", "before": before or zero, "after": after,
                       "created": before is None, "deleted": False, "forced": False,
                       "commits": [commit], "head_commit": commit,
                       "repository": {"full_name": REPO}}).encode()
