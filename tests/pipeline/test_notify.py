"""Outgoing notifications, on SQLite and PostgreSQL, POSTed to a real HTTP server on 127.0.0.1.

The receiver checks every signature with its own HMAC code (not ours), and answers from a
script, so retries, backoff and giving up are seen from the receiving end; the clock is a fake
one, so the backoff is checked to the second without waiting for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.notifications import Event
from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.pipeline import notify, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import (
    CertifierConfig,
    ConfigError,
    NotificationsConfig,
    Settings,
    load_config_file,
    parse_config_text,
)
from tests.factories import SOAK, World
from workers.celery_app import create_celery
from workers.context import WorkerContext
from workers.dispatch import DELIVER_NOTIFICATIONS_TASK

SECRET = b"hook-secret-for-tests"


@dataclass(frozen=True)
class Post:
    headers: dict[str, str]
    body: bytes
    signed: bool  # the receiver's own HMAC check of the exact body bytes

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class Receiver:
    """A threading HTTP server that records each POST and answers the next scripted status."""

    def __init__(self, secret: bytes = SECRET, answers: tuple[int, ...] = ()) -> None:
        self.secret = secret
        self.answers = list(answers)
        self.posts: list[Post] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(receiver.secret, body,
                                                hashlib.sha256).hexdigest()
                given = self.headers.get("X-Certifier-Signature", "")
                receiver.posts.append(Post({k.lower(): v for k, v in self.headers.items()}, body,
                                           hmac.compare_digest(expected, given)))
                status = receiver.answers.pop(0) if receiver.answers else 200
                answer = b"receiver says no\n\x00" if status >= 300 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/certifier"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()



def targets(*specs: dict[str, Any], **policy: Any) -> NotificationsConfig:
    return NotificationsConfig.model_validate(
        {"targets": [{"secret": SECRET.decode(), **spec} for spec in specs], **policy})


def raise_one(factory: sessionmaker[Session], clock: FakeClock, config: NotificationsConfig,
              event: Event = Event.PROMOTED, key: str = "promoted:candidate:1") -> list[int]:
    with session_scope(factory) as session:
        return notify.raise_event(session, clock, config, event, "candidate 1",
                                  {"candidate": 1, "link": "/candidates/1"}, key)


def row(factory: sessionmaker[Session], delivery_id: int) -> models.Notification:
    with session_scope(factory) as session:
        found = session.get(models.Notification, delivery_id)
        assert found is not None
        session.expunge(found)
        return found


def count(factory: sessionmaker[Session]) -> int:
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(models.Notification)) or 0


def test_an_event_is_posted_signed_to_each_target_that_wants_it(
    session_factory: sessionmaker[Session], clock: FakeClock, receiver: Receiver,
) -> None:
    config = targets({"name": "chat", "url": receiver.url},
                     {"name": "pager", "url": receiver.url, "events": ["rejected"]})
    [delivery] = raise_one(session_factory, clock, config)
    report = notify.deliver_due(session_factory, clock, config)
    assert report.delivered == [delivery]
    [post] = receiver.posts
    assert post.signed
    assert post.headers["x-certifier-event"] == "promoted"
    assert post.headers["x-certifier-delivery"] == str(delivery)
    assert post.headers["content-type"] == "application/json"
    assert post.json() == {"candidate": 1, "link": "/candidates/1", "event": "promoted",
                           "raised_at": clock.now().isoformat(), "delivery": delivery}
    stored = row(session_factory, delivery)
    assert (stored.target, stored.state, stored.attempts, stored.last_status) == (
        "chat", "delivered", 1, 200)
    assert stored.delivered_at == clock.now()
    assert notify.deliver_due(session_factory, clock, config).delivered == []  # sent once
    assert len(receiver.posts) == 1


def test_a_target_answering_500_twice_is_retried_with_backoff_and_delivered_third_time(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    flaky = Receiver(answers=(500, 500, 200))
    try:
        config = targets({"name": "chat", "url": flaky.url}, backoff="30s", backoff_max="1h")
        [delivery] = raise_one(session_factory, clock, config)
        start = clock.now()
        assert notify.deliver_due(session_factory, clock, config).retrying == [delivery]
        first = row(session_factory, delivery)
        assert (first.state, first.attempts, first.last_status) == ("pending", 1, 500)
        assert first.last_error == "HTTP 500: receiver says no"
        assert first.next_attempt_at == start + timedelta(seconds=30)

        clock.advance(timedelta(seconds=29))  # not due yet: nothing is sent
        assert notify.deliver_due(session_factory, clock, config).retrying == []
        assert len(flaky.posts) == 1

        clock.advance(timedelta(seconds=1))
        assert notify.deliver_due(session_factory, clock, config).retrying == [delivery]
        assert row(session_factory, delivery).next_attempt_at == clock.now() + timedelta(
            seconds=60)  # doubled

        clock.advance(timedelta(seconds=60))
        assert notify.deliver_due(session_factory, clock, config).delivered == [delivery]
        done = row(session_factory, delivery)
        assert (done.state, done.attempts, done.last_status, done.last_error) == (
            "delivered", 3, 200, "")
        assert len(flaky.posts) == 3
        assert all(p.signed for p in flaky.posts)
        assert len({p.body for p in flaky.posts}) == 1  # every attempt sends the same bytes
    finally:
        flaky.close()


def test_a_target_that_never_answers_ends_failed_after_max_attempts(
    session_factory: sessionmaker[Session], clock: FakeClock, silent_url: str,
) -> None:
    config = targets({"name": "void", "url": silent_url, "timeout": "200ms"},
                     max_attempts=3, backoff="10s")
    [delivery] = raise_one(session_factory, clock, config)
    outcomes = []
    for _ in range(3):
        report = notify.deliver_due(session_factory, clock, config)
        outcomes.append((report.retrying, report.failed))
        clock.advance(timedelta(minutes=5))
    assert outcomes == [([delivery], []), ([delivery], []), ([], [delivery])]
    failed = row(session_factory, delivery)
    assert (failed.state, failed.attempts, failed.last_status) == ("failed", 3, None)
    assert failed.last_error == "no answer within 0.2 s"
    assert failed.next_attempt_at is None
    report = notify.deliver_due(session_factory, clock, config)
    assert (report.retrying, report.failed) == ([], [])  # failed is final


def test_a_refused_connection_is_retried_and_its_error_recorded(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed_port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    config = targets({"name": "gone", "url": f"http://127.0.0.1:{closed_port}/"})
    [delivery] = raise_one(session_factory, clock, config)
    assert notify.deliver_due(session_factory, clock, config).retrying == [delivery]
    stored = row(session_factory, delivery)
    assert stored.last_status is None
    assert stored.last_error.startswith("ConnectError")


def test_an_event_raised_twice_is_stored_once(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    config = targets({"name": "chat", "url": "https://hooks.example.org/a"},
                     {"name": "pager", "url": "https://hooks.example.org/b"})
    assert len(raise_one(session_factory, clock, config)) == 2
    with session_scope(session_factory) as session:  # twice more, in one transaction
        for _ in range(2):
            assert notify.raise_event(session, clock, config, Event.PROMOTED, "candidate 1",
                                      {"candidate": 1}, "promoted:candidate:1") == []
        session.add(models.AuditEvent(at=clock.now(), actor="test", action="still", subject="ok",
                                      detail={}))  # the transaction is still usable
    assert count(session_factory) == 2
    assert len(raise_one(session_factory, clock, config, key="promoted:candidate:2")) == 2


def test_no_target_means_nothing_is_stored(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    assert raise_one(session_factory, clock, NotificationsConfig()) == []
    assert count(session_factory) == 0


def test_a_delivery_whose_target_left_the_configuration_fails_without_a_post(
    session_factory: sessionmaker[Session], clock: FakeClock, receiver: Receiver,
) -> None:
    [delivery] = raise_one(session_factory, clock, targets({"name": "old", "url": receiver.url}))
    now = targets({"name": "new", "url": receiver.url})
    assert notify.deliver_due(session_factory, clock, now).failed == [delivery]
    assert row(session_factory, delivery).last_error == "target 'old' is no longer configured"
    assert receiver.posts == []


def test_a_secret_from_the_environment_signs_and_a_missing_one_is_an_error(
    session_factory: sessionmaker[Session], clock: FakeClock, receiver: Receiver,
) -> None:
    config = NotificationsConfig.model_validate({"targets": [
        {"name": "chat", "url": receiver.url, "secret_env": "CHAT_HOOK_SECRET"}]})
    [delivery] = raise_one(session_factory, clock, config)
    assert notify.deliver_due(session_factory, clock, config, environ={}).retrying == [delivery]
    assert row(session_factory, delivery).last_error == (
        "not sent: the environment variable CHAT_HOOK_SECRET is unset or empty")
    assert receiver.posts == []
    clock.advance(timedelta(hours=1))
    report = notify.deliver_due(session_factory, clock, config,
                                environ={"CHAT_HOOK_SECRET": SECRET.decode()})
    assert report.delivered == [delivery]
    assert receiver.posts[0].signed


def test_a_secret_file_is_read_relative_to_the_config_file(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
) -> None:
    (tmp_path / "hook.key").write_bytes(b"key-from-a-file\n")
    keyed = Receiver(secret=b"key-from-a-file")
    try:
        (tmp_path / "certifier.yaml").write_text(
            "notifications:\n  targets:\n"
            f"    - {{name: chat, url: '{keyed.url}', secret_file: hook.key}}\n")
        config = load_config_file(tmp_path / "certifier.yaml").notifications
        assert config.targets[0].secret_file == tmp_path / "hook.key"
        [delivery] = raise_one(session_factory, clock, config)
        assert notify.deliver_due(session_factory, clock, config).delivered == [delivery]
        assert keyed.posts[0].signed
    finally:
        keyed.close()


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://hooks.example.org/x", "must be an http(s) URL with a host"),
    ("https://", "must be an http(s) URL with a host"),
    ("https://hooks.example.org:99999/x", "must be an http(s) URL with a host"),
    ("https://hooks.example.org/a b", "must be an http(s) URL with a host"),
    ("https://bot:hunter2@hooks.example.org/x", "must not carry a user or password"),
])
def test_a_target_with_a_bad_url_is_refused_naming_the_key(url: str, why: str) -> None:
    text = f"notifications:\n  targets:\n    - {{name: chat, url: '{url}', secret: s}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, "certifier.yaml")
    assert str(caught.value).startswith(
        "certifier.yaml: notifications.targets.0.url (line 3): " + why)


@pytest.mark.parametrize(("target", "message"), [
    ("{name: chat, url: 'https://h.example/x'}", "give exactly one of secret, secret_file or "
                                                 "secret_env"),
    ("{name: chat, url: 'https://h.example/x', secret: s, events: [promoted, merged]}",
     "notifications.targets.0.events.1 (line 3): Input should be 'promoted', 'rejected', "
     "'regressed' or 'revoked'"),
    ("{name: Chat!, url: 'https://h.example/x', secret: s}",
     "notifications.targets.0.name (line 3): must be lower-case letters"),
    ("{name: chat, url: 'https://h.example/x', secret_env: CHAT_TOKEN}",
     "must name an environment variable ending in _SECRET"),
])
def test_a_bad_target_is_refused_with_a_clear_message(target: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(f"notifications:\n  targets:\n    - {target}\n", "certifier.yaml")
    assert str(caught.value).startswith("certifier.yaml: notifications.targets.0")
    assert message in str(caught.value)


def test_an_unreadable_secret_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "certifier.yaml").write_text(
        "notifications:\n  targets:\n"
        "    - {name: chat, url: 'https://h.example/x', secret_file: missing.key}\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(tmp_path / "certifier.yaml")
    assert "notifications.targets.0.secret_file: cannot read" in str(caught.value)
    assert "missing.key" in str(caught.value)


def test_the_secret_is_never_shown_by_the_settings() -> None:
    config = targets({"name": "chat", "url": "https://hooks.example.org/x"})
    assert SECRET.decode() not in repr(config)
    assert SECRET.decode() not in str(config.model_dump())


# Events raised by the pipeline ------------------------------------------------------------------


def _bandwidth(gbps: float) -> list[SuiteResult]:
    return [SuiteResult(
        suite="bandwidth", checks=[Check("bandwidth", "h1→h2 connects", True)],
        measurements=[Measurement("bandwidth", "throughput_gbps", gbps, "Gbit/s", Better.HIGHER,
                                  {"src": "h1", "dst": "h2"})])]


class Pipeline:
    """The scheduler with notifications configured, driven the way the tasks drive it."""

    def __init__(self, world: World, config: NotificationsConfig) -> None:
        self.world = world
        self.dispatcher = RecordingDispatcher()  # counts the notification passes asked for
        self.policy = scheduler.SchedulerPolicy(soak=SOAK, notifications=config)

    def reconcile(self) -> scheduler.ReconcileReport:
        with session_scope(self.world.factory) as session:
            return scheduler.reconcile(session, self.world.clock, self.policy, self.dispatcher)

    def run(self, results: list[SuiteResult]) -> scheduler.ReconcileReport:
        """Reconcile, finish the newest pending run with ``results``, reconcile again."""
        self.reconcile()
        with session_scope(self.world.factory) as session:
            newest = session.scalars(select(models.Run.id).where(
                models.Run.state == "pending").order_by(models.Run.id.desc())).first()
        assert newest is not None, "expected a pending run"
        self.world.claim(newest)
        self.world.clock.advance(timedelta(minutes=1))
        self.world.finish(newest, results)
        return self.reconcile()

    def reject(self, results: list[SuiteResult]) -> int:
        """Fail runs with ``results`` until the candidate is rejected (a failed check may be
        rechecked first); the candidate's id."""
        for _ in range(3):
            report = self.run(results)
            if report.rejected:
                return report.rejected[0]
        raise AssertionError("the candidate was never rejected")

    def promote(self, results: list[SuiteResult]) -> int:
        self.soak_through(results)
        [promoted] = self.reconcile().promoted
        return promoted

    def soak_through(self, results: list[SuiteResult]) -> None:
        """Pass the gate and a soak run with ``results``, and let the soak's time go by."""
        assert self.run(results).started_soak  # the gate passed
        self.run(results)  # the soak's first run
        self.world.clock.advance(SOAK.duration)


def _payloads(factory: sessionmaker[Session]) -> list[tuple[str, dict[str, Any]]]:
    with session_scope(factory) as session:
        return [(r.event, dict(r.payload)) for r in session.scalars(
            select(models.Notification).order_by(models.Notification.id))]


@pytest.fixture
def pipeline(session_factory: sessionmaker[Session], clock: FakeClock,
             receiver: Receiver) -> Pipeline:
    world = World(session_factory, clock)
    world.component("neutron")
    world.testbed("gate1")
    return Pipeline(world, targets({"name": "chat", "url": receiver.url}))


def test_the_scheduler_raises_promoted_and_it_is_delivered(
    pipeline: Pipeline, receiver: Receiver,
) -> None:
    good = pipeline.world.commit("neutron", "good")
    before = pipeline.dispatcher.notification_passes
    candidate = pipeline.promote(_bandwidth(10.0))
    assert pipeline.dispatcher.notification_passes == before + 1  # sent after the commit
    [(event, payload)] = _payloads(pipeline.world.factory)
    assert event == "promoted"
    assert payload["candidate"] == candidate
    assert payload["combination"] == {"neutron": good}
    assert payload["known_good"] == 1
    assert payload["link"] == f"/candidates/{candidate}"
    assert payload["by"] == "scheduler"
    notify.deliver_due(pipeline.world.factory, pipeline.world.clock, pipeline.policy.notifications)
    [post] = receiver.posts
    assert post.signed and post.json()["summary"] == (
        f"candidate {candidate} promoted to known-good #1")


def test_a_rejection_by_a_regression_raises_rejected_and_regressed(pipeline: Pipeline) -> None:
    pipeline.world.commit("neutron", "good")
    pipeline.promote(_bandwidth(10.0))
    pipeline.world.commit("neutron", "halves-bandwidth")
    rejected = pipeline.reject(_bandwidth(5.0))
    events = _payloads(pipeline.world.factory)[1:]
    assert [e for e, _ in events] == ["rejected", "regressed"]
    for _, payload in events:
        assert payload["candidate"] == rejected
        assert payload["known_good"] == 1  # what it was judged against
        assert any(e["kind"] == "regression" for e in payload["excuses"])
    assert "bandwidth throughput_gbps h1→h2" in events[1][1]["summary"]


def test_a_rejection_by_a_failed_check_raises_rejected_only(pipeline: Pipeline) -> None:
    pipeline.world.commit("neutron", "cuts-h2-off")
    failing = [SuiteResult(suite="ping",
                           checks=[Check("ping", "h1 reaches h2", False, "100 % loss")])]
    rejected = pipeline.reject(failing)
    [(event, payload)] = _payloads(pipeline.world.factory)
    assert event == "rejected"
    assert payload["candidate"] == rejected
    assert payload["known_good"] is None  # nothing was promoted yet
    assert "h1 reaches h2" in payload["summary"]


def test_nothing_is_sent_when_the_pass_rolls_back(pipeline: Pipeline) -> None:
    pipeline.world.commit("neutron", "good")
    pipeline.soak_through(_bandwidth(10.0))
    with pytest.raises(RuntimeError), session_scope(pipeline.world.factory) as session:
        assert scheduler.reconcile(session, pipeline.world.clock, pipeline.policy,
                                   pipeline.dispatcher).promoted
        raise RuntimeError("the pass fails before it commits")
    assert pipeline.dispatcher.notification_passes == 0
    assert _payloads(pipeline.world.factory) == []


def test_the_worker_task_delivers_and_beat_sends_it_every_tick(
    session_factory: sessionmaker[Session], clock: FakeClock, receiver: Receiver, tmp_path: Path,
) -> None:
    config = targets({"name": "chat", "url": receiver.url}, tick="3s")
    settings = Settings(data_dir=tmp_path, config=CertifierConfig(notifications=config))
    context = WorkerContext(settings, clock=clock)
    context.session_factory = session_factory  # type: ignore[misc]  # the test's transaction
    app = create_celery(settings, context)
    assert app.conf.beat_schedule["deliver-notifications"] == {
        "task": DELIVER_NOTIFICATIONS_TASK, "schedule": 3.0}
    [delivery] = raise_one(session_factory, clock, config)
    assert app.tasks[DELIVER_NOTIFICATIONS_TASK]() == {"delivered": [delivery]}
    assert receiver.posts[0].signed
