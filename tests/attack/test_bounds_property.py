"""Property-based: extreme values through every entry point end in a clear refusal, never a 5xx
or a traceback (issue #14, item 2; the bounds are in certifier/limits.py).

Hypothesis draws durations (huge, non-finite, of the wrong JSON type), commit times (years 1 to
9999 at any offset), ids beyond every column, very long strings and deeply nested JSON, and
drives them through the API and the dashboard, signed webhooks, the config loader and the CLI.
The API and webhook properties run on SQLite and PostgreSQL (``session_factory``); the CLI runs
on a fresh database of each backend. Examples are bounded and derandomised, so CI stays fast and
repeatable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from certifier.api.app import create_app
from certifier.cli import app as cli
from certifier.db import migrate
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ConfigError, Settings, parse_config_text
from tests.factories import World
from tests.tracking.payloads import body_of, github_headers, gitlab_headers, gitlab_push

TOKEN = "property-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "property-webhook-secret"
BOUNDED = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))

# Extreme values ---------------------------------------------------------------------------------

huge_ints = st.one_of(st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
                      st.integers(min_value=2**63 - 2, max_value=2**63 + 2),
                      st.integers(min_value=10**18, max_value=10**40), st.integers(max_value=0))
durations = st.one_of(
    st.from_regex(r"\A[0-9]{1,14}(ms|s|m|h|d|w)\Z"),
    st.from_regex(r"\AP[0-9]{1,14}D(T[0-9]{1,12}H)?\Z"),
    st.from_regex(r"\A([0-9]{1,6}[hdw]){1,4}\Z"),
    huge_ints, st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2),
)
times = st.builds(
    lambda year, month, day, offset: f"{year:04d}-{month:02d}-{day:02d}T23:59:59{offset}",
    st.integers(min_value=1, max_value=9999), st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=28),
    st.sampled_from(["Z", "+00:00", "+23:59", "-23:59", "+01:00", "-05:00", ""]))
long_text = st.one_of(st.text(max_size=20), st.integers(min_value=250, max_value=5000).map(
    lambda n: "a" * n), st.integers(min_value=250, max_value=5000).map(lambda n: "a/" * n + "b"))


def nested(depth: int) -> bytes:
    """JSON text nested ``depth`` arrays deep (built as text: json.dumps itself would recurse)."""
    return b"[" * depth + b'"x"' + b"]" * depth


depths = st.integers(min_value=1, max_value=5000)

# Requests ----------------------------------------------------------------------------------------

api_requests = st.one_of(
    st.builds(lambda v: ("POST", "/api/v1/components", {
        "name": "nova", "url": "https://git.example/nova.git", "poll_interval": v}), durations),
    st.builds(lambda url, project: ("POST", "/api/v1/components", {
        "name": "glance", "source": "gitlab", "url": f"https://gitlab.example/{url}",
        "project": project}), long_text, long_text),
    st.builds(lambda when: ("POST", "/api/v1/components/nova/commits", {
        "sha": "a" * 40, "committed_at": when}), times),
    st.builds(lambda v, c: ("POST", "/api/v1/holds", {"duration": v, "candidate_id": c}),
              durations, st.one_of(st.none(), huge_ints)),
    st.builds(lambda v: ("POST", "/api/v1/candidates/1/waive", {
        "subject": "ping.h1 reaches h2", "reason": "r", "expires_in": v}), durations),
    st.builds(lambda d: ("POST", "/api/v1/components", nested(d)), depths),
    st.builds(lambda d: ("POST", "/api/v1/components/nova/commits",
                         b'{"sha": "' + b"d" * 40 + b'", "title": ' + nested(d) + b"}"), depths),
    st.builds(lambda path, i: ("GET", path.format(i), None), st.sampled_from([
        "/api/v1/candidates/{}", "/api/v1/runs/{}", "/api/v1/runs/{}/log",
        "/api/v1/manifests/{}", "/api/v1/manifests/{}.sig", "/api/v1/manifests/1/diff/{}",
        "/api/v1/holds/{}", "/api/v1/deliveries/{}", "/api/v1/notifications/{}",
        "/api/v1/audit?before={}", "/api/v1/deliveries?before={}", "/candidates/{}",
        "/candidates?before={}", "/known-good?before={}", "/known-good/diff?from=1&to={}",
        "/audit?before={}", "/deliveries?before={}"]), huge_ints),
    st.builds(lambda when: ("GET", f"/api/v1/manifest?at={when}", None), times),
)


@pytest.fixture
def client(tmp_path: Path, session_factory: sessionmaker[Session],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("CERTIFIER_GITLAB_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("CERTIFIER_GITHUB_WEBHOOK_SECRET", SECRET)
    clock = FakeClock()
    world = World(session_factory, clock)
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    world.promote_heads()
    app = create_app(Settings(data_dir=tmp_path, api_tokens=f"adam/admin:{TOKEN}"),
                     dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=session_factory)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _no_server_error(answer: Any) -> None:
    assert answer.status_code < 500, (answer.request.method, answer.request.url, answer.text)
    assert "Traceback" not in answer.text


def test_extreme_values_through_the_api_and_dashboard_never_answer_5xx(
    client: TestClient,
) -> None:
    @given(request=api_requests)
    @BOUNDED
    def check(request: tuple[str, str, Any]) -> None:
        method, path, body = request
        content = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        _no_server_error(client.request(method, path, content=content, headers={
            **AUTH, "Content-Type": "application/json"}))

    check()


webhook_bodies = st.one_of(
    st.builds(lambda project, when: body_of({
        **gitlab_push(project, "b" * 40), "commits": [{
            "id": "b" * 40, "message": "m", "timestamp": when,
            "author": {"name": "n", "email": "e"}}]}), long_text, times),
    st.builds(lambda ref, title: body_of({**gitlab_push("openstack/nova", "c" * 40, ref=ref),
                                          "commits": [{"id": "c" * 40, "title": title}]}),
              long_text, long_text),
    st.builds(lambda d: b'{"object_kind": "push", "commits": ' + nested(d) + b"}", depths),
)


def test_extreme_signed_webhooks_never_answer_5xx(client: TestClient) -> None:
    @given(body=webhook_bodies, forge=st.sampled_from(["gitlab", "github"]))
    @BOUNDED
    def check(body: bytes, forge: str) -> None:
        headers = (gitlab_headers(SECRET) if forge == "gitlab"
                   else github_headers(SECRET, body, None, "push"))
        _no_server_error(client.post(f"/api/v1/webhooks/{forge}", content=body,
                                     headers=headers))

    check()


config_texts = st.one_of(
    st.builds(lambda v: f"soak:\n  duration: {json.dumps(v)}\n", durations),
    st.builds(lambda v: f"tracking:\n  poll_tick: {json.dumps(v)}\n", durations),
    st.builds(lambda v: "components:\n  - name: nova\n    url: https://git.example/n.git\n"
                        f"    poll_interval: {json.dumps(v)}\n", durations),
    st.builds(lambda url, project: "components:\n  - name: nova\n    source: gitlab\n"
                                   f"    url: {json.dumps(url)}\n    project: "
                                   f"{json.dumps(project)}\n", long_text, long_text),
    st.builds(lambda recipe: "components:\n  - name: nova\n    url: https://git.example/n.git\n"
                             f"    recipe: {json.dumps(recipe)}\n", long_text),
    st.builds(lambda d: f"soak: {nested(d).decode()}\n", st.integers(1, 400)),
)


@given(text=config_texts)
@BOUNDED
def test_extreme_values_in_the_config_file_are_a_config_error_or_a_config(text: str) -> None:
    try:
        parse_config_text(text, "certifier.yaml")
    except ConfigError as exc:
        assert "certifier.yaml" in str(exc)


@pytest.fixture
def cli_env(empty_database_url: str, tmp_path: Path) -> dict[str, str]:
    migrate.upgrade(empty_database_url)
    return {"CERTIFIER_DATABASE_URL": empty_database_url, "CERTIFIER_DATA_DIR": str(tmp_path)}


def test_extreme_lifetimes_on_the_command_line_exit_cleanly(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    names = iter(range(10**6))

    @given(value=durations.filter(lambda v: v is not None and not isinstance(v, bool))
           .map(lambda v: v if isinstance(v, str) else json.dumps(v)),
           command=st.sampled_from(["token", "hold"]))
    @settings(max_examples=30, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(value: str, command: str) -> None:
        args = (["token", "create", f"t{next(names)}", "--expires", value]
                if command == "token" else ["hold", "add", "--duration", value])
        done = runner.invoke(cli, args, env=cli_env)
        assert done.exit_code in (0, 1, 2), (args, done.output)
        assert done.exception is None or isinstance(done.exception, SystemExit), (
            args, repr(done.exception))
        assert "Traceback" not in done.output

    check()

