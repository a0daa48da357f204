"""Finished runs rolled up by kind, verdict and duration bucket, for /metrics.

The table is filled from the runs that are already finished, so the counters carry on from
where a scan of ``runs`` would have them; from now on ``runs.finish`` adds each run.

Revision ID: 7d2b9c4e1f60
Revises: 5c0e2f7a9d13
Create Date: 2026-11-25 10:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7d2b9c4e1f60"
down_revision: str | Sequence[str] | None = "5c0e2f7a9d13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the bucket bounds at the time of this revision: a migration must not change
# meaning when the code's constant changes later.
BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def upgrade() -> None:
    stats = op.create_table(
        "run_stats",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "verdict", "bucket", name=op.f("pk_run_stats")),
    )
    runs = sa.table("runs", sa.column("kind", sa.String), sa.column("verdict", sa.String),
                    sa.column("state", sa.String),
                    sa.column("started_at", sa.DateTime(timezone=True)),
                    sa.column("finished_at", sa.DateTime(timezone=True)))
    rollup: dict[tuple[str, str, int], list[float]] = {}
    for kind, verdict, started, finished in op.get_bind().execute(
            sa.select(runs.c.kind, runs.c.verdict, runs.c.started_at, runs.c.finished_at)
            .where(runs.c.state == "finished")):
        started, finished = _aware(started), _aware(finished)
        if started is None or finished is None:
            bucket, seconds = -1, 0.0
        else:
            seconds = max((finished - started).total_seconds(), 0.0)
            bucket = next((i for i, b in enumerate(BUCKETS_S) if seconds <= b), len(BUCKETS_S))
        entry = rollup.setdefault((kind, verdict or "", bucket), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
    if rollup:
        op.bulk_insert(stats, [
            {"kind": k, "verdict": v, "bucket": b, "runs": int(n), "seconds": total}
            for (k, v, b), (n, total) in rollup.items()
        ])


def downgrade() -> None:
    op.drop_table("run_stats")
