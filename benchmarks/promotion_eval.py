"""Promotion at scale: one scheduler reconcile pass over N soaking candidates, beside decide().

The pass is ``certifier.pipeline.scheduler.reconcile``, as beat runs it every
``scheduler.reconcile_interval``: it reads every soaking candidate, its runs and its waivers, asks
``promotion.decide`` what to do, writes the new excuses and commits. The reference is
``promotion.decide`` alone over the same candidates' run summaries, built once in memory: the ratio
pass / decide is what persistence (queries, ORM objects, the UPDATEs, the commit) costs on top of
the decision itself.

The database is seeded with bulk inserts (no services): five components, known-good #1 with its
gate and soak runs, then N soaking candidates, each changing one component on top of the previous
one, each with a passed gate run and ``--soak-runs`` passed soak runs six hours apart, ten
measurement series per run. Every candidate is mid-soak and none is due for a run, so every pass
is the steady state of a soak week: each candidate waits and gets fresh excuses ("soaking: 2 d 23 h
of 7 d"), which the pass writes. The clock moves 30 s between passes, as beat's would.

NOTE: the pipeline boards one candidate at a time into gating or soaking; N soaking candidates
side by side never happen in production. They are seeded directly to measure how the pass grows
with the work it has to read.

Target (ours): a pass over 1,000 soaking candidates in < 10 s, the default reconcile interval;
a slower pass would make passes queue up behind the scheduler's lock.

Usage: python benchmarks/promotion_eval.py [--sizes 10,100,1000] [--passes 5] [--soak-runs 12]
                                           [--backends postgresql,sqlite]
  PostgreSQL: CERTIFIER_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test); a
  scratch database is created there for each size and dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The same components and series as the dashboard benchmark, so both seed alike data.
from benchmarks.dashboard_scale import COMPONENTS, SERIES  # noqa: E402
from certifier.db import migrate, models  # noqa: E402
from certifier.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from certifier.domain.clock import FakeClock  # noqa: E402
from certifier.domain.combination import Combination  # noqa: E402
from certifier.domain.judgement import RunKind, Verdict  # noqa: E402
from certifier.domain.lifecycle import CandidateState  # noqa: E402
from certifier.domain.promotion import Action, RunSummary, SoakPolicy, decide  # noqa: E402
from certifier.domain.results import series_key  # noqa: E402
from certifier.pipeline.dispatch import NullDispatcher  # noqa: E402
from certifier.pipeline.scheduler import SchedulerPolicy, reconcile  # noqa: E402

ADMIN_URL = os.environ.get("CERTIFIER_TEST_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SOAK = SoakPolicy(duration=timedelta(days=7), interval=timedelta(hours=6), min_runs=4)
PASS_EVERY = timedelta(seconds=30)
TARGET_S = 10.0
TARGET_SIZE = 1000


def sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324 - a fake commit id


@dataclass
class Seeded:
    """What was inserted, and the same runs as the pure policy sees them."""

    candidates: int
    runs: int
    measurements: int
    seconds: float
    summaries: dict[int, tuple[datetime, list[RunSummary]]]  # candidate id -> (soak start, runs)


class Rows:
    """Rows to insert, per table, with the ids the inserts must agree on."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.summaries: dict[int, tuple[datetime, list[RunSummary]]] = {}

    def add(self, table: str, **row: Any) -> int:
        rows = self.tables.setdefault(table, [])
        rows.append(row)
        return len(rows)

    def count(self, table: str) -> int:
        return len(self.tables.get(table, []))


def _candidate(rows: Rows, heads: dict[str, tuple[int, str]], state: CandidateState,
               changed: list[str], base: int | None, soak_start: datetime,
               soak_runs: int) -> int:
    """One candidate on the combination ``heads``, with a passed gate run and its soak runs."""
    combo = Combination.of({name: head[1] for name, head in heads.items()})
    rows.add("combinations", hash=combo.hash, created_at=soak_start - timedelta(hours=2))
    for name, (commit_id, _) in heads.items():
        rows.add("combination_items", combination_hash=combo.hash,
                 component_id=COMPONENTS.index(name) + 1, commit_id=commit_id)
    promoted = state is CandidateState.PROMOTED
    cid = rows.count("candidates") + 1
    rows.add("candidates", id=cid, combination_hash=combo.hash, state=state, base_version=base,
             changed=changed, excuses=[], created_at=soak_start - timedelta(hours=2),
             updated_at=soak_start, gating_started_at=soak_start - timedelta(hours=1),
             soak_started_at=soak_start, finished_at=soak_start + SOAK.duration if promoted
             else None, bisection=None)
    summaries = []
    # Soak run k is created at soak_start + k * interval; the gate run an hour before the soak.
    for k in range(soak_runs + 1):
        kind, attempt = (RunKind.GATE, 1) if k == 0 else (RunKind.SOAK, k)
        created = soak_start - timedelta(hours=1) if k == 0 else \
            soak_start + (k - 1) * SOAK.interval
        finished = created + timedelta(minutes=4)
        run_id = rows.count("runs") + 1
        rows.add("runs", id=run_id, candidate_id=cid, kind=kind, attempt=attempt,
                 state="finished", verdict=Verdict.PASSED, testbed="soak1", worker="bench",
                 excuses=[], tool_versions={}, log="", created_at=created, dispatched_at=created,
                 started_at=created, finished_at=finished, combination_hash=None)
        summaries.append(RunSummary(run_id, kind, Verdict.PASSED, created, finished))
        for i, (suite, metric, labels, unit, better, value) in enumerate(SERIES):
            rows.add("measurements", run_id=run_id, suite=suite, metric=metric,
                     series=series_key(suite, metric, labels), labels=labels,
                     value=value * (1 + ((run_id * 7 + i) % 11 - 5) / 200), unit=unit,
                     better=better)
    rows.summaries[cid] = (soak_start, summaries)
    return cid


def build_rows(n: int, soak_runs: int) -> Rows:
    """Known-good #1, then ``n`` soaking candidates mid-soak, none of them due for a run."""
    rows = Rows()
    heads: dict[str, tuple[int, str]] = {}
    for i, name in enumerate(COMPONENTS):
        rows.add("components", id=i + 1, name=name, source="git", branch="master",
                 url=f"https://opendev.org/openstack/{name}.git", run_in="controller",
                 paused=False, created_at=NOW - timedelta(days=60))
        heads[name] = (rows.add("commits", id=rows.count("commits") + 1, component_id=i + 1,
                                sha=sha(f"{name}-0"), title=f"{name}: initial import",
                                author="dev", committed_at=NOW - timedelta(days=60),
                                first_seen_at=NOW - timedelta(days=60), seen_via="poll"),
                       sha(f"{name}-0"))
    kg_start = NOW - timedelta(days=30)
    kg_id = _candidate(rows, heads, CandidateState.PROMOTED, [], None, kg_start, soak_runs)
    kg_hash = rows.tables["candidates"][-1]["combination_hash"]
    rows.add("known_goods", version=1, candidate_id=kg_id, combination_hash=kg_hash,
             promoted_at=kg_start + SOAK.duration, reason="soak passed")
    del rows.summaries[kg_id]
    # The last soak run was created five hours ago: with a 6 h interval, no run is due.
    soak_start = NOW - (soak_runs - 1) * SOAK.interval - timedelta(hours=5)
    for c in range(1, n + 1):
        name = COMPONENTS[c % len(COMPONENTS)]
        seen = soak_start - timedelta(hours=3, seconds=n - c)
        commit_id = rows.add("commits", id=rows.count("commits") + 1,
                             component_id=COMPONENTS.index(name) + 1, sha=sha(f"{name}-{c}"),
                             title=f"{name}: change {c}", author="dev", committed_at=seen,
                             first_seen_at=seen, seen_via="webhook")
        heads[name] = (commit_id, sha(f"{name}-{c}"))
        # Cumulative, so the newest candidate's combination is the heads': nothing new forms.
        _candidate(rows, heads, CandidateState.SOAKING, [name], 1, soak_start, soak_runs)
    rows.add("testbeds", name="soak1", driver="netns", role="soak", leased_by_run_id=None,
             lease_expires_at=None)
    return rows


def seed(engine: Engine, n: int, soak_runs: int) -> Seeded:
    """Bulk-insert the rows (executemany per table, one transaction) and fix the sequences."""
    started = time.monotonic()
    rows = build_rows(n, soak_runs)
    tables = models.Base.metadata.tables
    order = ["components", "commits", "combinations", "combination_items", "candidates",
             "known_goods", "runs", "measurements", "testbeds"]
    with engine.begin() as conn:
        for name in order:
            batch = rows.tables[name]
            for start in range(0, len(batch), 20_000):
                conn.execute(insert(tables[name]), batch[start:start + 20_000])
        _fix_sequences(conn)
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
    return Seeded(candidates=n, runs=rows.count("runs"), measurements=rows.count("measurements"),
                  seconds=time.monotonic() - started, summaries=rows.summaries)


def _fix_sequences(conn: Connection) -> None:
    """Explicit ids leave PostgreSQL's sequences behind; the pass may insert (runs, audit)."""
    if conn.dialect.name != "postgresql":
        return
    for table in ("components", "commits", "candidates", "runs", "measurements"):
        # S608: table names come from the fixed tuple above, never from input
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                          f"(SELECT max(id) FROM {table}))"))


@contextmanager
def database(backend: str, label: str) -> Iterator[str]:
    """A fresh, migrated database of ``backend``, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="promotion-eval-") as tmp:
            url = f"sqlite:///{tmp}/certifier.sqlite"
            migrate.upgrade(url)
            yield url
        return
    name = f"certifier_bench_promotion_{os.getpid()}_{label}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Measured:
    first_ms: float
    median_ms: float
    statements: int
    decide_ms: float


def _count_statements(engine: Engine) -> list[int]:
    counter = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        counter[0] += 1

    return counter


def time_passes(engine: Engine, seeded: Seeded, passes: int) -> Measured:
    """``passes`` reconcile passes, each in its own committed transaction, the clock moving."""
    factory = make_session_factory(engine)
    clock = FakeClock(NOW)
    policy = SchedulerPolicy(soak=SOAK)
    counter = _count_statements(engine)
    times, statements = [], []
    for _ in range(passes):
        counter[0] = 0
        t0 = time.perf_counter()
        with session_scope(factory) as session:
            report = reconcile(session, clock, policy, NullDispatcher())
        times.append((time.perf_counter() - t0) * 1000)
        statements.append(counter[0])
        changed = (report.formed or report.boarded or report.runs_created or report.promoted
                   or report.rejected or report.superseded)
        if changed:  # the seed is wrong, and the figures would measure something else
            raise RuntimeError(f"the pass changed the pipeline: {report}")
        clock.advance(PASS_EVERY)
    return Measured(first_ms=times[0], median_ms=statistics.median(times[1:] or times),
                    statements=statements[-1], decide_ms=time_decide(seeded, clock.now()))


def time_decide(seeded: Seeded, now: datetime, repeat: int = 5) -> float:
    """The reference: ``decide`` for every candidate, in memory; the best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for soak_start, summaries in seeded.summaries.values():
            decision = decide(CandidateState.SOAKING, summaries, now, SOAK, soak_start)
            if decision.action is not Action.WAIT or decision.next_run is not None:
                raise RuntimeError(f"decide did not wait: {decision}")
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best


def measure(backend: str, n: int, soak_runs: int, passes: int) -> tuple[Seeded, Measured]:
    with database(backend, str(n)) as url:
        engine = make_engine(url, poolclass=NullPool) if backend == "sqlite" else make_engine(url)
        try:
            seeded = seed(engine, n, soak_runs)
            return seeded, time_passes(engine, seeded, passes)
        finally:
            engine.dispose()


def _sizes(text_value: str) -> list[int]:
    try:
        sizes = [int(s) for s in text_value.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text_value!r}") from None
    if not sizes or any(s < 1 or s > 100_000 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be between 1 and 100000")
    return sizes


def _backends(text_value: str) -> list[str]:
    backends = [b.strip() for b in text_value.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"postgresql", "sqlite"})
    if not backends or unknown:
        raise argparse.ArgumentTypeError(f"backends are postgresql and sqlite, not {unknown}")
    return backends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[10, 100, 1000],
                        help="soaking candidates per measurement, comma-separated")
    parser.add_argument("--passes", type=int, default=5,
                        help="passes per size, 2 to 100 (the first is reported apart)")
    parser.add_argument("--soak-runs", type=int, default=12,
                        help="passed soak runs per candidate, 1 to 27 (12: three days)")
    parser.add_argument("--backends", type=_backends, default=["postgresql", "sqlite"])
    args = parser.parse_args(argv)
    if not 2 <= args.passes <= 100:
        parser.error("--passes must be between 2 and 100")
    if not 1 <= args.soak_runs <= 27:  # 28 runs six hours apart would end the 7-day soak
        parser.error("--soak-runs must be between 1 and 27")
    results = []
    for backend in args.backends:
        for n in args.sizes:
            seeded, measured = measure(backend, n, args.soak_runs, args.passes)
            print(f"  {backend} {n}: seeded {seeded.runs} runs, {seeded.measurements} "
                  f"measurements in {seeded.seconds:.1f} s; pass {measured.median_ms:.1f} ms",
                  file=sys.stderr, flush=True)
            results.append((backend, seeded, measured))
    print(f"\nOne reconcile pass over N soaking candidates ({args.soak_runs} passed soak runs "
          f"and a gate run each, {len(SERIES)} measurements per run), median of "
          f"{args.passes - 1} passes after the first; reference: promotion.decide() over the "
          f"same run summaries in memory. The pipeline boards one candidate at a time: the N "
          f"soaking candidates are seeded directly to measure growth.\n")
    print("| backend | candidates | runs | measurements | pass ms | first pass ms | statements "
          "| decide() ms | ratio pass/decide | ms per candidate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend, seeded, m in results:
        print(f"| {backend} | {seeded.candidates} | {seeded.runs} | {seeded.measurements} "
              f"| {m.median_ms:.1f} | {m.first_ms:.1f} | {m.statements} | {m.decide_ms:.2f} "
              f"| {m.median_ms / m.decide_ms:.0f} | {m.median_ms / seeded.candidates:.2f} |")
    ok = True
    print()
    for backend, seeded, m in results:
        if seeded.candidates == TARGET_SIZE:
            met = m.median_ms / 1000 < TARGET_S
            ok &= met
            print(f"target: {backend} pass over {TARGET_SIZE} soaking candidates "
                  f"< {TARGET_S:.0f} s: {'met' if met else 'NOT met'} "
                  f"({m.median_ms / 1000:.2f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
