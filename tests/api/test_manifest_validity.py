"""Signed manifests carry their validity: ``issued_at``, ``expires_at`` and ``revoked_at`` are in
the signed bytes of every format, and ``certifier manifest verify`` refuses an expired or a
revoked one (issue #14, item 5: a revoked known-good's saved manifest still verified)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from certifier.api.app import create_app
from certifier.api.manifest_cache import ManifestCache, Representation
from certifier.cli import app as cli
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import actions, knowngood
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import CertifierConfig, ManifestConfig, Settings
from tests.factories import World


@pytest.fixture
def app(tmp_path: Path, db_factory: sessionmaker[Session], clock: FakeClock,
        dispatcher: RecordingDispatcher) -> FastAPI:
    config = CertifierConfig(manifest=ManifestConfig(validity=timedelta(days=2)))
    return create_app(Settings(data_dir=tmp_path, config=config), dispatcher=dispatcher,
                      clock=clock, session_factory=db_factory)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def version(world: World) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    return world.promote_heads()


def _revoke(world: World, version: int) -> None:
    with session_scope(world.factory) as session:
        actions.revoke(session, world.clock, version, "cli:ops", "eats data")


def test_the_manifest_is_valid_for_the_configured_time_from_its_issue(
    client: TestClient, version: int, clock: FakeClock,
) -> None:
    doc = client.get("/api/v1/manifest").json()
    issued, expires = (datetime.fromisoformat(doc[k]) for k in ("issued_at", "expires_at"))
    assert expires - issued == timedelta(days=2)
    assert issued <= clock.now() < expires - timedelta(days=1)  # at least half is left
    assert doc["revoked_at"] is None


@pytest.mark.parametrize("fmt", ["json", "yaml", "env", "csv"])
def test_every_format_carries_the_envelope_in_its_signed_bytes(
    client: TestClient, version: int, fmt: str,
) -> None:
    expected = {k: v for k, v in client.get("/api/v1/manifest").json().items()
                if k in knowngood.ENVELOPE}
    body = client.get("/api/v1/manifest", params={"format": fmt}).content
    assert knowngood.envelope_of(body) == expected


def test_the_etag_holds_within_half_the_validity_and_changes_when_signed_again(
    client: TestClient, version: int, clock: FakeClock,
) -> None:
    first = client.get("/api/v1/manifest")
    clock.advance(timedelta(seconds=5))
    same = client.get("/api/v1/manifest", headers={"If-None-Match": first.headers["etag"]})
    assert same.status_code == 304
    clock.advance(timedelta(days=1))  # half of the 2-day validity: the document is issued again
    fresh = client.get("/api/v1/manifest", headers={"If-None-Match": first.headers["etag"]})
    assert fresh.status_code == 200 and fresh.headers["etag"] != first.headers["etag"]
    assert fresh.json()["issued_at"] > first.json()["issued_at"]


def test_the_cache_never_serves_an_expired_signature() -> None:
    now = [1000.0]
    cache = ManifestCache(ttl=3600, clock=lambda: now[0])
    cache.put("json", Representation(b"{}", "application/json", '"e"', "sig",
                                     valid_until=1010.0))
    assert cache.get("json")[0]
    now[0] = 1010.0
    assert cache.get("json") == (False, None)


def test_a_revoked_known_good_says_so_inside_its_signed_bytes_by_version_and_at(
    client: TestClient, world: World, version: int, clock: FakeClock,
) -> None:
    before = clock.now().isoformat()
    clock.advance(timedelta(minutes=1))
    _revoke(world, version)
    by_version = client.get(f"/api/v1/manifests/{version}").json()
    then = client.get("/api/v1/manifest", params={"at": before}).json()
    assert by_version["revoked_at"] is not None
    assert then["version"] == version and then["revoked_at"] == by_version["revoked_at"]


def _saved(tmp_path: Path, client: TestClient, path: str) -> list[str]:
    doc, sig, key = tmp_path / "m.json", tmp_path / "m.sig", tmp_path / "key.pem"
    doc.write_bytes(client.get(path).content)
    sig.write_text(client.get(f"{path}.sig").text)
    key.write_text(client.get("/api/v1/signing-key").text)
    return ["manifest", "verify", str(doc), str(sig), "--key", str(key)]


def test_verify_accepts_a_fresh_manifest_and_says_until_when(
    tmp_path: Path, client: TestClient, version: int, clock: FakeClock,
) -> None:
    args = _saved(tmp_path, client, "/api/v1/manifest")
    done = CliRunner().invoke(cli, [*args, "--at", clock.now().isoformat()])
    assert done.exit_code == 0, done.output
    assert "good signature, valid until" in done.output


def test_verify_refuses_an_expired_manifest(
    tmp_path: Path, client: TestClient, version: int, clock: FakeClock,
) -> None:
    args = _saved(tmp_path, client, "/api/v1/manifest")
    later = clock.now() + timedelta(days=2, seconds=1)
    done = CliRunner().invoke(cli, [*args, "--at", later.isoformat()])
    assert done.exit_code == 1
    assert "good signature, but EXPIRED at" in done.output


def test_verify_refuses_a_revoked_manifest_fetched_by_version(
    tmp_path: Path, client: TestClient, world: World, version: int, clock: FakeClock,
) -> None:
    _revoke(world, version)
    args = _saved(tmp_path, client, f"/api/v1/manifests/{version}")
    done = CliRunner().invoke(cli, [*args, "--at", clock.now().isoformat()])
    assert done.exit_code == 1
    assert "REVOKED at" in done.output


def test_a_manifest_without_an_expiry_is_refused_even_with_a_good_signature(
    tmp_path: Path, client: TestClient, app: FastAPI, version: int,
) -> None:
    args = _saved(tmp_path, client, "/api/v1/manifest")
    old = b'{"version":1,"revoked_at":null,"components":[]}'  # as signed before validity existed
    Path(args[2]).write_bytes(old)
    Path(args[3]).write_text(app.state.certifier.signer.sign(old))
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 1
    assert "carries no expires_at" in done.output
