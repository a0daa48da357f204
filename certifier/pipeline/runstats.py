"""Finished-run statistics, rolled up as runs finish, so that ``/metrics`` reads a few rows.

A finished run is never edited, so counts of finished runs by kind, verdict and duration bucket
only ever grow: each :func:`runs.finish` adds its run to one row of ``run_stats`` in the same
transaction (an upsert, safe under concurrent finishes). Prometheus's runs counter and the
run-duration histogram are then sums over a few dozen rows instead of a scan of every run.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from certifier.db import models

# Upper bounds of the run-duration histogram's buckets, in seconds (Prometheus ``le``).
DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
                      3600.0, 7200.0)
NO_DURATION = -1  # a run finished without ever starting: counted, but not in the histogram


def bucket_of(started_at: datetime | None, finished_at: datetime | None) -> tuple[int, float]:
    """(bucket index, seconds): the first bucket whose bound holds the run's duration."""
    if started_at is None or finished_at is None:
        return NO_DURATION, 0.0
    seconds = max((finished_at - started_at).total_seconds(), 0.0)
    index = next((i for i, bound in enumerate(DURATION_BUCKETS_S) if seconds <= bound),
                 len(DURATION_BUCKETS_S))
    return index, seconds


def record_finished(session: Session, run: models.Run) -> None:
    """Add one finished run to the roll-up; call in the transaction that finishes it."""
    bucket, seconds = bucket_of(run.started_at, run.finished_at)
    values = {"kind": run.kind, "verdict": run.verdict or "", "bucket": bucket, "runs": 1,
              "seconds": seconds}
    stats = models.RunStat
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(stats) if dialect == "postgresql" else sqlite.insert(stats)
    session.execute(insert.values(**values).on_conflict_do_update(
        index_elements=["kind", "verdict", "bucket"],
        set_={"runs": stats.runs + 1, "seconds": stats.seconds + seconds},
    ))
