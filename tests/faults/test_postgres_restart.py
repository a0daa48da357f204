"""PostgreSQL goes away and comes back: the API says 503 meanwhile, then recovers by itself.

Real processes (``certifier serve``, a worker and beat, on the embedded broker) on a private
PostgreSQL cluster of the test's own. A forge pushes to the tracked branch all along. The
database is first stopped (``pg_ctl stop -m fast``: connections are refused), then replaced by a
listener that accepts connections and never answers (a hung database host), then started again.

Before the stop, deliveries are accepted, processed, and form a candidate; a burst accepted just
before the stop is still being processed when the worker loses the database. While the database
is away every request that needs it is answered with a JSON 503 and ``Retry-After`` within a
bounded time (never a 500, never a hang), ``/readyz`` says not ready and ``/healthz`` still says
the process lives. Once it is back the same API process answers again (pool pre-ping), the forge
redelivers what was refused, everything accepted before the stop is still there, what the worker
could not finish is processed (task retry, else the delivery sweep), and writes work.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings, load_settings
from certifier.tracking.webhooks import ZERO_SHA

from .servers import (
    PrivatePostgres,
    Service,
    certifier_service,
    free_port,
    github_delivery,
    post_github,
    private_postgres,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "pg-restart-webhook-s3cret"
REPO = "pg/web"
BEFORE_STOP = 10  # deliveries processed before the stop; they form a candidate
IN_FLIGHT = 30  # deliveries accepted just before the stop: the worker is still on them
REFUSED_S = 5.0  # the database refuses connections this long ...
HUNG_S = 6.0  # ... then accepts them and never answers this long
CONNECT_TIMEOUT_S = 2  # the test's database URL sets it; production's default is 10 s
ANSWER_WITHIN_S = CONNECT_TIMEOUT_S + 3.0  # every request is answered within this, even hung
FORGE_PACE_S = 0.05


@dataclass
class Sent:
    sha: str
    guid: str
    body: bytes
    status: int
    took: float
    delivery_id: int | None


@dataclass
class Forge:
    """A busy upstream: pushes one commit after another to the branch until told to stop."""

    client: httpx.Client
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    before: str = ZERO_SHA
    halt: threading.Event = field(default_factory=threading.Event)

    def push(self) -> Sent:
        sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        body, guid = github_delivery(REPO, sha, self.before, f"change {len(self.sent)}")
        started = time.monotonic()
        answer = post_github(self.client, SECRET, body, guid)
        took = time.monotonic() - started
        accepted = answer.status_code == 202
        sent = Sent(sha, guid, body, answer.status_code, took,
                    int(answer.json()["delivery"]) if accepted else None)
        self.sent.append(sent)
        self.before = sha
        if not accepted:
            try:
                _is_a_503(answer)
            except AssertionError as exc:
                self.errors.append(f"push {len(self.sent)}: {exc}")
        return sent

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.push()
            except httpx.TransportError as exc:  # no answer at all is a failure too
                self.errors.append(f"push {len(self.sent)}: no answer: {exc!r}")
            time.sleep(FORGE_PACE_S)


def _config(folder: Path, closed_port: int) -> Path:
    """One GitHub branch whose forge API and git URL are a closed local port.

    A delivery that does not follow the known head is applied as sent (the compare fails at
    once). The candidate's gate run cannot fetch the code (an infra error) and, with no infra
    retries, waits there: the candidate exists, and nothing runs while the database goes away.
    """
    path = folder / "certifier.yaml"
    path.write_text(
        "components:\n"
        f"  - {{name: web, source: github, url: 'http://127.0.0.1:{closed_port}/{REPO}',\n"
        f"     api_url: 'http://127.0.0.1:{closed_port}', poll_interval: null}}\n"
        "testbeds:\n  - {name: gate1, driver: local}\n"
        # The forge is a closed local port: the source policy must allow http to this host.
        "sources: {schemes: [https, http], private_hosts: true}\n"
        "soak: {max_infra_retries: 0}\n"
        "scheduler: {reconcile_interval: 2s}\n"
        "tracking: {sweep_interval: 1s, redispatch_after: 3s, http_timeout: 2s}\n")
    return path


@pytest.fixture
def cluster() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, cluster: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[Service, Settings]]:
    monkeypatch.setenv("CERTIFIER_GITHUB_WEBHOOK_SECRET", SECRET)
    url = f"{cluster.create_database('certifier')}?connect_timeout={CONNECT_TIMEOUT_S}"
    settings = load_settings(config_file=_config(tmp_path, free_port()),
                             data_dir=tmp_path / "data", database_url=url, broker_url=None)
    with certifier_service(settings) as running:
        yield running, settings


def _is_a_503(answer: httpx.Response) -> None:
    assert answer.status_code == 503, (answer.request.url, answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json")
    assert int(answer.headers["retry-after"]) > 0
    assert "database" in answer.json()["detail"]
    assert "Traceback" not in answer.text and "psycopg" not in answer.text


def _pending(client: httpx.Client) -> list[int]:
    answer = client.get("/api/v1/deliveries", params={"state": "pending", "limit": 500})
    assert answer.status_code == 200, answer.text
    return [int(d["id"]) for d in answer.json()["items"]]


def _judged_candidate(client: httpx.Client) -> dict[str, object] | None:
    """The candidate that boarded, once its gate run has ended (so nothing runs at the stop).

    Newer combinations queue behind it (and supersede each other) as pushes keep coming.
    """
    for item in client.get("/api/v1/candidates").json()["items"]:
        if item["state"] in ("queued", "superseded"):
            continue
        detail: dict[str, object] = client.get(f"/api/v1/candidates/{item['id']}").json()
        runs = detail.get("runs")
        assert isinstance(runs, list)
        return detail if runs and all(r.get("verdict") for r in runs) else None
    return None


def _knock(client: httpx.Client, seconds: float) -> tuple[Counter[str], float]:
    """Every kind of request but webhooks (the forge sends those), again and again, while the
    database is away: (answers, slowest answer)."""
    doors: dict[str, Callable[[], httpx.Response]] = {
        "read": lambda: client.get("/api/v1/candidates"),
        "write": lambda: client.post("/api/v1/components/web/commits",
                                     json={"sha": uuid.uuid4().hex + "0" * 8}),
        "readyz": lambda: client.get("/readyz"),
        "healthz": lambda: client.get("/healthz"),
    }
    answers: Counter[str] = Counter()
    slowest = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, send in doors.items():
            started = time.monotonic()
            answer = send()
            took = time.monotonic() - started
            slowest = max(slowest, took)
            assert took < ANSWER_WITHIN_S, (name, took)
            answers[f"{name} {answer.status_code}"] += 1
            if name == "healthz":
                assert answer.status_code == 200
            elif name == "readyz":
                assert (answer.status_code, answer.json()["status"]) == (503, "unavailable")
            else:
                _is_a_503(answer)
        time.sleep(0.1)  # a client retrying, not a busy loop
    return answers, slowest


class SilentDatabase:
    """A listener on the database's port that accepts connections and never says a word."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(512)  # the kernel completes the handshakes; nobody reads or replies

    def close(self) -> None:
        self.sock.close()


def test_the_api_answers_503_while_postgres_is_away_and_recovers_by_itself(
    service: tuple[Service, Settings], cluster: PrivatePostgres,
) -> None:
    running, settings = service
    client = running.client
    forge = Forge(httpx.Client(base_url=client.base_url, timeout=30))

    # 1. Deliveries accepted and processed; they form a candidate, whose gate run ends.
    for _ in range(BEFORE_STOP):
        assert forge.push().status == 202
    candidate = wait_until("the candidate's gate run to end", lambda: _judged_candidate(client),
                           60, interval=0.5)
    assert isinstance(candidate, dict)
    wait_until("the first deliveries to be processed", lambda: not _pending(client), 60)

    # 2. A burst the worker is still processing when the database goes away; the forge goes on.
    for _ in range(IN_FLIGHT):
        assert forge.push().status == 202
    in_flight = len(_pending(client))
    pushing = threading.Thread(target=forge.run)
    pushing.start()
    try:
        # 3. Refused, then hung: JSON 503s with Retry-After, in bounded time; the process lives.
        cluster.stop()
        stopped = time.monotonic()
        refused, slowest_refused = _knock(client, REFUSED_S)
        silent = SilentDatabase(cluster.port)
        try:
            hung, slowest_hung = _knock(client, HUNG_S)
        finally:
            silent.close()

        # 4. Back: the same API process answers from the database again, by itself.
        cluster.start()
        restarted = time.monotonic()
        wait_until("the API to be ready again", lambda: client.get("/readyz").status_code == 200,
                   30, interval=0.1)
        ready = time.monotonic()
        wait_until("the forge's next push to be accepted", lambda: forge.sent[-1].status == 202,
                   30, interval=0.1)
    finally:
        forge.halt.set()
        pushing.join(timeout=60)
    assert forge.errors == []
    written = client.post("/api/v1/components/web/commits", json={"sha": "ab" * 20})
    assert written.status_code == 201, written.text

    # 5. The forge redelivers what was refused: each is stored now (or, if the connection died
    #    during the very commit, was stored then and is a duplicate).
    refused_pushes = [s for s in forge.sent if s.status == 503]
    assert refused_pushes, "no webhook was refused while the database was away"
    redelivered: Counter[int] = Counter()
    for push in refused_pushes:
        answer = post_github(client, SECRET, push.body, push.guid)
        assert answer.status_code in (200, 202), answer.text
        push.delivery_id = int(answer.json()["delivery"])
        redelivered[answer.status_code] += 1
    assert redelivered[200] <= 2, redelivered  # only a push in flight at a transition can be

    # 6. Nothing accepted was lost, nothing was stored twice, the candidate is as it was.
    wait_until("every delivery to be processed", lambda: not _pending(client), 60, interval=0.5)
    again = client.get(f"/api/v1/candidates/{candidate['id']}").json()
    assert (again["id"], again["state"], again["runs"]) == (
        candidate["id"], candidate["state"], candidate["runs"])
    engine = make_engine(settings.resolved_database_url, poolclass=NullPool)
    try:
        with session_scope(make_session_factory(engine)) as session:
            stored = {d.id: d for d in session.scalars(select(models.Delivery))}
            commits = set(session.scalars(select(models.Commit.sha)))
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(s.delivery_id or 0 for s in forge.sent)
    assert all(d.state == "processed" and d.processed_at for d in stored.values())
    assert {s.sha for s in forge.sent} <= commits
    assert sorted(running.alive()) == ["api", "beat", "worker"]

    accepted = sum(s.status == 202 for s in forge.sent)
    first_503 = min(s.took for s in refused_pushes)
    print(f"\npostgres restart: forge sent {len(forge.sent)} deliveries, {accepted} accepted "
          f"({in_flight} still pending at the stop), {len(refused_pushes)} refused with 503 "
          f"and redelivered ({dict(redelivered)}); database away "
          f"{restarted - stopped:.1f} s ({REFUSED_S:.0f} s refusing, {HUNG_S:.0f} s hung); "
          f"answers refused {dict(refused)}, hung {dict(hung)}; slowest answer "
          f"{slowest_refused * 1000:.0f} ms refused, {slowest_hung * 1000:.0f} ms hung "
          f"(fastest 503 {first_503 * 1000:.0f} ms); ready {ready - restarted:.2f} s after the "
          f"start; deliveries tried more than once: "
          f"{sorted(d.attempts for d in stored.values() if d.attempts > 1)}")


def test_no_free_database_connection_is_a_503_not_a_500(database_url: str, tmp_path: Path
                                                         ) -> None:
    """Every pooled connection busy (a hung database, or overload): 503 with Retry-After."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(),
                     session_factory=make_session_factory(engine))
    try:
        with engine.connect():  # the only connection, taken
            answer = TestClient(app).get("/api/v1/candidates")
    finally:
        engine.dispose()
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert "database" in answer.json()["detail"]


def test_a_postgresql_engine_gives_up_connecting_after_ten_seconds_unless_told() -> None:
    """Without a bound, a database host that never answers holds a request for minutes."""
    seen: list[object] = []
    for url in ("postgresql://u@127.0.0.1:1/db", "postgresql://u@127.0.0.1:1/db?connect_timeout=3"):
        engine = make_engine(url, poolclass=NullPool)

        @event.listens_for(engine, "do_connect")
        def _record(_dialect: object, _record: object, _args: object,
                    cparams: dict[str, object]) -> None:
            seen.append(cparams.get("connect_timeout"))

        with pytest.raises(OperationalError):
            engine.connect()
        engine.dispose()
    assert seen == [10, "3"]
