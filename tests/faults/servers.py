"""Private servers for the fault tests: a Redis and a PostgreSQL cluster that a test may kill,
and Certifier's own processes (API, worker, beat) running on them.

The machine's shared PostgreSQL (5432) and Redis (6379) serve everyone's tests, so a test that
restarts its broker or its database starts servers of its own on free ports, in a temporary
folder, and removes them afterwards. Each server is a plain child process (``redis-server``;
``postgres`` under ``pg_ctl``), and the helpers here only start, stop and wait for it: what
happens to Certifier meanwhile is the test's business.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user, in a
folder under the system temporary directory (pytest's own ``tmp_path`` is private to root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis

from certifier import processes
from certifier.settings import Settings
from tests.requirements import unavailable
from tests.tracking.payloads import body_of, github_headers, github_push

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, probe: Callable[[], object], timeout: float,
               interval: float = 0.1) -> object:
    """Poll ``probe`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class PrivateRedis:
    """``redis-server`` on a port of its own, with no persistence at all.

    Nothing is saved (``--save ""``, no AOF), so a kill loses every queued message: the test
    then shows that the delivery sweep, not the broker, keeps what the API accepted.
    """

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("needs redis-server installed (./dev test installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "redis.log").open("ab")
        with log:
            self._proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(f"redis-server on port {self.port}", self._answers, START_TIMEOUT_S)

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise AssertionError(f"redis-server exited: see {self.folder / 'redis.log'}")
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save, every queued and unacknowledged message is gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def queued(self, queue: str) -> int:
        """How many messages wait in a Celery queue (a Redis list of that name)."""
        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return int(client.llen(queue))
        finally:
            client.close()


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program: from PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = [p for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}")
                if p.parts[4].isdigit()]
    if not versions:
        unavailable(f"needs the PostgreSQL server programs ({name}; ./dev test installs them)")
    return str(max(versions, key=lambda p: int(p.parts[4])))


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb``), run with ``pg_ctl`` on a free port.

    Trust authentication on 127.0.0.1 only, the socket in the cluster's own folder. ``stop``
    is ``pg_ctl stop -m fast``: clients are disconnected at once, and what was committed is on
    disk when it returns.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="certifier-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self._user: str | None = None
        if os.geteuid() == 0:  # postgres refuses root: the cluster is the postgres user's
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root needs a 'postgres' user to own the private cluster")
            self._user = "postgres"
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.sockets.mkdir()
        if self._user is not None:
            os.chown(self.sockets, account.pw_uid, account.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        result = subprocess.run(list(argv), user=self._user, capture_output=True, text=True,
                                timeout=timeout, cwd=self.root, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def init(self) -> None:
        self._run(postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=100")
        self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.log), "-w", "-t", str(int(START_TIMEOUT_S)), "start")
        wait_until(f"PostgreSQL on port {self.port}", self.answers, START_TIMEOUT_S)

    def stop(self) -> None:
        """Fast shutdown: every session is ended, committed data stays."""
        self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t",
                  str(int(START_TIMEOUT_S)), "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def answers(self) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                 dbname="postgres", connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def create_database(self, name: str) -> str:
        """A new database on this cluster; its URL."""
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh, running cluster; stopped and deleted afterwards, whatever the test did to it."""
    cluster = PrivatePostgres()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@dataclass
class Service:
    """Certifier's processes on one Settings object, and an HTTP client for its API."""

    client: httpx.Client
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def alive(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def certifier_service(settings: Settings) -> Iterator[Service]:
    """``certifier serve`` (which migrates the database), then a worker and beat.

    Yields once the API is ready and the worker has said so; stops all three afterwards and
    prints the end of their logs, which is what one reads when a fault test fails.
    """
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = {"api": processes.spawn(["serve", "--port", str(port)], settings, logs / "api.log")}
    service = Service(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20), procs, logs)
    try:
        wait_until("the API", lambda: _api_ready(service), 60, interval=0.3)
        procs["worker"] = processes.spawn(["worker"], settings, logs / "worker.log")
        procs["beat"] = processes.spawn(["beat"], settings, logs / "beat.log")
        wait_until("the worker", lambda: " ready." in service.log("worker"), 60)
        yield service
    finally:
        service.client.close()
        processes.stop(list(procs.values()))
        for name in procs:
            print(f"----- {name}.log (tail) -----\n{service.log(name)[-3000:]}")


def _api_ready(service: Service) -> bool:
    assert "api" in service.alive(), "the API process died: see api.log"
    try:
        return service.client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def github_delivery(repo: str, sha: str, before: str, title: str) -> tuple[bytes, str]:
    """A push of one commit to ``main`` as GitHub sends it: the body and a fresh delivery id."""
    body = body_of(github_push(repo, sha, before, commits=[(sha, title)]))
    return body, str(uuid.uuid4())


def post_github(client: httpx.Client, secret: str, body: bytes, guid: str) -> httpx.Response:
    return client.post("/api/v1/webhooks/github", content=body,
                       headers=github_headers(secret, body, guid))
