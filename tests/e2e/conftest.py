"""Backends for the end-to-end tests: the embedded defaults and the production pair.

Each PostgreSQL test gets a database of its own, created here and dropped afterwards; each Redis
test a flushed database number of its own. What the tests need (root, PostgreSQL, Redis, the tools)
skips with a reason on a developer machine only; under ``CI=true`` a missing piece fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import flushed_redis_database, fresh_postgres_database
from tests.requirements import unavailable

E2E_REDIS_DB = 11


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str | None  # None: the embedded SQLite file in the data folder
    broker_url: str | None  # None: the embedded, server-free broker


def _require_testbed() -> None:
    if os.geteuid() != 0:
        unavailable("the end-to-end test builds a netns testbed and needs root")
    missing = [t for t in ("ip", "tc", "ping", "iperf3", "fio", "git") if not shutil.which(t)]
    if missing:
        unavailable(f"the end-to-end test needs {', '.join(missing)} (./dev test installs them)")


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own; its URL."""
    with fresh_postgres_database(f"certifier_e2e_{os.getpid()}") as url:
        yield url


@pytest.fixture
def redis_broker() -> Iterator[str]:
    """A flushed Redis database number for the broker; its URL."""
    with flushed_redis_database(E2E_REDIS_DB) as url:
        yield url


@pytest.fixture(params=["sqlite-embedded", "postgresql-redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    _require_testbed()
    if request.param == "sqlite-embedded":
        return Backend(request.param, None, None)
    return Backend(request.param, request.getfixturevalue("postgres_database"),
                   request.getfixturevalue("redis_broker"))
