"""Initial schema: every table of the first release, with named constraints and indexes.

Constraint names follow ``certifier.db.models.NAMING_CONVENTION`` and are spelled out here (via
``op.f``) so later revisions can drop or alter them by name on SQLite and PostgreSQL alike.

Revision ID: d30a68275558
Revises:
Create Date: 2026-11-25 07:59:04.762707+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d30a68275558"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])

    op.create_table(
        "combinations",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_combinations")),
    )

    op.create_table(
        "components",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("branch", sa.String(length=200), nullable=False),
        sa.Column("recipe", sa.String(length=1000), nullable=True),
        sa.Column("run_in", sa.String(length=16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_components")),
        sa.UniqueConstraint("name", name=op.f("uq_components_name")),
    )

    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("combination_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("changed", sa.JSON(), nullable=False),
        sa.Column("excuses", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gating_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("soak_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["combination_hash"], ["combinations.hash"],
            name=op.f("fk_candidates_combination_hash_combinations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint("combination_hash", name=op.f("uq_candidates_combination_hash")),
    )
    op.create_index(op.f("ix_candidates_state"), "candidates", ["state"])

    op.create_table(
        "commits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_via", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["component_id"], ["components.id"],
            name=op.f("fk_commits_component_id_components"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commits")),
        sa.UniqueConstraint("component_id", "sha", name=op.f("uq_commits_component_id_sha")),
    )
    op.create_index(op.f("ix_commits_first_seen_at"), "commits", ["first_seen_at"])

    op.create_table(
        "combination_items",
        sa.Column("combination_hash", sa.String(length=64), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("commit_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["combination_hash"], ["combinations.hash"],
            name=op.f("fk_combination_items_combination_hash_combinations"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["commit_id"], ["commits.id"], name=op.f("fk_combination_items_commit_id_commits"),
        ),
        sa.ForeignKeyConstraint(
            ["component_id"], ["components.id"],
            name=op.f("fk_combination_items_component_id_components"),
        ),
        sa.PrimaryKeyConstraint(
            "combination_hash", "component_id", name=op.f("pk_combination_items"),
        ),
    )

    op.create_table(
        "known_goods",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("combination_hash", sa.String(length=64), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"],
            name=op.f("fk_known_goods_candidate_id_candidates"),
        ),
        sa.ForeignKeyConstraint(
            ["combination_hash"], ["combinations.hash"],
            name=op.f("fk_known_goods_combination_hash_combinations"),
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_known_goods")),
        sa.UniqueConstraint("candidate_id", name=op.f("uq_known_goods_candidate_id")),
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("testbed", sa.String(length=63), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("excuses", sa.JSON(), nullable=False),
        sa.Column("tool_versions", sa.JSON(), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"],
            name=op.f("fk_runs_candidate_id_candidates"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint(
            "candidate_id", "kind", "attempt", name=op.f("uq_runs_candidate_id_kind_attempt"),
        ),
    )
    op.create_index(op.f("ix_runs_state"), "runs", ["state"])

    op.create_table(
        "checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_checks_run_id_runs"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checks")),
    )
    op.create_index(op.f("ix_checks_run_id"), "checks", ["run_id"])

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("series", sa.String(length=400), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("better", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_measurements_run_id_runs"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurements")),
    )
    op.create_index(op.f("ix_measurements_run_id"), "measurements", ["run_id"])
    op.create_index("ix_measurements_series_run", "measurements", ["series", "run_id"])

    op.create_table(
        "testbeds",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("driver", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("leased_by_run_id", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["leased_by_run_id"], ["runs.id"],
            name=op.f("fk_testbeds_leased_by_run_id_runs"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_testbeds")),
    )


def downgrade() -> None:
    # Dependents first; dropping a table drops its indexes and constraints with it.
    for table in (
        "testbeds",
        "measurements",
        "checks",
        "runs",
        "known_goods",
        "combination_items",
        "commits",
        "candidates",
        "components",
        "combinations",
        "audit_events",
    ):
        op.drop_table(table)
