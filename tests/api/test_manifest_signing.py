"""Signed manifests: Ed25519 over exactly the bytes served, checkable with the public key."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from certifier.api.manifest_cache import SIGNATURE_HEADER
from certifier.cli import app as cli
from certifier.pipeline import signing
from tests.factories import World


def _known_good(world: World) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    return world.promote_heads()


def test_the_signature_verifies_the_served_bytes_and_a_tampered_body_fails(
    client: TestClient, world: World,
) -> None:
    _known_good(world)
    body = client.get("/api/v1/manifest").content
    signature = client.get("/api/v1/manifest.sig").text
    key = client.get("/api/v1/signing-key").text
    assert key.startswith("-----BEGIN PUBLIC KEY-----")
    assert signing.verify(body, signature, key)
    assert not signing.verify(body.replace(b'"version":1', b'"version":2'), signature, key)
    assert not signing.verify(body + b" ", signature, key)
    assert not signing.verify(body, "not base64!", key)


def test_the_fast_path_serves_the_same_bytes_and_signature(client: TestClient,
                                                            world: World) -> None:
    _known_good(world)
    first = client.get("/api/v1/manifest")  # rendered by the route, fills the cache
    cached = client.get("/api/v1/manifest")  # answered by the middleware
    assert first.content == cached.content
    assert first.headers[SIGNATURE_HEADER] == cached.headers[SIGNATURE_HEADER]
    detached = client.get("/api/v1/manifest.sig")
    assert detached.text.strip() == cached.headers[SIGNATURE_HEADER]
    assert detached.headers["x-manifest-etag"] == cached.headers["etag"]


def test_every_version_and_format_is_signed(client: TestClient, world: World) -> None:
    version = _known_good(world)
    key = client.get("/api/v1/manifest/key").text
    for fmt in ("json", "yaml", "env"):
        body = client.get(f"/api/v1/manifests/{version}?format={fmt}").content
        sig = client.get(f"/api/v1/manifests/{version}.sig?format={fmt}").text
        assert signing.verify(body, sig, key), fmt
    assert client.get("/api/v1/manifests/99.sig").status_code == 404


def test_no_known_good_has_no_signature(client: TestClient) -> None:
    assert client.get("/api/v1/manifest.sig").status_code == 404


def test_the_key_is_made_once_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "manifest-signing.key"
    signer = signing.Signer(path)
    signature = signer.sign(b"doc")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = signing.Signer(path)
    assert again.public_pem() == signer.public_pem()
    assert signing.verify(b"doc", signature, again.public_pem())
    assert len(base64.b64decode(signature)) == 64


def test_manifest_verify_names_a_tampered_file(tmp_path: Path, client: TestClient,
                                               world: World) -> None:
    _known_good(world)
    doc, sig, key = tmp_path / "m.json", tmp_path / "m.sig", tmp_path / "key.pem"
    doc.write_bytes(client.get("/api/v1/manifest").content)
    sig.write_text(client.get("/api/v1/manifest.sig").text)
    key.write_text(client.get("/api/v1/signing-key").text)
    runner = CliRunner()
    good = runner.invoke(cli, ["manifest", "verify", str(doc), str(sig), "--key", str(key),
                               "--at", world.clock.now().isoformat()])
    assert good.exit_code == 0 and "good signature" in good.stdout
    doc.write_bytes(doc.read_bytes().replace(b"nova", b"evil"))
    bad = runner.invoke(cli, ["manifest", "verify", str(doc), str(sig), "--key", str(key)])
    assert bad.exit_code == 1 and "BAD signature" in bad.output
