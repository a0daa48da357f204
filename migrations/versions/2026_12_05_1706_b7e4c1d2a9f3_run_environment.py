"""Runs record their environment: host pressure and calibration probes, and whether the
environment check refused them as too busy.

Revision ID: b7e4c1d2a9f3
Revises: 9d01e76f34b9
Create Date: 2026-12-05 17:05:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b7e4c1d2a9f3"
down_revision: str | Sequence[str] | None = "9d01e76f34b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("environment", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("too_busy", sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
        batch.create_index("ix_runs_testbed_finished", ["testbed", "finished_at"])
        batch.create_index("ix_runs_too_busy_testbed", ["too_busy", "testbed"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_too_busy_testbed")
        batch.drop_index("ix_runs_testbed_finished")
        batch.drop_column("too_busy")
        batch.drop_column("environment")
