"""Push to run started: p50/p99 latency from a webhook POST to the gate run's start, on Redis.

The real chain, each step a separate process or task: uvicorn stores the signed GitHub push and
publishes ``process_delivery`` to Redis after the commit; a Celery worker processes it (new
commit, head moved) and asks for a reconcile; the reconcile task forms and boards a candidate and
publishes its gate run; the run task claims it (``runs.started_at``). Only the run's *body* is a
stub — it records the start, then fails the run at once so the next push can board (a real
deploy and four suites take minutes and are not what is measured here). Latency is the run's
``started_at`` minus the time just before the POST (one host, one clock). Target: p50 < 1 s.

Usage: python benchmarks/webhook_latency.py [--pushes 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.webhook_common import (
    REDIS,
    ROOT,
    SECRET,
    api_server,
    push,
    scratch_database,
    settings,
    sha,
)
from certifier.db.session import make_engine
from certifier.tracking.webhooks import github_signature

STARTED = text("""
    SELECT r.started_at FROM runs r
    JOIN candidates c ON c.id = r.candidate_id
    JOIN combination_items i ON i.combination_hash = c.combination_hash
    JOIN commits m ON m.id = i.commit_id
    WHERE m.sha = :sha AND r.started_at IS NOT NULL
    ORDER BY r.started_at LIMIT 1
""")


def worker_main() -> None:
    """The worker process: the real Celery app, with the run task's body stubbed."""
    from datetime import timedelta

    from certifier.db.session import session_scope
    from certifier.domain.judgement import JudgementPolicy
    from certifier.domain.results import Check, SuiteResult
    from certifier.pipeline import runs
    from certifier.pipeline.dispatch import reconcile_after_commit
    from workers import janitor
    from workers.celery_app import create_celery
    from workers.dispatch import RUN_TASK

    # This worker runs no testbed: its janitor must not "recover" testbeds of other processes
    # on this host (it would take their live runs for dead ones in this scratch database).
    janitor.recover = lambda _context: None  # type: ignore[assignment]
    conf = settings(Path(os.environ["BENCH_DATA_DIR"]), os.environ["BENCH_DATABASE_URL"])
    app = create_celery(conf)
    context = app.certifier
    app.tasks.unregister(RUN_TASK)

    @app.task(name=RUN_TASK, acks_late=True)  # type: ignore[untyped-decorator]
    def stub_run(run_id: int) -> str:
        with session_scope(context.session_factory) as session:
            claim = runs.claim(session, run_id, context.worker_id, context.clock,
                               timedelta(minutes=5))
        if claim is runs.Claim.CLAIMED:
            with session_scope(context.session_factory) as session:
                runs.finish(session, run_id, [SuiteResult(suite="ping", checks=[
                    Check("ping", "stub", False, "benchmark stub")])], context.clock,
                    JudgementPolicy())
                reconcile_after_commit(session, context.dispatcher)
        return str(claim)

    app.worker_main(["worker", "--loglevel", "WARNING", "--concurrency", "4", "--queues",
                     "certifier", "--without-gossip", "--without-mingle", "--without-heartbeat",
                     "--hostname", f"bench-{os.getpid()}@%h"])


def started_at(engine: Any, digest: str, timeout: float) -> datetime | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            found = connection.execute(STARTED, {"sha": digest}).scalar()
        if found is not None:
            return found if found.tzinfo else found.replace(tzinfo=UTC)
        time.sleep(0.005)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=40)
    args = parser.parse_args()
    redis.Redis.from_url(REDIS).flushdb()
    with tempfile.TemporaryDirectory() as tmp, \
            scratch_database(f"certifier_latency_{os.getpid()}") as url:
        env = {**os.environ, "BENCH_DATA_DIR": tmp, "BENCH_DATABASE_URL": url,
               "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "worker"],
                                  env=env, cwd=ROOT)
        engine = make_engine(url)
        latencies: list[float] = []
        lost = 0
        try:
            with api_server(Path(tmp), url) as base, httpx.Client(base_url=base) as client:
                time.sleep(3)  # the worker connects to Redis
                before: str | None = None
                for i in range(args.pushes + 3):
                    digest = sha(f"latency-{os.getpid()}-{i}")
                    body = push(digest, before)
                    headers = {"X-Hub-Signature-256": github_signature(SECRET, body),
                               "X-GitHub-Event": "push", "X-GitHub-Delivery": f"lat-{i}"}
                    t0 = datetime.now(UTC)
                    response = client.post("/api/v1/webhooks/github", content=body,
                                           headers=headers)
                    assert response.status_code == 202, response.text
                    at = started_at(engine, digest, 10.0)
                    before = digest
                    if i < 3:
                        continue  # warm-up: worker processes, connections, first candidate
                    if at is None:
                        lost += 1
                    else:
                        latencies.append((at - t0).total_seconds())
                    time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            engine.dispose()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(f"\npush to run started, Redis broker, PostgreSQL, {len(latencies)} pushes "
          f"({lost} without a run within 10 s), {os.cpu_count()} CPUs\n")
    print(f"{'metric':10} {'seconds':>8} {'target':>8} {'met':>4}")
    print(f"{'p50':10} {p50:8.3f} {'< 1':>8} {'yes' if p50 < 1 else 'no':>4}")
    print(f"{'p99':10} {p99:8.3f} {'':>8} {'':>4}")
    print(f"{'min':10} {latencies[0]:8.3f}\n{'max':10} {latencies[-1]:8.3f}")
    return 0 if p50 < 1 and not lost else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker_main()
    else:
        raise SystemExit(main())
