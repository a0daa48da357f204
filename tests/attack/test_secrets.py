"""Secrets never leak: API tokens, webhook secrets and forge tokens stay out of logs, answers,
audit events and every database column (a token is stored as its SHA-256 only).

Every logger is captured at DEBUG while the secrets are used the right way and the wrong way,
then the captured text, each answer and a dump of every table are searched for the raw secrets.
Each search is paired with proof that the secret was really used (a 2xx, a forge that received
it), so a test cannot pass by not exercising anything. The last test runs ``certifier serve``
as a real process at DEBUG with its uvicorn access log, and searches that log and every file of
its data folder. Database tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.notifications import Event
from certifier.pipeline import components, notify, tokens
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import (
    ComponentConfig,
    ConfigError,
    NotificationsConfig,
    Settings,
    parse_config_text,
)
from certifier.tracking import polling
from certifier.tracking.sources import source_factory
from tests.factories import World
from tests.tracking.fakes import FakeForge, FakeGerrit, FakeGitHub, FakeGitLab
from tests.tracking.payloads import (
    body_of,
    gerrit_ref_updated,
    github_headers,
    github_push,
    gitlab_headers,
    gitlab_push,
)

# Distinctive values, so that a hit in a log or a dump cannot be a coincidence.
CONFIGURED_SECRET = "configured-plain-secret-5c1f9e2a"
WRONG_TOKEN = "cft_wrong-token-7d41c0ffee9b"
WEBHOOK = {"gitlab": "gl-webhook-secret-91aa", "github": "gh-webhook-secret-27bb",
           "gerrit": "gr-webhook-secret-63cc"}
WRONG_WEBHOOK = "wrong-webhook-secret-0d0d"
FORGE_TOKEN = "forge-api-token-4e8f1b"


# Capturing everything ----------------------------------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG for every logger, including those that do not propagate to the root."""
    caplog.set_level(logging.DEBUG)
    known = [lg for lg in logging.root.manager.loggerDict.values()
             if isinstance(lg, logging.Logger)]
    saved = [(lg, lg.level) for lg in known]
    deaf = [lg for lg in known if not lg.propagate]
    for lg in known:
        lg.setLevel(logging.DEBUG)
    for lg in deaf:
        lg.addHandler(caplog.handler)
    yield caplog
    for lg in deaf:
        lg.removeHandler(caplog.handler)
    for lg, level in saved:
        lg.setLevel(level)


def server_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the service logged: all of it but the test client's own request lines (httpx logs
    the URL it sends, and sending a Gerrit secret in the URL is the forge's doing, not ours)."""
    return "\n".join(caplog.handler.format(r) for r in caplog.records
                     if not (r.name == "httpx" and "http://testserver/" in r.getMessage()))


def database_dump(factory: sessionmaker[Session]) -> str:
    """Every row of every table, as text."""
    lines = []
    with session_scope(factory) as session:
        for table in models.Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def assert_nowhere(secrets: list[str], **places: str) -> None:
    for secret in secrets:
        for where, text in places.items():
            assert secret not in text, f"a secret ({secret[:6]}…) leaked into {where}"



@pytest.fixture
def client(tmp_path: Path, session_factory: sessionmaker[Session], clock: FakeClock,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for forge, secret in WEBHOOK.items():
        monkeypatch.setenv(f"CERTIFIER_{forge.upper()}_WEBHOOK_SECRET", secret)
    settings = Settings(data_dir=tmp_path / "data", api_tokens=f"ops/admin:{CONFIGURED_SECRET}")
    app = create_app(settings, dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=session_factory)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


# API tokens --------------------------------------------------------------------------------------


def test_an_api_token_is_stored_as_its_sha256_and_never_logged_or_echoed(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    with session_scope(session_factory) as session:
        _, secret = tokens.create(session, clock, "ci", tokens.Scope.OPERATE)
        _, revoked = tokens.create(session, clock, "old", tokens.Scope.OPERATE)
        tokens.revoke(session, clock, "old")
    world = World(session_factory, clock)
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    first = world.reconcile().formed[0]
    answers = []
    for bearer, expected in ((secret, 200), (CONFIGURED_SECRET, 409), (WRONG_TOKEN, 401),
                             (revoked, 401), (secret + "x", 401)):
        answer = client.post(f"/api/v1/candidates/{first}/cancel", json={"reason": "test"},
                             headers={"Authorization": f"Bearer {bearer}"})
        assert answer.status_code == expected, answer.text
        answers.append(f"{answer.headers} {answer.text}")
    answers.append(client.get("/api/v1/audit").text)
    dump = database_dump(session_factory)
    assert hashlib.sha256(secret.encode()).hexdigest() in dump  # the hash is what is kept
    assert "token:ci" in dump  # the audit event names the token…
    assert_nowhere([secret, revoked, CONFIGURED_SECRET, WRONG_TOKEN],  # …never its secret
                   logs=server_logs(all_logs), answers="\n".join(answers), database=dump)


# Webhook secrets ---------------------------------------------------------------------------------


def _deliver(client: TestClient, forge: str, secret: str, sha: str) -> Any:
    if forge == "gitlab":
        body = body_of(gitlab_push("grp/comp", sha))
        return client.post("/api/v1/webhooks/gitlab", content=body, headers=gitlab_headers(secret))
    if forge == "github":
        body = body_of(github_push("grp/comp", sha))
        return client.post("/api/v1/webhooks/github", content=body,
                           headers=github_headers(secret, body))
    body = body_of(gerrit_ref_updated("grp/comp", sha))
    if sha.startswith("a"):  # Gerrit's plugin sends the secret in the URL or in a header
        return client.post(f"/api/v1/webhooks/gerrit?token={secret}", content=body)
    return client.post("/api/v1/webhooks/gerrit", content=body, headers={"X-Gerrit-Token": secret})


@pytest.mark.parametrize("forge", ["gitlab", "github", "gerrit"])
def test_webhook_secrets_never_reach_logs_deliveries_or_answers(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock, forge: str,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    with session_scope(session_factory) as session:
        components.create_component(session, ComponentConfig(
            name="comp", source=forge, url=f"https://{forge}.example/grp/comp"), clock)
    answers = []
    for secret, sha, expected in ((WEBHOOK[forge], "a" * 40, 202), (WEBHOOK[forge], "b" * 40, 202),
                                  (WRONG_WEBHOOK, "c" * 40, 401), ("", "d" * 40, 401)):
        answer = _deliver(client, forge, secret, sha)
        assert answer.status_code == expected, answer.text
        answers.append(f"{answer.headers} {answer.text}")
    listed = client.get("/api/v1/deliveries").json()
    assert [d["state"] for d in listed["items"]] == ["pending", "pending"]
    answers += [str(listed)] + [client.get(f"/api/v1/deliveries/{d['id']}").text
                                for d in listed["items"]]
    answers.append(client.get("/deliveries").text)
    dump = database_dump(session_factory)
    assert_nowhere([WEBHOOK[forge], WRONG_WEBHOOK], logs=server_logs(all_logs),
                   answers="\n".join(answers), database=dump)


# Forge API tokens --------------------------------------------------------------------------------


def _token_seen(fake: FakeForge, forge: str) -> bool:
    """Whether the forge received the token the way it expects it."""
    if forge == "gerrit":
        basic = "Basic " + base64.b64encode(f"bot:{FORGE_TOKEN}".encode()).decode()
        return any(h.get("authorization") == basic for _, h in fake.requests)
    header = "private-token" if forge == "gitlab" else "authorization"
    return any(FORGE_TOKEN in h.get(header, "") for _, h in fake.requests)


FAKES: dict[str, type[FakeForge]] = {"gitlab": FakeGitLab, "github": FakeGitHub,
                                     "gerrit": FakeGerrit}


@pytest.mark.parametrize("forge", ["gitlab", "github", "gerrit"])
def test_a_forge_token_goes_to_the_forge_and_nowhere_else(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path, forge: str,
    monkeypatch: pytest.MonkeyPatch, all_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("COMP_FORGE_TOKEN",
                       f"bot:{FORGE_TOKEN}" if forge == "gerrit" else FORGE_TOKEN)
    results = []
    with FAKES[forge]() as fake:
        fake.repo("grp/comp").commit()
        with session_scope(session_factory) as session:
            ids = [components.create_component(session, ComponentConfig(
                name=name, source=forge, url=f"{fake.url}/grp/{path}",
                token_env="COMP_FORGE_TOKEN"), clock).id
                for name, path in (("comp", "comp"), ("missing", "missing"))]
        for cid in ids:  # one poll that works, one that fails (no such project)
            results.append(polling.poll(session_factory, cid,
                                        source_factory(tmp_path / "mirrors", 5, 30), clock,
                                        RecordingDispatcher()))
        assert _token_seen(fake, forge), "the forge never received the token"
    assert results[0].ok and not results[1].ok, results
    assert_nowhere([FORGE_TOKEN], logs=server_logs(all_logs), results=repr(results),
                   database=database_dump(session_factory))


# Outgoing notifications --------------------------------------------------------------------------


NOTIFY = {"inline": "notify-inline-secret-8a1e", "env": "notify-env-secret-2b7d",
          "file": "notify-file-secret-c3f0", "url": "notify-url-password-55e1"}


class Refuser:
    """A receiver that records each signed POST and refuses it with a 500."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"refused")

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_notification_secrets_sign_posts_and_are_never_stored_or_logged(
    client: TestClient, session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, all_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HOOK_SECRET", NOTIFY["env"])
    (tmp_path / "hook.key").write_text(NOTIFY["file"] + "\n")
    receiver = Refuser()
    closed = f"http://127.0.0.1:{_free_port()}/hook"  # nothing listens
    try:
        config = NotificationsConfig.model_validate({"max_attempts": 1, "targets": [
            {"name": "inline", "url": receiver.url, "secret": NOTIFY["inline"]},
            {"name": "env", "url": receiver.url, "secret_env": "HOOK_SECRET"},
            {"name": "file", "url": receiver.url, "secret_file": str(tmp_path / "hook.key")},
            {"name": "closed", "url": closed, "secret": NOTIFY["inline"]}]})
        with session_scope(session_factory) as session:
            notify.raise_event(session, clock, config, Event.PROMOTED, "candidate 1",
                               {"candidate": 1}, "promoted:candidate:1")
        report = notify.deliver_due(session_factory, clock, config)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert len(report.failed) == 4, report
    signed = {hmac.new(NOTIFY[k].encode(), body, hashlib.sha256).hexdigest()
              for k in ("inline", "env", "file") for _, body in receiver.posts}
    assert {h["x-certifier-signature"].removeprefix("sha256=") for h, _ in receiver.posts} \
        <= signed and len(receiver.posts) == 3  # each secret really signed a POST
    with session_scope(session_factory) as session:
        _, reader = tokens.create(session, clock, "reader", tokens.Scope.READ)
    listed = client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {reader}"})
    assert listed.status_code == 200 and len(listed.json()["items"]) == 4
    assert_nowhere(list(NOTIFY.values()), logs=server_logs(all_logs), answers=listed.text,
                   database=database_dump(session_factory))
    # The key fields are SecretStr, and a URL may not carry a password at all.
    assert_nowhere([NOTIFY["inline"]], config=repr(config))


def test_a_notification_url_with_a_password_is_refused_without_repeating_it() -> None:
    url = f"https://bot:{NOTIFY['url']}@hooks.example/x"
    text = f"notifications:\n  targets:\n    - {{name: chat, url: '{url}', secret: s}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "certifier.yaml")
    assert "must not carry a user or password" in str(caught.value)
    assert_nowhere([NOTIFY["url"]], error=str(caught.value))


# A real server process ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"certifier serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"certifier serve did not answer: {log.read_text()[-2000:]}")


def _server_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "certifier.yaml"
    config.write_text("components:\n"
                      "  - {name: comp, source: gerrit, url: 'https://gerrit.example/grp/comp',"
                      " poll_interval: null}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    env.update(CERTIFIER_DATA_DIR=str(tmp_path / "data"), CERTIFIER_CONFIG=str(config),
               CERTIFIER_LOG_LEVEL="DEBUG", CERTIFIER_API_TOKENS=f"ops:{CONFIGURED_SECRET}",
               CERTIFIER_GERRIT_WEBHOOK_SECRET=WEBHOOK["gerrit"],
               CERTIFIER_GITLAB_WEBHOOK_SECRET=WEBHOOK["gitlab"])
    return env


def _requests(url: str, db_token: str) -> dict[str, int]:
    """Use every secret rightly and wrongly; the status of each request."""
    gerrit = body_of(gerrit_ref_updated("grp/comp", "a" * 40))
    gitlab = body_of(gitlab_push("grp/comp", "b" * 40))
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("gerrit ?token=", f"/api/v1/webhooks/gerrit?token={WEBHOOK['gerrit']}",
         {"content": gerrit}),
        ("gerrit wrong ?token=", f"/api/v1/webhooks/gerrit?token={WRONG_WEBHOOK}",
         {"content": gerrit}),
        ("gitlab", "/api/v1/webhooks/gitlab",
         {"content": gitlab, "headers": gitlab_headers(WEBHOOK["gitlab"])}),
        ("gitlab wrong", "/api/v1/webhooks/gitlab",
         {"content": gitlab, "headers": gitlab_headers(WRONG_WEBHOOK)}),
        *[(f"bearer {name}", "/api/v1/candidates/999/cancel",
           {"json": {"reason": "x"}, "headers": {"Authorization": f"Bearer {secret}"}})
          for name, secret in (("db", db_token), ("configured", CONFIGURED_SECRET),
                               ("wrong", WRONG_TOKEN))],
    ]
    return {what: httpx.post(url + path, timeout=10, **kwargs).status_code
            for what, path, kwargs in calls}


def test_a_real_server_never_writes_a_secret_to_its_log_or_its_data_folder(
    tmp_path: Path,
) -> None:
    env, port, log = _server_env(tmp_path), _free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "certifier", "serve", "--port", str(port)], env=env,
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log)
        made = subprocess.run([sys.executable, "-m", "certifier", "token", "create", "ci"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              check=True)
        db_token = made.stdout.strip().splitlines()[-1]
        statuses = _requests(url, db_token)
        reads = [httpx.get(url + path, timeout=10).text
                 for path in ("/api/v1/deliveries", "/api/v1/audit", "/deliveries")]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert statuses == {"gerrit ?token=": 202, "gerrit wrong ?token=": 401, "gitlab": 202,
                        "gitlab wrong": 401, "bearer db": 404, "bearer configured": 404,
                        "bearer wrong": 401}
    text = log.read_text(errors="replace")
    assert "/api/v1/webhooks/gerrit?token=[redacted]" in text  # the access log was written
    files = {str(p): p.read_bytes().decode("latin-1") for p in (tmp_path / "data").rglob("*")
             if p.is_file()}
    assert any(p.endswith("certifier.sqlite") for p in files)
    secrets = [db_token, CONFIGURED_SECRET, WRONG_TOKEN, WRONG_WEBHOOK, *WEBHOOK.values()]
    assert_nowhere(secrets, server_log=text, answers="\n".join(reads), **files)
