"""Redis dies in the middle of a webhook flood: every delivery the API accepted is processed once.

Real processes: the API (``certifier serve``, uvicorn), a worker and beat, on a fresh PostgreSQL
database, with a private ``redis-server`` as the broker. Six threads, one per upstream branch,
push 300 signed GitHub deliveries. When a third of them has been accepted the broker is
SIGKILLed (it saves nothing, so every queued message is lost), stays away for a few seconds
while the flood goes on, and comes back empty on the same port.

The promise under test: **accepted** means the API answered 2xx, and the API answers only after
the delivery is committed; the processing task is sent after that commit, and a send that fails
is left to the delivery sweep (beat), which sends again whatever is still pending after
``redispatch_after``. So the broker's outage may delay deliveries but must not refuse, lose or
duplicate any: each one ends ``processed`` after exactly one processing attempt, and each pushed
commit is recorded once.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from certifier.db import models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.settings import Settings, load_settings
from certifier.tracking.webhooks import ZERO_SHA
from tests.conftest import fresh_postgres_database

from .servers import (
    PrivateRedis,
    Service,
    certifier_service,
    free_port,
    github_delivery,
    post_github,
    private_redis,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "flood-webhook-s3cret"
BRANCHES = 6  # one pushing thread per upstream branch
PUSHES = 50  # per branch: 300 deliveries in all
PACE_S = 0.2  # between one branch's pushes: the flood lasts about 10 s
KILL_AFTER = 100  # accepted deliveries before the broker is killed
OUTAGE_S = 4.0
REDELIVERIES = 5  # a forge redelivers (same X-GitHub-Delivery) after an error or no answer


@dataclass
class Push:
    """One delivery as the forge saw it: every answer it got, and when it was accepted."""

    component: str
    sha: str
    guid: str
    answers: list[int] = field(default_factory=list)  # HTTP statuses; 0: no answer at all
    latencies: list[float] = field(default_factory=list)
    accepted_at: float | None = None
    delivery_id: int | None = None


@dataclass
class Outage:
    queued_at_kill: int = 0
    down_at: float = 0.0
    up_at: float = 0.0
    reported: str = ""  # a commit reported over the REST API while the broker was down
    reported_status: int = 0


def _config(folder: Path, closed_port: int) -> Path:
    """Six GitHub branches and one component that never gets a commit.

    The idle component keeps the scheduler from forming a candidate (no combination until every
    component has a commit), so the worker's time goes to deliveries, not testbed runs. The
    forge API is a closed local port: when a push does not follow the head the worker knew (the
    deliveries of one branch are processed in parallel), comparing fails at once and the payload
    is applied as sent, with no network.
    """
    lines = ["components:"]
    for n in range(BRANCHES):
        lines.append(f"  - {{name: flood{n}, source: github, "
                     f"url: 'http://127.0.0.1:{closed_port}/flood/repo{n}', "
                     f"api_url: 'http://127.0.0.1:{closed_port}', poll_interval: null}}")
    lines += [
        f"  - {{name: idle, source: git, url: '{folder / 'nowhere.git'}', poll_interval: null}}",
        "testbeds:",
        "  - {name: gate1, driver: local}",
        # A closed local port and a local folder: the source policy must allow both.
        f"sources: {{schemes: [https, http], private_hosts: true, local_paths: ['{folder}']}}",
        "scheduler: {reconcile_interval: 1h}",
        "tracking: {sweep_interval: 1s, redispatch_after: 5s, http_timeout: 2s}",
    ]
    path = folder / "certifier.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[Service, PrivateRedis, Settings]]:
    """API, worker and beat on a fresh PostgreSQL database and a private Redis."""
    monkeypatch.setenv("CERTIFIER_GITHUB_WEBHOOK_SECRET", SECRET)
    with fresh_postgres_database(f"certifier_faults_redis_{uuid.uuid4().hex[:8]}") as url, \
            private_redis(tmp_path / "redis") as broker:
        settings = load_settings(config_file=_config(tmp_path, free_port()),
                                 data_dir=tmp_path / "data", database_url=url,
                                 broker_url=broker.url)
        with certifier_service(settings) as running:
            yield running, broker, settings


def _sha(component: str, n: int) -> str:
    return hashlib.sha1(f"{component}/{n}".encode()).hexdigest()  # noqa: S324 (a name, not a MAC)


def _deliver(client: httpx.Client, push: Push, body: bytes, accepted: threading.Semaphore
             ) -> None:
    """POST one delivery as GitHub does: redelivered, with the same id, until it is answered 2xx.
    """
    for attempt in range(REDELIVERIES):
        if attempt:
            time.sleep(1.0)
        started = time.monotonic()
        try:
            answer = post_github(client, SECRET, body, push.guid)
        except httpx.TransportError:
            push.answers.append(0)
            push.latencies.append(time.monotonic() - started)
            continue
        push.answers.append(answer.status_code)
        push.latencies.append(time.monotonic() - started)
        if answer.status_code >= 500:
            assert answer.status_code == 503, answer.text  # never a 500
            assert "retry-after" in answer.headers and "detail" in answer.json()
            continue
        assert answer.status_code in (200, 202), answer.text
        push.accepted_at = time.monotonic()
        push.delivery_id = int(answer.json()["delivery"])
        accepted.release()
        return


def _flood(client: httpx.Client, broker: PrivateRedis) -> tuple[list[Push], Outage]:
    """Every branch pushes its chain of commits; meanwhile the broker is killed and restarted."""
    pushes: list[Push] = []
    errors: list[str] = []  # an assertion in a thread is reported here, not lost
    accepted = threading.Semaphore(0)
    outage = Outage()

    def branch(n: int) -> None:
        before = ZERO_SHA
        for i in range(PUSHES):
            sha = _sha(f"flood{n}", i)
            body, guid = github_delivery(f"flood/repo{n}", sha, before, f"change {i}")
            push = Push(f"flood{n}", sha, guid)
            pushes.append(push)
            try:
                _deliver(client, push, body, accepted)
            except AssertionError as exc:
                errors.append(f"flood{n} push {i}: {exc}")
            before = push.sha
            time.sleep(PACE_S)

    def kill_and_restart() -> None:
        for _ in range(KILL_AFTER):
            if not accepted.acquire(timeout=60):
                return
        outage.queued_at_kill = broker.queued("certifier")
        broker.kill()
        outage.down_at = time.monotonic()
        time.sleep(OUTAGE_S / 2)
        # A committed write is answered 2xx though the reconcile it asks for cannot be sent.
        outage.reported = _sha("reported", 0)
        outage.reported_status = client.post("/api/v1/components/flood0/commits",
                                             json={"sha": outage.reported}).status_code
        time.sleep(OUTAGE_S / 2)
        broker.start()
        outage.up_at = time.monotonic()

    threads = [threading.Thread(target=branch, args=(n,)) for n in range(BRANCHES)]
    threads.append(threading.Thread(target=kill_and_restart))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert outage.up_at, "the broker was never restarted: too few deliveries were accepted"
    return pushes, outage


def _pending(engine: Engine) -> int:
    with session_scope(make_session_factory(engine)) as session:
        return int(session.scalar(select(func.count()).select_from(models.Delivery)
                                  .where(models.Delivery.state != "processed")) or 0)


def test_every_delivery_accepted_during_a_broker_restart_is_processed_exactly_once(
    service: tuple[Service, PrivateRedis, Settings],
) -> None:
    running, broker, settings = service
    pushes, outage = _flood(running.client, broker)
    flood_ended = time.monotonic()

    # The broker's outage refused nothing: the API stores first and answers from the database.
    statuses = Counter(s for p in pushes for s in p.answers)
    accepted = [p for p in pushes if p.delivery_id is not None]
    assert len(pushes) == BRANCHES * PUSHES
    assert len(accepted) == len(pushes), statuses
    during = [p for p in accepted if p.accepted_at and outage.down_at <= p.accepted_at
              <= outage.up_at]
    assert during, "no delivery was accepted while the broker was down: the test proved nothing"

    # Every accepted delivery gets processed, though the broker lost what it held.
    engine = make_engine(settings.resolved_database_url, poolclass=NullPool)
    try:
        wait_until("every accepted delivery to be processed", lambda: _pending(engine) == 0,
                   90, interval=0.5)
        all_processed = time.monotonic()
        with session_scope(make_session_factory(engine)) as session:
            rows = {d.id: d for d in session.scalars(select(models.Delivery))}
            commits = Counter(session.execute(
                select(models.Component.name, models.Commit.sha, models.Commit.seen_via)
                .join(models.Commit.component)).all())
    finally:
        engine.dispose()

    # Exactly once: one stored row per delivery, one processing attempt each, one commit each.
    by_id = {p.delivery_id: p for p in accepted if p.delivery_id is not None}
    assert sorted(rows) == sorted(by_id)
    for delivery_id, push in by_id.items():
        row = rows[delivery_id]
        assert row.state == "processed" and row.processed_at is not None, (push, row.outcome)
        assert row.attempts == 1, (push, row.attempts, row.outcome)
        assert "new commits" in row.outcome or "no change" in row.outcome, row.outcome
    assert outage.reported_status == 201
    assert commits == Counter({(p.component, p.sha, "webhook"): 1 for p in pushes}
                              | {("flood0", outage.reported, "api"): 1})

    swept = [p for i, p in by_id.items() if _swept(rows[i])]
    assert swept, "no delivery needed the sweep: the outage lost nothing, so it tested nothing"
    assert sorted(running.alive()) == ["api", "beat", "worker"]  # all of them rode it out
    latencies = sorted(lat for p in pushes for lat in p.latencies)
    print(f"\nredis restart: {len(accepted)} of {len(pushes)} deliveries accepted "
          f"({len(during)} while the broker was down for {outage.up_at - outage.down_at:.1f} s), "
          f"answers {dict(statuses)}; {outage.queued_at_kill} messages lost in the broker; "
          f"{len(swept)} sent again by the sweep; all processed "
          f"{all_processed - outage.up_at:.1f} s after the broker came back "
          f"({all_processed - flood_ended:.1f} s after the flood); webhook latency median "
          f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")


def _swept(row: models.Delivery) -> bool:
    """Sent again by the sweep: its last dispatch is later than its arrival."""
    dispatched: datetime | None = row.dispatched_at
    return dispatched is not None and (dispatched - row.received_at).total_seconds() > 0.5
