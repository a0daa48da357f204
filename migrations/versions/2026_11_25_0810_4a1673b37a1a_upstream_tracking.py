"""Upstream tracking: webhook deliveries, rejection counters, per-component tracking state.

New columns are nullable and added with plain ``ADD COLUMN`` / ``DROP COLUMN`` (not batch mode):
on SQLite a batch operation recreates the table, and dropping ``components`` with foreign keys on
would cascade-delete every commit. SQLite has had ``DROP COLUMN`` since 3.35.

Revision ID: 4a1673b37a1a
Revises: d30a68275558
Create Date: 2026-11-25 08:10:47.853041+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "4a1673b37a1a"
down_revision: str | Sequence[str] | None = "d30a68275558"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMPONENT_COLUMNS = (
    ("project", sa.String(length=300)),
    ("api_url", sa.String(length=1000)),
    ("poll_interval_s", sa.Integer()),
    ("token_env", sa.String(length=100)),
    ("webhook_secret_env", sa.String(length=100)),
    ("paused_reason", sa.String(length=300)),
)
_COMMIT_COLUMNS = (
    ("head_at", sa.DateTime(timezone=True)),
    ("gone_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "webhook_rejections",
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "reason", name=op.f("pk_webhook_rejections")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=500), nullable=False),
        sa.Column("project", sa.String(length=300), nullable=True),
        sa.Column("ref", sa.String(length=300), nullable=True),
        sa.Column("component_id", sa.Integer(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.Column("last_replay_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["component_id"], ["components.id"],
            name=op.f("fk_deliveries_component_id_components"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("source", "dedup_key", name=op.f("uq_deliveries_source_dedup_key")),
    )
    op.create_index(op.f("ix_deliveries_received_at"), "deliveries", ["received_at"])
    op.create_index(op.f("ix_deliveries_state"), "deliveries", ["state"])
    op.create_table(
        "tracking_states",
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=True),
        sa.Column("head_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("head_seen_via", sa.String(length=16), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["component_id"], ["components.id"],
            name=op.f("fk_tracking_states_component_id_components"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("component_id", name=op.f("pk_tracking_states")),
    )
    op.create_index(op.f("ix_tracking_states_next_poll_at"), "tracking_states", ["next_poll_at"])
    for name, type_ in _COMMIT_COLUMNS:
        op.add_column("commits", sa.Column(name, type_, nullable=True))
    for name, type_ in _COMPONENT_COLUMNS:
        op.add_column("components", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_COMPONENT_COLUMNS):
        op.drop_column("components", name)
    for name, _ in reversed(_COMMIT_COLUMNS):
        op.drop_column("commits", name)
    op.drop_index(op.f("ix_tracking_states_next_poll_at"), table_name="tracking_states")
    op.drop_table("tracking_states")
    op.drop_index(op.f("ix_deliveries_state"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_received_at"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("webhook_rejections")
