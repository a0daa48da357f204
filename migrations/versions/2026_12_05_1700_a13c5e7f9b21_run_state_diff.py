"""State snapshots around the upgrade: ``runs.state_diff``.

The upgrade suite's per-component diff of the state snapshots taken before and after the
upgrade (keys from a recipe's ``snapshot`` hook, or configuration-like files), with the fresh
deployment's values and the upgrade notes that declared a change. NULL for runs without one.

Revision ID: a13c5e7f9b21
Revises: 8e3f1a2b4c5d
Create Date: 2026-12-05 17:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "a13c5e7f9b21"
down_revision: str | Sequence[str] | None = "8e3f1a2b4c5d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_diff", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("state_diff")
