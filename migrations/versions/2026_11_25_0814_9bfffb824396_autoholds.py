"""Autoholds: requests to keep a failed run's testbed for inspection, and the testbeds they keep.

One new table; nothing existing changes, so downgrade simply drops it.

Revision ID: 9bfffb824396
Revises: 4a1673b37a1a
Create Date: 2026-11-25 08:14:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9bfffb824396"
down_revision: str | Sequence[str] | None = "4a1673b37a1a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "autoholds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=True),
        sa.Column("component", sa.String(length=63), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("testbed", sa.String(length=63), nullable=True),
        sa.Column("tag", sa.String(length=16), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("commands", sa.JSON(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=200), nullable=True),
        sa.Column("torn_down_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"],
            name=op.f("fk_autoholds_candidate_id_candidates"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_autoholds_run_id_runs"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_autoholds")),
    )
    op.create_index(op.f("ix_autoholds_candidate_id"), "autoholds", ["candidate_id"])
    op.create_index(op.f("ix_autoholds_state"), "autoholds", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_autoholds_state"), table_name="autoholds")
    op.drop_index(op.f("ix_autoholds_candidate_id"), table_name="autoholds")
    op.drop_table("autoholds")
