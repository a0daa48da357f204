"""Components and their commits: registering them, syncing them from the config, reporting commits.

Reporting a commit is idempotent — the same sha seen twice (by a webhook, a poll and the API) is
one commit — and is the trigger that lets the scheduler form a new candidate.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.combination import SHA_RE
from certifier.pipeline.errors import Conflict, Invalid, NotFound
from certifier.settings import ComponentConfig, TestbedConfig


def get_component(session: Session, name: str) -> models.Component:
    component = session.scalar(select(models.Component).where(models.Component.name == name))
    if component is None:
        raise NotFound(f"no component named {name!r}")
    return component


def list_components(session: Session) -> list[models.Component]:
    return list(session.scalars(select(models.Component).order_by(models.Component.name)))


def create_component(
    session: Session, config: ComponentConfig, clock: Clock, *, exist_ok: bool = False
) -> models.Component:
    existing = session.scalar(
        select(models.Component).where(models.Component.name == config.name)
    )
    if existing is not None:
        if exist_ok:
            _apply(existing, config)
            return existing
        raise Conflict(f"component {config.name!r} already exists")
    component = models.Component(name=config.name, created_at=clock.now())
    _apply(component, config)
    session.add(component)
    session.flush()
    return component


def _apply(component: models.Component, config: ComponentConfig) -> None:
    component.source = config.source
    component.url = config.url
    component.branch = config.branch
    component.recipe = str(config.recipe) if config.recipe else None
    component.run_in = config.run_in
    component.project = config.project
    component.api_url = config.api_url
    component.poll_interval_s = (
        int(config.poll_interval.total_seconds()) if config.poll_interval is not None else None
    )
    component.token_env = config.token_env
    component.webhook_secret_env = config.webhook_secret_env


def sync_from_config(
    session: Session,
    components: tuple[ComponentConfig, ...],
    testbeds: tuple[TestbedConfig, ...],
    clock: Clock,
) -> None:
    """Make the database agree with the config file: add or update, never delete history."""
    for config in components:
        create_component(session, config, clock, exist_ok=True)
    for tb in testbeds:
        row = session.get(models.Testbed, tb.name)
        if row is None:
            session.add(models.Testbed(name=tb.name, driver=tb.driver, role=tb.role))
        else:
            row.driver, row.role = tb.driver, tb.role
    session.flush()


def report_commit(
    session: Session,
    component_name: str,
    sha: str,
    clock: Clock,
    *,
    title: str = "",
    author: str = "",
    committed_at: datetime | None = None,
    seen_via: str = "api",
) -> tuple[models.Commit, bool]:
    """Record a commit seen on a component's branch; returns (commit, newly_created)."""
    sha = sha.strip().lower()
    if not SHA_RE.match(sha):
        raise Invalid(f"not a full commit sha (40 or 64 hex digits): {sha!r}")
    component = get_component(session, component_name)
    existing = session.scalar(
        select(models.Commit).where(
            models.Commit.component_id == component.id, models.Commit.sha == sha
        )
    )
    if existing is not None:
        return existing, False
    commit = models.Commit(
        component_id=component.id,
        sha=sha,
        # A forge may send NUL bytes in a title or a name; PostgreSQL text cannot hold them.
        title=title[:500].replace("\x00", "\N{REPLACEMENT CHARACTER}"),
        author=author[:200].replace("\x00", "\N{REPLACEMENT CHARACTER}"),
        committed_at=committed_at,
        first_seen_at=clock.now(),
        seen_via=seen_via,
    )
    session.add(commit)
    session.flush()
    return commit, True


def list_commits(session: Session, component_name: str, limit: int = 100) -> list[models.Commit]:
    component = get_component(session, component_name)
    return list(
        session.scalars(
            select(models.Commit)
            .where(models.Commit.component_id == component.id)
            .order_by(models.Commit.first_seen_at.desc(), models.Commit.id.desc())
            .limit(limit)
        )
    )


def heads(session: Session) -> dict[str, models.Commit]:
    """Each unpaused component's head: its newest commit still on the branch.

    Newest is by the time the commit became the branch head (``head_at``, set by tracking; a
    force-push back to an old commit makes it the head again) or else when it was first seen,
    then by id. Commits a force-push took off the branch (``gone_at``) are never a head.
    """
    result: dict[str, models.Commit] = {}
    became_head = func.coalesce(models.Commit.head_at, models.Commit.first_seen_at)
    for component in list_components(session):
        if component.paused:
            continue
        newest = session.scalar(
            select(models.Commit)
            .where(models.Commit.component_id == component.id, models.Commit.gone_at.is_(None))
            # On a tie (one poll reports a range at one instant), the commit tracking made the
            # head wins over the ones it reported on the way.
            .order_by(became_head.desc(), models.Commit.head_at.is_(None),
                      models.Commit.id.desc())
            .limit(1)
        )
        if newest is not None:
            result[component.name] = newest
    return result


def gone_among(session: Session, pairs: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The ``(component, sha)`` pairs among ``pairs`` whose commit is gone upstream (a force-push
    took it off the branch, or a worker found upstream without it)."""
    wanted = set(pairs)
    if not wanted:
        return frozenset()
    rows = session.execute(
        select(models.Component.name, models.Commit.sha)
        .join(models.Commit, models.Commit.component_id == models.Component.id)
        .where(models.Commit.sha.in_(sorted({sha for _, sha in wanted})),
               models.Commit.gone_at.is_not(None))).all()
    return frozenset((str(n), str(sha)) for n, sha in rows if (n, sha) in wanted)
