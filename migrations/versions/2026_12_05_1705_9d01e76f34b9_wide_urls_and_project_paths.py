"""Repository URLs and forge project paths wide enough for deep GitLab group paths.

``components.url`` and ``api_url`` go from 1000 to 4096 characters, ``components.project`` and
``deliveries.project`` from 300 to 2048 (certifier/limits.py: URL_MAX, PROJECT_MAX). A GitLab
``path_with_namespace`` under nested groups is legitimately longer than 300 characters, and a
delivery for one was lost: PostgreSQL refused the INSERT. Downgrading cuts longer values short.

PostgreSQL only: SQLite does not enforce VARCHAR lengths, and changing one there rebuilds the
table, which with foreign keys on would cascade a delete to every commit of every component
(``certifier.db.migrate.compare_type`` ignores lengths on SQLite accordingly).

Revision ID: 9d01e76f34b9
Revises: c4a7e2d91b35
Create Date: 2026-12-05 17:05:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9d01e76f34b9"
down_revision: str | Sequence[str] | None = "c4a7e2d91b35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the widths: a migration must not change meaning when the constants change.
WIDENED = (  # (table, column, old width, new width)
    ("components", "url", 1000, 4096),
    ("components", "api_url", 1000, 4096),
    ("components", "project", 300, 2048),
    ("deliveries", "project", 300, 2048),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    for table, column, old, new in WIDENED:
        op.alter_column(table, column, existing_type=sa.String(length=old),
                        type_=sa.String(length=new))


def downgrade() -> None:
    if not _postgresql():
        return
    for table, column, old, new in reversed(WIDENED):
        op.alter_column(table, column, existing_type=sa.String(length=new),
                        type_=sa.String(length=old), postgresql_using=f"left({column}, {old})")
