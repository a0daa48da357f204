"""The dashboard's cost to watch: GET / under load, and what dashboard viewers do to manifest pulls.

Three servers run at once on one demo-sized SQLite database, and every measurement is repeated in
interleaved rounds (round 1: each measurement once, round 2: again, …), so a change in the
machine's load falls on all of them alike; the table shows each figure's median over the rounds.

- **certifier**: ``certifier serve`` as users run it: the uvicorn of ``certifier/api/server.py``,
  access log on (written to a file, as ``certifier up`` writes ``api.log``), ``--workers N``.
- **bare starlette**: ``api_manifest.py``'s Starlette app answering ``GET /api/v1/manifest`` with
  the same bytes and ETag (uvicorn, one process, no access log): the ceiling for a framework app.
- **raw asgi**: the same bytes from a bare ASGI callable: the ceiling for uvicorn itself.

Measured, with ``wrk`` (one thread) per round:

1. ``GET /`` alone at ``--connections`` (16) on certifier. Target: >= 1,000 req/s.
2. ``GET /api/v1/manifest`` alone at 16 connections on each of the three servers.
3. The same manifest load on certifier while ``--viewers`` (8) browsers watch the overview: each
   listens on ``/events`` and fetches the page on every ``changed`` event, as ``live.js`` does,
   while a new upstream commit is recorded every second. Targets: the manifest keeps >= 0.8x
   its req/s alone and its p99 <= 2x alone.
4. The same manifest load while 8 connections request ``GET /`` as fast as it answers (a second
   wrk, started first and stopped after): the issue's load, reported beside, no target.

Besides wrk's figures, each step records the cores the certifier server (all its processes) used,
read from ``/proc``: load from other work on the machine slows the rates but not that.

The database is seeded through the services as the demo leaves it and a little more: the demo's
four components, two known-goods, five bad commits each rejected by its gate run, a candidate part
way through a 7-day soak and one queued behind it, about 70 measurements per run. ``--database``
serves a copy of another SQLite file instead (a real demo's ``certifier.sqlite``).

Usage: python benchmarks/dashboard_serving.py [--duration 8] [--rounds 5] [--connections 16]
       [--viewers 8] [--workers N] [--database PATH]

``--workers`` defaults to what ``certifier serve`` starts when not told (one per core, at most 4).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import cpu_seconds, free_port, served, uvicorn_server  # noqa: E402
from benchmarks.serving import wrk as run_wrk  # noqa: E402
from certifier.api import server  # noqa: E402
from certifier.db import migrate, models  # noqa: E402
from certifier.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from certifier.demo.world import BAD_COMMITS, INITIAL  # noqa: E402
from certifier.domain.clock import FakeClock  # noqa: E402
from certifier.domain.judgement import JudgementPolicy  # noqa: E402
from certifier.domain.promotion import SoakPolicy  # noqa: E402
from certifier.domain.results import Better, Check, Measurement, SuiteResult  # noqa: E402
from certifier.pipeline import components, runs, scheduler  # noqa: E402
from certifier.pipeline.dispatch import NullDispatcher  # noqa: E402
from certifier.settings import ComponentConfig  # noqa: E402

SOAK = SoakPolicy(duration=timedelta(days=7), interval=timedelta(hours=6), min_runs=1,
                  max_infra_retries=1, recheck_failed=0)
CONFIG = """soak:
  duration: 7d
  interval: 6h
  min_runs: 1
  max_infra_retries: 1
  recheck_failed: 0
"""
HOSTS = ("h1", "h2", "h3")


# -- the database ------------------------------------------------------------------------------


def results(run_no: int, broken: str | None = None) -> list[SuiteResult]:
    """Ping, bandwidth and storage between three hosts: about 70 measurements; ``broken`` fails
    that suite's check."""
    wobble = 1 + 0.01 * ((run_no * 7) % 5 - 2)
    pairs = [{"src": a, "dst": b} for a in HOSTS for b in HOSTS if a != b]
    ping = [Measurement("ping", metric, value * wobble, unit, Better.LOWER, pair)
            for pair in pairs
            for metric, value, unit in (("rtt_avg_ms", 0.06, "ms"), ("rtt_max_ms", 0.11, "ms"),
                                        ("loss_pct", 0.0, "%"))]
    bandwidth = [Measurement("bandwidth", metric, value * wobble, unit, better,
                             {**pair, "protocol": proto, "streams": "1"})
                 for pair in pairs for proto in ("tcp", "udp")
                 for metric, value, unit, better in (
                     ("throughput_gbps", 0.78, "Gbit/s", Better.HIGHER),
                     ("retransmits", 3.0, "count", Better.LOWER),
                     ("jitter_ms", 0.02, "ms", Better.LOWER))]
    storage = [Measurement("storage", f"{job}_{metric}", value / wobble, unit, better,
                           {"job": job})
               for job in ("seq_write", "seq_read", "rand_write", "rand_read")
               for metric, value, unit, better in (("mbps", 410.0, "MB/s", Better.HIGHER),
                                                   ("iops", 18250.0, "IOPS", Better.HIGHER),
                                                   ("lat_p99_ms", 1.8, "ms", Better.LOWER))]
    return [SuiteResult(suite, checks=[Check(suite, f"{suite} h1->h2", suite != broken)],
                        measurements=values, tool_versions={suite: "1"})
            for suite, values in (("ping", ping), ("bandwidth", bandwidth),
                                  ("storage", storage))]


class Seeder:
    """Builds pipeline state through the services with a clock that ends about now."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.factory = make_session_factory(self.engine)
        self.clock = FakeClock(datetime.now(UTC) - timedelta(days=16, hours=2))  # ends ~now
        self.policy = scheduler.SchedulerPolicy(soak=SOAK)
        self.finished = 0
        self.commits = 0

    def commit(self, component: str, title: str) -> None:
        self.commits += 1
        sha = hashlib.sha1(f"{component}{self.commits}".encode()).hexdigest()  # noqa: S324
        with session_scope(self.factory) as session:
            components.report_commit(session, component, sha, self.clock, title=title,
                                     author="Demo Author", seen_via="poll")
        self.clock.advance(timedelta(minutes=1))

    def reconcile(self) -> scheduler.ReconcileReport:
        with session_scope(self.factory) as session:
            return scheduler.reconcile(session, self.clock, self.policy, NullDispatcher())

    def run(self, run_id: int, broken: str | None = None, finish: bool = True) -> None:
        with session_scope(self.factory) as session:
            runs.claim(session, run_id, "worker-1", self.clock, timedelta(minutes=30))
        self.clock.advance(timedelta(minutes=3))
        if finish:
            self.finished += 1
            with session_scope(self.factory) as session:
                runs.finish(session, run_id, results(self.finished, broken), self.clock,
                            JudgementPolicy(), log=f"log of run {run_id}\n")

    def promote_heads(self) -> None:
        self.run(self.reconcile().runs_created[-1])  # the gate
        self.run(self.reconcile().runs_created[-1])  # the first soak run
        self.clock.advance(SOAK.duration)
        assert self.reconcile().promoted, "expected a promotion"


def seed(url: str) -> dict[str, int]:
    migrate.upgrade(url)
    world = Seeder(url)
    with session_scope(world.factory) as session:
        for name in INITIAL:
            components.create_component(
                session, ComponentConfig(name=name, url=f"https://git.example/{name}.git"),
                world.clock)
        session.add(models.Testbed(name="gate1", driver="netns", role="gate"))
        session.add(models.Testbed(name="soak1", driver="netns", role="soak"))
    for name, (_files, title) in INITIAL.items():
        world.commit(name, title)
    world.promote_heads()
    suites = ("bandwidth", "ping", "storage", "storage", "storage")
    for push, suite in zip(BAD_COMMITS, suites, strict=False):  # each rejected at its gate
        world.commit(push.component, push.title)
        created = world.reconcile().runs_created
        if created:
            world.run(created[-1], broken=suite)
            created = world.reconcile().runs_created  # culprit finding, when it starts
            while created:
                for run_id in created:
                    world.run(run_id)
                created = world.reconcile().runs_created
    for name in INITIAL:
        world.commit(name, f"{name}: fix what the last change broke")
    world.promote_heads()
    world.commit("api", "Cache the token lookups")  # soaking for two days, a run in progress
    world.run(world.reconcile().runs_created[-1])
    soak_run = world.reconcile().runs_created[-1]
    for _ in range(8):
        world.run(soak_run)
        world.clock.advance(SOAK.interval)
        soak_run = world.reconcile().runs_created[-1]
    world.run(soak_run, finish=False)
    world.commit("routing", "Announce the new floating-IP range")  # queued behind it
    world.reconcile()
    with session_scope(world.factory) as session:
        counts = {name: session.query(model).count() for name, model in (
            ("candidates", models.Candidate), ("runs", models.Run),
            ("measurements", models.MeasurementRow))}
    world.engine.dispose()
    return counts


# -- the servers -------------------------------------------------------------------------------


@contextmanager
def certifier(env: dict[str, str], workers: int, log: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "certifier", "serve", "--port", str(port),
            "--workers", str(workers)]
    with log.open("ab") as output, served(argv, env, port, output=output) as url:
        yield url


def raw_app() -> object:
    """A bare ASGI callable with the manifest's bytes (api_manifest.bare_app's files): no
    framework at all."""
    body = Path(os.environ["BENCH_BODY"]).read_bytes()
    etag = Path(os.environ["BENCH_ETAG"]).read_text()
    headers = [(b"content-type", b"application/json"), (b"etag", etag.encode()),
               (b"cache-control", b"no-cache"), (b"content-length", str(len(body)).encode())]

    async def app(scope: dict[str, object], receive: object, send: Callable[..., object]) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


# -- measuring ---------------------------------------------------------------------------------


def wrk(url: str, duration: float, connections: int) -> dict[str, float]:
    """wrk, and the cores the server behind ``url`` used meanwhile (``cpu``)."""
    base = url.split("/", 3)
    origin = "/".join(base[:3])
    cpu, wall = cpu_seconds(origin), time.monotonic()
    got = run_wrk(url, duration, connections)
    return {**got, "cpu": (cpu_seconds(origin) - cpu) / (time.monotonic() - wall)}


def while_loaded(manifest: str, page: str, duration: float, connections: int,
                 viewers: int) -> tuple[dict[str, float], dict[str, float]]:
    """The manifest under load while ``viewers`` connections request ``page`` flat out."""
    seen: dict[str, dict[str, float]] = {}
    thread = threading.Thread(target=lambda: seen.update(page=wrk(page, duration + 2, viewers)))
    thread.start()
    threading.Event().wait(1.0)  # the viewers are at full speed before the manifest load starts
    pulled = wrk(manifest, duration, connections)
    thread.join()
    return pulled, seen["page"]


class Viewers:
    """Browsers on the overview, as live.js drives them: each listens on ``/events`` and fetches
    the page again on every ``changed`` event; meanwhile the pipeline changes every second
    (a new upstream commit, as a poll or a webhook would record it)."""

    def __init__(self, base: str, database_url: str, n: int) -> None:
        self.base, self.database_url, self.n = base, database_url, n
        self.stop = threading.Event()
        self.pages = 0
        self.changes = 0
        self._lock = threading.Lock()

    def _viewer(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            client.get("/").raise_for_status()
            while not self.stop.is_set():
                with client.stream("GET", "/events") as events:
                    for line in events.iter_lines():
                        if self.stop.is_set():
                            break
                        if line == "event: changed":
                            client.get("/").raise_for_status()
                            with self._lock:
                                self.pages += 1

    def _pipeline(self) -> None:
        engine = make_engine(self.database_url)
        factory = make_session_factory(engine)
        clock = FakeClock(datetime.now(UTC))
        while not self.stop.wait(1.0):
            self.changes += 1
            seed = f"viewed {time.time_ns()}"  # new in every round: a known sha changes nothing
            sha = hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324
            with session_scope(factory) as session:
                components.report_commit(session, "storage", sha, clock, seen_via="poll",
                                         title=f"storage: change {self.changes}")
        engine.dispose()

    @contextmanager
    def watching(self) -> Iterator[Viewers]:
        threads = [threading.Thread(target=self._viewer, daemon=True) for _ in range(self.n)]
        threads.append(threading.Thread(target=self._pipeline, daemon=True))
        for thread in threads:
            thread.start()
        try:
            threading.Event().wait(1.5)  # every viewer has its page and listens
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=20)


def while_watched(manifest: str, viewers: Viewers, duration: float,
                  connections: int) -> tuple[dict[str, float], dict[str, float]]:
    """The manifest under load while ``viewers`` watch the overview of a changing pipeline."""
    with viewers.watching():
        pages, changes = viewers.pages, viewers.changes
        pulled = wrk(manifest, duration, connections)
        pages, changes = viewers.pages - pages, viewers.changes - changes
    return pulled, {"rps": pages / duration, "p99_ms": float("nan"), "errors": 0.0,
                    "changes": changes / duration}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=server.default_workers())
    parser.add_argument("--database", type=Path, help="serve a copy of this SQLite file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (`./dev bench` installs it)")
        return 2
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        data = Path(tmp)
        (data / "certifier.yaml").write_text(CONFIG)
        env = {**os.environ, "CERTIFIER_DATA_DIR": str(data),
               "CERTIFIER_CONFIG": str(data / "certifier.yaml"), "CERTIFIER_LOG_LEVEL": "INFO",
               "BENCH_BODY": str(data / "body.json"), "BENCH_ETAG": str(data / "etag")}
        env.pop("CERTIFIER_DATABASE_URL", None)
        database = data / "certifier.sqlite"
        if args.database:
            shutil.copyfile(args.database, database)
            size = f"a copy of {args.database}"
        else:
            counts = seed(f"sqlite:///{database}")
            size = "demo-sized, seeded: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        ours = stack.enter_context(certifier(env, args.workers, data / "api.log"))
        first = httpx.get(f"{ours}/api/v1/manifest")
        first.raise_for_status()
        (data / "body.json").write_bytes(first.content)
        (data / "etag").write_text(first.headers["etag"])
        bare = stack.enter_context(uvicorn_server(
            "benchmarks.api_manifest:bare_app", env, probe="/api/v1/manifest"))
        raw = stack.enter_context(uvicorn_server(
            "benchmarks.dashboard_serving:raw_app", env, probe="/api/v1/manifest"))
        for url in (bare, raw):
            assert httpx.get(f"{url}/api/v1/manifest").content == first.content
        page_bytes = len(httpx.get(f"{ours}/").content)
        watched_pages: list[dict[str, float]] = []
        loaded_pages: list[dict[str, float]] = []
        d, c = args.duration, args.connections
        database_url = f"sqlite:///{database}"

        def watched() -> dict[str, float]:
            pulled, page = while_watched(f"{ours}/api/v1/manifest",
                                         Viewers(ours, database_url, args.viewers), d, c)
            watched_pages.append(page)
            return pulled

        def loaded() -> dict[str, float]:
            pulled, page = while_loaded(f"{ours}/api/v1/manifest", f"{ours}/", d, c,
                                        args.viewers)
            loaded_pages.append(page)
            return pulled

        steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("GET / alone", lambda: wrk(f"{ours}/", d, c)),
            ("manifest alone, certifier", lambda: wrk(f"{ours}/api/v1/manifest", d, c)),
            ("manifest while watched, certifier", watched),
            ("manifest alone, bare starlette", lambda: wrk(f"{bare}/api/v1/manifest", d, c)),
            ("manifest while GET / flat out, certifier", loaded),
            ("manifest alone, raw asgi", lambda: wrk(f"{raw}/api/v1/manifest", d, c)),
        ]
        rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in steps}
        for round_no in range(args.rounds):
            print(f"round {round_no + 1} of {args.rounds}", flush=True)
            turn = round_no % len(steps)  # rotate the order, so no step always comes first
            for name, step in steps[turn:] + steps[:turn]:
                rows[name].append(step())
    report(rows, watched_pages, loaded_pages, args, size, len(first.content), page_bytes)
    return 0 if targets_met(rows) else 1


def ratios(rows: dict[str, list[dict[str, float]]], viewed: str) -> tuple[float, float]:
    """(req/s, p99) of the manifest under ``viewed`` over the manifest alone."""
    alone, under = rows["manifest alone, certifier"], rows[viewed]
    return (median(under, "rps") / median(alone, "rps"),
            median(under, "p99_ms") / median(alone, "p99_ms"))


def targets_met(rows: dict[str, list[dict[str, float]]]) -> bool:
    rps, p99 = ratios(rows, "manifest while watched, certifier")
    return median(rows["GET / alone"], "rps") >= 1000 and rps >= 0.8 and p99 <= 2


def report(rows: dict[str, list[dict[str, float]]], watched: list[dict[str, float]],
           loaded: list[dict[str, float]], args: argparse.Namespace, size: str,
           manifest_bytes: int, page_bytes: int) -> None:
    print(f"\nDashboard serving: {size}; GET / {page_bytes:,} bytes, manifest "
          f"{manifest_bytes:,} bytes; certifier serve --workers {args.workers} (access log on); "
          f"wrk 1 thread, {args.connections} connections, {args.duration:g} s, median of "
          f"{args.rounds} interleaved rounds\n")
    print("| measurement | requests/s | p99 ms | errors | server CPU, cores |")
    print("|---|---:|---:|---:|---:|")
    for name, got in rows.items():
        print(f"| {name} | {median(got, 'rps'):.0f} | {median(got, 'p99_ms'):.2f} "
              f"| {sum(r['errors'] for r in got):.0f} | {median(got, 'cpu'):.2f} |")
    print(f"| GET / by the {args.viewers} watching browsers meanwhile "
          f"({median(watched, 'changes'):.1f} changes/s) | {median(watched, 'rps'):.1f} "
          "| | | |")
    print(f"| GET / by the {args.viewers} flat-out connections meanwhile "
          f"| {median(loaded, 'rps'):.0f} | {median(loaded, 'p99_ms'):.2f} "
          f"| {sum(r['errors'] for r in loaded):.0f} | |")
    for label, name in (("watched", "manifest while watched, certifier"),
                        ("GET / flat out", "manifest while GET / flat out, certifier")):
        each = [f"{u['rps'] / a['rps']:.2f}/{u['p99_ms'] / a['p99_ms']:.2f}"
                for u, a in zip(rows[name], rows["manifest alone, certifier"], strict=True)]
        print(f"per round, manifest while {label} over alone (req/s / p99): {', '.join(each)}")
    alone = median(rows["manifest alone, certifier"], "rps")
    bare = alone / median(rows["manifest alone, bare starlette"], "rps")
    raw = alone / median(rows["manifest alone, raw asgi"], "rps")
    page = median(rows["GET / alone"], "rps")
    print(f"\nmanifest alone, certifier / bare starlette: {bare:.2f}; / raw asgi: {raw:.2f}")
    print(f"target: GET / >= 1000 req/s: {'met' if page >= 1000 else 'NOT met'} ({page:.0f})")
    for label, name in (("watched by browsers", "manifest while watched, certifier"),
                        ("GET / flat out", "manifest while GET / flat out, certifier")):
        rps, p99 = ratios(rows, name)
        target = "target" if "watched" in name else "no target (worst case)"
        print(f"{target}: manifest while {label} >= 0.8x alone: "
              f"{'met' if rps >= 0.8 else 'NOT met'} ({rps:.2f}); "
              f"p99 <= 2x alone: {'met' if p99 <= 2 else 'NOT met'} ({p99:.2f})")


if __name__ == "__main__":
    sys.exit(main())
