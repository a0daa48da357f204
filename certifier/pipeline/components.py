"""Components and their commits: registering them, syncing them from the config, reporting commits.

Reporting a commit is idempotent — the same sha seen twice (by a webhook, a poll and the API) is
one commit — and is the trigger that lets the scheduler form a new candidate.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
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
        title=title[:500],
        author=author[:200],
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
    """Each unpaused component's newest reported commit (by first-seen time, then id)."""
    result: dict[str, models.Commit] = {}
    for component in list_components(session):
        if component.paused:
            continue
        newest = session.scalar(
            select(models.Commit)
            .where(models.Commit.component_id == component.id)
            .order_by(models.Commit.first_seen_at.desc(), models.Commit.id.desc())
            .limit(1)
        )
        if newest is not None:
            result[component.name] = newest
    return result
