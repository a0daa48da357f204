"""Bearer tokens: hashed storage, scopes that nest, expiry, revocation, and the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from certifier.api.app import create_app
from certifier.cli import app as cli
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import tokens
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.pipeline.tokens import Scope
from certifier.settings import Settings
from tests.factories import World


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    hashed = tokens.hash_secret("configured-admin-secret-0123")
    settings = Settings(data_dir=tmp_path, api_tokens=f"ops/admin:sha256:{hashed}")
    return create_app(settings, dispatcher=dispatcher, clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _token(factory: sessionmaker[Session], clock: FakeClock, name: str, scope: Scope,
           expires_in: timedelta | None = None) -> str:
    with session_scope(factory) as session:
        return tokens.create(session, clock, name, scope, expires_in)[1]


def _cancel(client: TestClient, world: World, secret: str) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    cid = world.reconcile().formed[0]
    return client.post(f"/api/v1/candidates/{cid}/cancel", json={"reason": "test"},
                       headers={"Authorization": f"Bearer {secret}"}).status_code


def test_scopes_nest() -> None:
    assert Scope.ADMIN.includes(Scope.OPERATE) and Scope.ADMIN.includes(Scope.READ)
    assert Scope.OPERATE.includes(Scope.READ) and not Scope.OPERATE.includes(Scope.ADMIN)
    assert not Scope.READ.includes(Scope.OPERATE)


def test_only_the_hash_of_a_secret_is_stored(db_factory: sessionmaker[Session],
                                             clock: FakeClock) -> None:
    secret = _token(db_factory, clock, "ci", Scope.OPERATE)
    assert secret.startswith("cft_") and len(secret) > 40
    with session_scope(db_factory) as session:
        row = session.scalars(select(models.ApiToken)).one()
        assert row.secret_sha256 == tokens.hash_secret(secret)
        assert secret not in repr(row.__dict__)


def test_a_stored_token_of_enough_scope_acts_and_its_use_is_recorded(
    client: TestClient, world: World, db_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    secret = _token(db_factory, clock, "ci", Scope.OPERATE)
    assert _cancel(client, world, secret) == 200
    with session_scope(db_factory) as session:
        row = session.scalars(select(models.ApiToken)).one()
        assert row.last_used_at is not None
        event = session.scalars(select(models.AuditEvent)
                                .where(models.AuditEvent.action == "cancel")).one()
        assert event.actor == "token:ci"


def test_a_read_token_is_refused_with_403(client: TestClient, world: World,
                                          db_factory: sessionmaker[Session],
                                          clock: FakeClock) -> None:
    assert _cancel(client, world, _token(db_factory, clock, "dash", Scope.READ)) == 403


def test_an_expired_token_is_refused_with_401(client: TestClient, world: World,
                                              db_factory: sessionmaker[Session],
                                              clock: FakeClock) -> None:
    secret = _token(db_factory, clock, "temp", Scope.ADMIN, timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    assert _cancel(client, world, secret) == 401


def test_a_revoked_token_is_refused_with_401(client: TestClient, world: World,
                                             db_factory: sessionmaker[Session],
                                             clock: FakeClock) -> None:
    secret = _token(db_factory, clock, "gone", Scope.ADMIN)
    with session_scope(db_factory) as session:
        tokens.revoke(session, clock, "gone")
    assert _cancel(client, world, secret) == 401


def test_a_token_configured_as_a_hash_works(client: TestClient, world: World) -> None:
    assert _cancel(client, world, "configured-admin-secret-0123") == 200


def test_token_names_are_unique(db_factory: sessionmaker[Session], clock: FakeClock) -> None:
    _token(db_factory, clock, "ci", Scope.OPERATE)
    with pytest.raises(tokens.Conflict):
        _token(db_factory, clock, "ci", Scope.ADMIN)


def test_configured_tokens_are_parsed_with_scopes_and_hashes() -> None:
    digest = "ab" * 32
    parsed = tokens.parse_configured(
        f" alice:plain-secret-0123456 , bob/admin:sha256:{digest}, carol:short, "
        f"dave/root:plain-secret-0123456, :nameless-secret-0123456, eve ")
    assert [(t.name, t.scope) for t in parsed] == [("alice", Scope.OPERATE), ("bob", Scope.ADMIN)]
    assert parsed[0].secret_sha256 == tokens.hash_secret("plain-secret-0123456")
    assert parsed[1].secret_sha256 == digest


def test_the_cli_creates_lists_and_revokes_tokens(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFIER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CERTIFIER_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    made = runner.invoke(cli, ["token", "create", "ci", "--scope", "admin", "--expires", "30d"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"cft_[A-Za-z0-9_-]{40,}", secret)
    listed = runner.invoke(cli, ["token", "list"])
    assert "ci\tadmin\texpires" in listed.stdout and secret not in listed.stdout
    assert runner.invoke(cli, ["token", "create", "ci"]).exit_code == 1
    assert runner.invoke(cli, ["token", "create", "x", "--scope", "root"]).exit_code == 2
    assert runner.invoke(cli, ["token", "revoke", "ci"]).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["token", "list"]).stdout
    assert runner.invoke(cli, ["token", "revoke", "nope"]).exit_code == 1
