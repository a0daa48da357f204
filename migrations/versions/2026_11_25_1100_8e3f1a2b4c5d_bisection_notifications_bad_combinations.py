"""Culprit bisection, outgoing notifications and combinations marked bad.

* ``candidates.bisection``: the steps and result of culprit finding after a rejection;
* ``runs.combination_hash``: the combination a bisect run tests instead of its candidate's;
* ``combinations.bad_*``: a person marked the combination bad, never to be promoted again;
* ``notifications``: outgoing webhooks, one row per event and configured target.

Revision ID: 8e3f1a2b4c5d
Revises: 7d2b9c4e1f60
Create Date: 2026-11-25 10:51:07.289770+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8e3f1a2b4c5d"
down_revision: str | Sequence[str] | None = "7d2b9c4e1f60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("notifications",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("event", sa.String(length=32), nullable=False),
    sa.Column("subject", sa.String(length=200), nullable=False),
    sa.Column("target", sa.String(length=63), nullable=False),
    sa.Column("dedup_key", sa.String(length=200), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    sa.UniqueConstraint("target", "dedup_key", name=op.f("uq_notifications_target_dedup_key"))
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_next_attempt_at"), ["next_attempt_at"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_notifications_state"), ["state"], unique=False)

    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bisection", sa.JSON(), nullable=True))

    with op.batch_alter_table("combinations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bad_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("bad_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("bad_by", sa.String(length=200), nullable=True))

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("combination_hash", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_runs_combination_hash_combinations"),
                                    "combinations", ["combination_hash"], ["hash"])



def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_runs_combination_hash_combinations"),
                                 type_="foreignkey")
        batch_op.drop_column("combination_hash")

    with op.batch_alter_table("combinations", schema=None) as batch_op:
        batch_op.drop_column("bad_by")
        batch_op.drop_column("bad_reason")
        batch_op.drop_column("bad_at")

    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.drop_column("bisection")

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_state"))
        batch_op.drop_index(batch_op.f("ix_notifications_next_attempt_at"))

    op.drop_table("notifications")
