"""A/B runs: measurements know their side, round and loss counts; runs count their rounds.

* ``measurements.side``: ``candidate`` or ``control`` (the known-good measured beside the
  candidate on a twin testbed); existing rows are the candidate's;
* ``measurements.round``: which A/B round measured it (0 for single-sided runs);
* ``measurements.events``/``trials``: for loss-type series, lost of sent (null otherwise);
* ``runs.rounds``: how many A/B rounds the run measured (0: single-sided).

Revision ID: b7a3c9d1e2f4
Revises: b7e4c1d2a9f3
Create Date: 2026-12-05 17:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b7a3c9d1e2f4"
down_revision: str | Sequence[str] | None = "b7e4c1d2a9f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("side", sa.String(length=16), nullable=False,
                                      server_default="candidate"))
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("events", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trials", sa.Integer(), nullable=True))

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rounds", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("rounds")

    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_column("trials")
        batch_op.drop_column("events")
        batch_op.drop_column("round")
        batch_op.drop_column("side")
