"""The SQLAlchemy models: one table per noun of the design brief.

Runs pin their exact combination through their candidate, and a finished run is never edited:
changing inputs means a new run. Unique constraints carry the idempotency the scheduler relies on
(one candidate per combination, one run per candidate/kind/attempt, one known-good per version).
Alembic migrations in ``migrations/`` must agree with these models; a test fails on drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

from certifier.db.types import Bisection, Excuses
from certifier.domain.bisection_state import Record as BisectionRecord
from certifier.domain.judgement import Excuse
from certifier.limits import PROJECT_MAX, RECIPE_PATH_MAX, URL_MAX

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Component(Base):
    __tablename__ = "components"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(URL_MAX))
    branch: Mapped[str] = mapped_column(String(200))
    recipe: Mapped[str | None] = mapped_column(String(RECIPE_PATH_MAX))
    run_in: Mapped[str] = mapped_column(String(16), default="controller")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    # Upstream tracking (certifier/tracking): where the forge API is and how often to poll it.
    project: Mapped[str | None] = mapped_column(String(PROJECT_MAX))
    api_url: Mapped[str | None] = mapped_column(String(URL_MAX))
    poll_interval_s: Mapped[int | None] = mapped_column(Integer)
    token_env: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_env: Mapped[str | None] = mapped_column(String(100))
    paused_reason: Mapped[str | None] = mapped_column(String(300))  # None: paused by an operator
    # Removed by an operator: kept for the history that names it, never listed, tracked or formed.
    removed_at: Mapped[datetime | None]
    removed_by: Mapped[str | None] = mapped_column(String(200))

    commits: Mapped[list[Commit]] = relationship(back_populates="component")


class Commit(Base):
    __tablename__ = "commits"
    __table_args__ = (UniqueConstraint("component_id", "sha"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    component_id: Mapped[int] = mapped_column(ForeignKey("components.id", ondelete="CASCADE"))
    sha: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(500), default="")
    author: Mapped[str] = mapped_column(String(200), default="")
    committed_at: Mapped[datetime | None]
    first_seen_at: Mapped[datetime] = mapped_column(index=True)
    seen_via: Mapped[str] = mapped_column(String(16))
    # When the commit last became the branch head (a force-push back to it makes it the head
    # again, though it was first seen long ago); and when a force-push took it off the branch.
    head_at: Mapped[datetime | None]
    gone_at: Mapped[datetime | None]

    component: Mapped[Component] = relationship(back_populates="commits")


class Combination(Base):
    __tablename__ = "combinations"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    # A person marked this combination bad: it is never formed or promoted again.
    bad_at: Mapped[datetime | None]
    bad_reason: Mapped[str | None] = mapped_column(Text)
    bad_by: Mapped[str | None] = mapped_column(String(200))

    items: Mapped[list[CombinationItem]] = relationship(
        back_populates="combination", order_by="CombinationItem.component_id"
    )


class CombinationItem(Base):
    __tablename__ = "combination_items"

    combination_hash: Mapped[str] = mapped_column(
        ForeignKey("combinations.hash", ondelete="CASCADE"), primary_key=True
    )
    component_id: Mapped[int] = mapped_column(ForeignKey("components.id"), primary_key=True)
    commit_id: Mapped[int] = mapped_column(ForeignKey("commits.id"))

    combination: Mapped[Combination] = relationship(back_populates="items")
    component: Mapped[Component] = relationship()
    commit: Mapped[Commit] = relationship()


class Candidate(Base):
    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    combination_hash: Mapped[str] = mapped_column(ForeignKey("combinations.hash"), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    base_version: Mapped[int | None]
    changed: Mapped[list[Any]] = mapped_column(default=list)
    excuses: Mapped[tuple[Excuse, ...]] = mapped_column(Excuses, default=tuple)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    gating_started_at: Mapped[datetime | None]
    soak_started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Culprit finding after a rejection (see pipeline/bisection.py): its steps and its result.
    bisection: Mapped[BisectionRecord | None] = mapped_column(Bisection)
    # A person's retry after the infra retries ran out: the infra streak counts from here on.
    retried_at: Mapped[datetime | None]

    combination: Mapped[Combination] = relationship()
    runs: Mapped[list[Run]] = relationship(back_populates="candidate", order_by="Run.id")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("candidate_id", "kind", "attempt"),
                      Index("ix_runs_testbed_finished", "testbed", "finished_at"),
                      Index("ix_runs_too_busy_testbed", "too_busy", "testbed"))

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, running, finished
    verdict: Mapped[str | None] = mapped_column(String(16))
    testbed: Mapped[str | None] = mapped_column(String(63))
    worker: Mapped[str | None] = mapped_column(String(200))
    excuses: Mapped[tuple[Excuse, ...]] = mapped_column(Excuses, default=tuple)
    tool_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log: Mapped[str] = mapped_column(Text, default="")
    # The upgrade suite's diff of each component's state snapshots (domain/snapshots.py).
    state_diff: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Set on bisect runs: the combination this run tests instead of its candidate's.
    combination_hash: Mapped[str | None] = mapped_column(ForeignKey("combinations.hash"))
    # The host's state during the run (workers/environment.py, workers/calibration.py): pressure
    # per suite and combined, the calibration probes; None for runs that never measured it.
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The environment check found the testbed out of its usual range: the run is infra_error
    # (unless a check failed), and its figures never join the testbed's usual range.
    too_busy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A/B rounds measured: the suites ran on the candidate and on a control deployment of the
    # known-good this many times, interleaved. 0: a single-sided run (no control).
    rounds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    candidate: Mapped[Candidate] = relationship(back_populates="runs")
    combination: Mapped[Combination | None] = relationship()
    checks: Mapped[list[CheckRow]] = relationship(order_by="CheckRow.id")
    measurements: Mapped[list[MeasurementRow]] = relationship(order_by="MeasurementRow.id")


class CheckRow(Base):
    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    suite: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    passed: Mapped[bool]
    message: Mapped[str] = mapped_column(Text, default="")


class MeasurementRow(Base):
    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_series_run", "series", "run_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    suite: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(64))
    series: Mapped[str] = mapped_column(String(400))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    better: Mapped[str] = mapped_column(String(8))
    # Which deployment measured it (candidate, or the known-good's control in an A/B run), in
    # which round; for loss-type series the counts behind the rate (events of trials).
    side: Mapped[str] = mapped_column(String(16), default="candidate",
                                      server_default="candidate")
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    events: Mapped[int | None] = mapped_column(Integer)
    trials: Mapped[int | None] = mapped_column(Integer)


class KnownGood(Base):
    __tablename__ = "known_goods"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id"), unique=True)
    combination_hash: Mapped[str] = mapped_column(ForeignKey("combinations.hash"))
    promoted_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text, default="")
    revoked_at: Mapped[datetime | None]

    candidate: Mapped[Candidate] = relationship()
    combination: Mapped[Combination] = relationship()


class Testbed(Base):
    __tablename__ = "testbeds"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    driver: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    leased_by_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL")
    )
    lease_expires_at: Mapped[datetime | None]


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TrackingState(Base):
    """What tracking knows of one component's branch: its head, and when to poll it next."""

    __tablename__ = "tracking_states"

    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), primary_key=True
    )
    head_sha: Mapped[str | None] = mapped_column(String(64))
    head_seen_at: Mapped[datetime | None]
    head_seen_via: Mapped[str | None] = mapped_column(String(16))
    next_poll_at: Mapped[datetime | None] = mapped_column(index=True)
    last_polled_at: Mapped[datetime | None]
    poll_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")


class Delivery(Base):
    """One webhook delivery, stored before it is acknowledged; processed later by a worker.

    ``(source, dedup_key)`` is unique: a redelivery (same Idempotency-Key / X-GitHub-Delivery, or
    the same body where the forge sends no key) finds the stored row and is answered "duplicate".
    """

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("source", "dedup_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, processed
    outcome: Mapped[str] = mapped_column(String(500), default="")
    project: Mapped[str | None] = mapped_column(String(PROJECT_MAX))
    ref: Mapped[str | None] = mapped_column(String(300))
    component_id: Mapped[int | None] = mapped_column(
        ForeignKey("components.id", ondelete="SET NULL")
    )
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    dispatched_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    replays: Mapped[int] = mapped_column(Integer, default=0)
    last_replay_at: Mapped[datetime | None]

    component: Mapped[Component | None] = relationship()


class WebhookRejection(Base):
    """How many deliveries were refused, per source and reason: all that is kept of them."""

    __tablename__ = "webhook_rejections"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[datetime]


class Autohold(Base):
    """A request to keep the testbed of the next failed run it matches, for a person to inspect.

    ``armed`` until a failed or regressed run of the candidate (or of a candidate changing the
    component) catches it; then ``holding``: the run's namespaces stay and the testbed lease stays
    with the run until ``expires_at``. Released (by a person or by the timeout) it is
    ``releasing`` until the worker on ``worker``'s host tears the testbed down, then ``released``.
    """

    __tablename__ = "autoholds"

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    component: Mapped[str | None] = mapped_column(String(63))
    duration_s: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    testbed: Mapped[str | None] = mapped_column(String(63))
    tag: Mapped[str | None] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(200))
    commands: Mapped[list[Any]] = mapped_column(default=list)
    held_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(200))
    torn_down_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for the API: only the SHA-256 of its secret is kept, never the secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    scope: Mapped[str] = mapped_column(String(16))  # read ⊂ operate ⊂ admin: one scope suffices
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200), default="")
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Waiver(Base):
    """A person's decision to set aside one failing check or metric of one candidate."""

    __tablename__ = "waivers"

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    subject: Mapped[str] = mapped_column(String(400))  # an excuse's subject: a check or a series
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class RunStat(Base):
    """Finished runs rolled up by kind, verdict and duration bucket (see pipeline/runstats.py)."""

    __tablename__ = "run_stats"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    runs: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)


class Notification(Base):
    """One outgoing webhook to one configured target, and how its delivery went.

    ``dedup_key`` names the event (``rejected:candidate:12``), so an event raised twice is sent
    once per target. ``target`` is the name of a target in the configuration: the URL itself is
    read from there at send time and never stored from outside input.
    """

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("target", "dedup_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(63))
    dedup_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    last_status: Mapped[int | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
