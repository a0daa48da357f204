"""An operator's retry of a candidate whose infra retries ran out.

* ``candidates.retried_at``: when a person last asked for a retry; the promotion policy counts
  the infra-error streak only from then on, so the candidate gets a fresh retry budget.

Revision ID: b13a7c2e9f41
Revises: a13c5e7f9b21
Create Date: 2026-12-05 17:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b13a7c2e9f41"
down_revision: str | Sequence[str] | None = "a13c5e7f9b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.drop_column("retried_at")
