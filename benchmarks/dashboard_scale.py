"""The dashboard at scale: 10,000 candidates, 100,000 runs, 1,000,000 measurements in PostgreSQL.

The database is seeded with COPY (a few seconds a million rows), shaped like a long-lived
installation: five components, one candidate changing one component at a time, ten runs per
candidate (one gate, nine soak) with ten measurement series each, every tenth candidate promoted
(1,000 known-goods), the rest rejected or superseded, and at the end one candidate soaking with
a run in progress and one queued. Then the real app runs in uvicorn (one process, as
``certifier serve``) and each page is requested N times, one at a time, over loopback; the
table gives the median and the 90th percentile of the time to the last byte.

Targets (issue 6): overview and candidate page median < 200 ms; ``/metrics`` < 100 ms.

Usage: python benchmarks/dashboard_scale.py [--requests 21] [--keep] [--candidates 10000]
  --candidates sets the size (runs and measurements follow: 10 and 100 per candidate), so growth
  can be measured at 1x, 10x, 100x (benchmarks/run_all.py).
  PostgreSQL: CERTIFIER_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
  the database ``certifier_bench_dashboard`` is created there and dropped at the end
  (``--keep`` keeps it, and reuses it on the next run when it is complete).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from certifier.db import migrate  # noqa: E402
from certifier.domain.combination import Combination  # noqa: E402
from certifier.domain.results import series_key  # noqa: E402

ADMIN_URL = os.environ.get("CERTIFIER_TEST_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/test")
DATABASE = "certifier_bench_dashboard"
COMPONENTS = ["nova", "neutron", "cinder", "glance", "keystone"]
CANDIDATES = 10_000
RUNS_PER_CANDIDATE = 10
SERIES = [  # (suite, metric, labels, unit, better, typical value)
    ("ping", "rtt_avg_ms", {"src": "h1", "dst": "h2"}, "ms", "lower", 0.06),
    ("ping", "rtt_p99_ms", {"src": "h1", "dst": "h2"}, "ms", "lower", 0.09),
    ("ping", "loss_pct", {"src": "h1", "dst": "h2"}, "%", "lower", 0.0),
    ("ping", "rtt_avg_ms", {"src": "h2", "dst": "h1"}, "ms", "lower", 0.06),
    ("bandwidth", "throughput_gbps", {"src": "h1", "dst": "h2", "protocol": "tcp",
                                      "streams": "1"}, "Gbit/s", "higher", 0.78),
    ("bandwidth", "retransmits", {"src": "h1", "dst": "h2", "protocol": "tcp",
                                  "streams": "1"}, "count", "lower", 3.0),
    ("storage", "seq_write_mbps", {"job": "seq_write"}, "MB/s", "higher", 410.0),
    ("storage", "rand_read_iops", {"job": "rand_read"}, "IOPS", "higher", 18000.0),
    ("storage", "seq_write_clat_p99_us", {"job": "seq_write"}, "us", "lower", 900.0),
    ("storage", "rand_read_clat_p99_us", {"job": "rand_read"}, "us", "lower", 450.0),
]
START = datetime(2024, 1, 1, tzinfo=UTC)


def sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324 - a fake commit id


@contextmanager
def database(keep: bool, candidates: int = CANDIDATES) -> Iterator[tuple[str, bool]]:
    """The benchmark database's URL, and whether it is already seeded (at this size)."""
    base, _, _ = ADMIN_URL.rpartition("/")
    url = f"{base}/{DATABASE}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                               (DATABASE,)).fetchone() is not None
    seeded = False
    if exists and keep:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT to_regclass('measurements') IS NOT NULL").fetchone()
            if row and row[0]:
                count = conn.execute("SELECT count(*) FROM measurements").fetchone()
                seeded = bool(count and count[0] == candidates * RUNS_PER_CANDIDATE * len(SERIES))
    if not seeded:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        yield url, seeded
    finally:
        if not keep:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def _copy(conn: psycopg.Connection[Any], table: str, columns: list[str],
          rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]]) -> int:
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
            n += 1
    return n


def seed(url: str, candidates: int = CANDIDATES) -> dict[str, int]:
    """Fill the migrated database; returns the ids the pages are measured with."""
    rng = random.Random(6)
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        _copy(conn, "components", ["id", "name", "source", "url", "branch", "run_in", "paused",
                                   "created_at"],
              [(i + 1, name, "git", f"https://opendev.org/openstack/{name}.git", "master",
                "controller", False, START) for i, name in enumerate(COMPONENTS)])
        _copy(conn, "testbeds", ["name", "driver", "role"],
              [("gate1", "netns", "gate"), ("soak1", "netns", "soak")])
        # Commits: the first of each component, then one new commit per candidate.
        commits: list[tuple[Any, ...]] = []
        heads: dict[str, tuple[int, str]] = {}
        for i, name in enumerate(COMPONENTS):
            digest = sha(f"{name}-0")
            commits.append((len(commits) + 1, i + 1, digest, f"{name}: initial import", "dev",
                            START, START, "poll"))
            heads[name] = (len(commits), digest)
        combos: list[tuple[Any, ...]] = []
        items: list[tuple[Any, ...]] = []
        cands: list[tuple[Any, ...]] = []
        kgs: list[tuple[Any, ...]] = []
        audits: list[tuple[Any, ...]] = []
        version = 0
        promoted_cand: int | None = None
        for c in range(1, candidates + 1):
            at = START + timedelta(hours=4 * c)
            name = COMPONENTS[c % len(COMPONENTS)]
            digest = sha(f"{name}-{c}")
            commits.append((len(commits) + 1, COMPONENTS.index(name) + 1, digest,
                            f"{name}: change number {c} <b>with markup</b>", "dev", at, at,
                            "webhook"))
            heads[name] = (len(commits), digest)
            combo = Combination.of({n: h[1] for n, h in heads.items()})
            combos.append((combo.hash, at))
            items.extend((combo.hash, COMPONENTS.index(n) + 1, h[0]) for n, h in heads.items())
            if c == candidates:
                state = "queued"
            elif c == candidates - 1:
                state = "soaking"
            elif c % 10 == 0:
                state = "promoted"
            else:
                state = rng.choice(["rejected", "rejected", "superseded"])
            excuses = [] if state in ("promoted", "queued", "soaking") else [{
                "kind": "regression", "subject": "bandwidth.throughput_gbps{...}",
                "message": f"bandwidth throughput_gbps h1→h2: 0.39 Gbit/s vs known-good "
                           f"#{version} median 0.78 Gbit/s (-50.0 %; allowed 20 % worse)",
                "data": {}}]
            finished = None if state in ("queued", "soaking") else at + timedelta(hours=3)
            cands.append((c, combo.hash, state, version or None, json.dumps([name]),
                          json.dumps(excuses), at, finished or at, at, at + timedelta(minutes=30),
                          finished))
            if state == "promoted":
                version += 1
                kgs.append((version, c, combo.hash, finished, "soak passed"))
                audits.append((finished, "scheduler", "promote", f"candidate {c}",
                               json.dumps({"version": version})))
                promoted_cand = c
            elif state == "rejected":
                audits.append((finished, "scheduler", "reject", f"candidate {c}",
                               json.dumps({"excuses": excuses})))
        _copy(conn, "commits", ["id", "component_id", "sha", "title", "author", "committed_at",
                                "first_seen_at", "seen_via"], commits)
        _copy(conn, "combinations", ["hash", "created_at"], combos)
        _copy(conn, "combination_items", ["combination_hash", "component_id", "commit_id"], items)
        _copy(conn, "candidates", ["id", "combination_hash", "state", "base_version", "changed",
                                   "excuses", "created_at", "updated_at", "gating_started_at",
                                   "soak_started_at", "finished_at"], cands)
        _copy(conn, "known_goods", ["version", "candidate_id", "combination_hash", "promoted_at",
                                    "reason"], kgs)
        _copy(conn, "audit_events", ["at", "actor", "action", "subject", "detail"], audits)

        runs: list[tuple[Any, ...]] = []
        soaking = candidates - 1
        for c in range(1, candidates + 1):
            if c == candidates:
                continue  # queued: no runs yet, so the total stays 100,000 with the extra below
            at = START + timedelta(hours=4 * c)
            # The soaking candidate has two candidates' worth (the queued one has none yet), so
            # the total stays 100,000; its last run is in progress.
            count = 2 * RUNS_PER_CANDIDATE if c == soaking else RUNS_PER_CANDIDATE
            state = cands[c - 1][2]
            for k in range(count):
                kind, attempt = ("gate", 1) if k == 0 else ("soak", k)
                created = at + timedelta(minutes=10 * k)
                running = c == soaking and k == count - 1
                verdict = None if running else (
                    "regressed" if state == "rejected" and k == count - 1 else "passed")
                runs.append((len(runs) + 1, c, kind, attempt, "running" if running else "finished",
                             verdict, "soak1" if kind == "soak" else "gate1", "[]", "{}", "",
                             created, created, created, None if running else
                             created + timedelta(minutes=4)))
        _copy(conn, "runs", ["id", "candidate_id", "kind", "attempt", "state", "verdict",
                             "testbed", "excuses", "tool_versions", "log", "created_at",
                             "dispatched_at", "started_at", "finished_at"], runs)
        running_run = runs[-1][0]
        conn.execute("UPDATE testbeds SET leased_by_run_id = %s, lease_expires_at = %s "
                     "WHERE name = 'soak1'", (running_run, runs[-1][10] + timedelta(hours=1)))

        keys = [(s, m, series_key(s, m, labels), json.dumps(labels), u, b, v)
                for s, m, labels, u, b, v in SERIES]

        def measurement_rows() -> Iterator[tuple[Any, ...]]:
            for run in runs:
                if run[4] != "finished":
                    continue
                for suite, metric, key, labels, unit, better, value in keys:
                    yield (run[0], suite, metric, key, labels,
                           value * (1 + rng.uniform(-0.03, 0.03)), unit, better)

        n = _copy(conn, "measurements", ["run_id", "suite", "metric", "series", "labels",
                                         "value", "unit", "better"], measurement_rows())
        for table, column in (("components", "id"), ("commits", "id"), ("candidates", "id"),
                              ("runs", "id"), ("audit_events", "id"), ("measurements", "id")):
            # S608: table and column names come from the fixed tuple above, never from input
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "  # noqa: S608
                         f"(SELECT max({column}) FROM {table}))")
        conn.commit()
        conn.execute("ANALYZE")
    print(f"seeded {len(cands)} candidates, {len(runs)} runs, {n} measurements, "
          f"{len(kgs)} known-goods, {len(commits)} commits in {time.monotonic() - started:.1f} s")
    assert promoted_cand is not None
    rejected = max(c[0] for c in cands if c[2] == "rejected")
    return {"soaking": soaking, "rejected": rejected, "promoted": promoted_cand}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(database_url: str) -> Iterator[str]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
        env.update(CERTIFIER_DATABASE_URL=database_url, CERTIFIER_DATA_DIR=tmp)
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.api_manifest:certifier_app",
             "--port", str(port), "--no-access-log", "--log-level", "warning"], env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def measure(client: httpx.Client, url: str, n: int) -> list[float]:
    """Time to the last byte of ``n`` renders: each request carries a query of its own
    (``?render=i``, which the pages ignore), so the page cache (certifier/web/pagecache.py)
    renders every one instead of answering from memory."""
    client.get(url).raise_for_status()  # warm: templates compiled, connections pooled
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        response = client.get(url, params={"render": str(i)})
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=21)
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the database")
    parser.add_argument("--candidates", type=int, default=CANDIDATES,
                        help="size: candidates seeded, each with 10 runs of 10 measurements")
    args = parser.parse_args()
    if not 100 <= args.candidates <= 1_000_000:
        parser.error("--candidates must be between 100 and 1000000")
    with database(args.keep, args.candidates) as (url, seeded):
        if seeded:
            print("reusing the seeded database")
            with psycopg.connect(url) as conn:
                ids = {name: int(conn.execute(
                    "SELECT max(id) FROM candidates WHERE state = %s", (state,)).fetchone()[0])
                    for name, state in (("soaking", "soaking"), ("rejected", "rejected"),
                                        ("promoted", "promoted"))}
        else:
            # Seed at the revision before run_stats, then upgrade: the roll-up /metrics reads is
            # filled by its migration from the seeded runs, as a production upgrade fills it.
            migrate.upgrade(url, "5c0e2f7a9d13")
            ids = seed(url, args.candidates)
            migrate.upgrade(url)
        pages = [
            ("overview", "/", 200.0),
            ("candidate (soaking)", f"/candidates/{ids['soaking']}", 200.0),
            ("candidate (rejected)", f"/candidates/{ids['rejected']}", 200.0),
            ("candidate (promoted)", f"/candidates/{ids['promoted']}", 200.0),
            ("candidates list", "/candidates", 200.0),
            ("component", "/components/nova", 200.0),
            ("known-good history", "/known-good", 200.0),
            ("audit log", "/audit", 200.0),
            ("/metrics", "/metrics", 100.0),
        ]
        rows = []
        with server(url) as base, httpx.Client(base_url=base, timeout=30) as client:
            for name, path, target in pages:
                times = sorted(measure(client, path, args.requests))
                rows.append((name, path, statistics.median(times),
                             times[int(0.9 * (len(times) - 1))], target))
    size = args.candidates
    print(f"\nPostgreSQL, {size:,} candidates, {size * RUNS_PER_CANDIDATE:,} runs, "
          f"~{size * RUNS_PER_CANDIDATE * len(SERIES):,} measurements; "
          f"{args.requests} sequential requests per page over loopback\n")
    print("| page | path | median ms | p90 ms | target ms | |")
    print("|---|---|---:|---:|---:|---|")
    ok = True
    for name, path, median, p90, target in rows:
        met = median < target
        ok &= met
        print(f"| {name} | `{path}` | {median:.1f} | {p90:.1f} | < {target:.0f} | "
              f"{'ok' if met else 'SLOW'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
