"""Components can be removed: ``components.removed_at`` (and who removed them).

A removed component keeps its row, its commits and every combination that names it (known-good
history must stay readable); it is no longer listed, tracked or formed into candidates.

Revision ID: c4a7e2d91b35
Revises: b13a7c2e9f41
Create Date: 2026-12-05 17:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c4a7e2d91b35"
down_revision: str | Sequence[str] | None = "b13a7c2e9f41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ADD/DROP COLUMN, not batch mode: a batch rebuild of ``components`` on SQLite drops the
# table, and the foreign keys' ON DELETE CASCADE would take every commit with it.


def upgrade() -> None:
    op.add_column("components", sa.Column("removed_at", sa.DateTime(timezone=True),
                                          nullable=True))
    op.add_column("components", sa.Column("removed_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column("components", "removed_by")
    op.drop_column("components", "removed_at")
