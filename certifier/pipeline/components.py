"""Components and their commits: registering them, syncing them from the config, reporting commits.

Reporting a commit is idempotent — the same sha seen twice (by a webhook, a poll and the API) is
one commit — and is the trigger that lets the scheduler form a new candidate.

Registering, pausing, resuming and removing a component are operator actions (a token over the
API, ``cli:<user>`` on the server), each audited. Removing keeps the row, its commits and every
combination naming it, because known-good history must stay readable: a removed component is
no longer listed, tracked, polled or formed into candidates, and its name stays taken. It is
refused while the current known-good or an open candidate (or a running culprit finding)
includes it: the known-good carries its components into every next candidate, so such a
component can only be paused (held at its known-good commit). Removal is for a component
registered by mistake, or one whose candidates all ended without being promoted. Each of these,
and a new commit, asks the scheduler for a pass once the transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.domain.combination import SHA_RE, Combination
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import knowngood
from certifier.pipeline.dispatch import reconcile_after_commit
from certifier.pipeline.errors import Conflict, Invalid, NotFound
from certifier.pipeline.toolbox import audit, pass_lock, write_lock
from certifier.settings import ComponentConfig, TestbedConfig


def get_component(session: Session, name: str, *, lock: bool = False) -> models.Component:
    """A component that is not removed, by name; ``lock``: for a change (its row locked on
    PostgreSQL, SQLite's write lock taken first), so two people's changes take turns."""
    query = select(models.Component).where(
        models.Component.name == name, models.Component.removed_at.is_(None))
    if lock:
        write_lock(session)
        query = query.with_for_update()
    component = session.scalar(query)
    if component is None:
        raise NotFound(f"no component named {name!r}")
    return component


def list_components(session: Session) -> list[models.Component]:
    """The components that are not removed, by name."""
    return list(session.scalars(select(models.Component).where(
        models.Component.removed_at.is_(None)).order_by(models.Component.name)))


def create_component(
    session: Session, config: ComponentConfig, clock: Clock, *, exist_ok: bool = False
) -> models.Component:
    """Add a component; ``exist_ok`` (the config file's sync) updates one that exists, and
    brings back one an operator removed: the config file is the operator's word."""
    existing = session.scalar(
        select(models.Component).where(models.Component.name == config.name)
    )
    if existing is not None:
        if exist_ok:
            _apply(existing, config)
            existing.removed_at = existing.removed_by = None
            return existing
        if existing.removed_at is not None:
            raise Conflict(f"component {config.name!r} was removed at "
                           f"{existing.removed_at.isoformat()}; its history keeps the name: "
                           "choose another one")
        raise Conflict(f"component {config.name!r} already exists")
    component = models.Component(name=config.name, created_at=clock.now())
    _apply(component, config)
    session.add(component)
    session.flush()
    return component


def _audit(session: Session, clock: Clock, actor: str, action: str,
           component: models.Component, **detail: object) -> None:
    audit(session, clock, actor, action, f"component {component.name}", **detail)


def register(session: Session, config: ComponentConfig, clock: Clock, actor: str
             ) -> models.Component:
    """Register a component as an operator (audited); 409 if the name is taken."""
    component = create_component(session, config, clock)
    _audit(session, clock, actor, "register", component, source=component.source,
           url=component.url, branch=component.branch, api_url=component.api_url)
    reconcile_after_commit(session)
    return component


def pause(session: Session, clock: Clock, name: str, actor: str, reason: str
          ) -> models.Component:
    """Keep the component at its known-good commit: no new candidate moves it. Tracking goes
    on recording commits, and never lifts a pause an operator made."""
    component = get_component(session, name, lock=True)
    if component.paused and component.paused_reason is None:
        raise Conflict(f"component {name!r} is already paused by an operator")
    component.paused, component.paused_reason = True, None
    _audit(session, clock, actor, "pause", component, reason=reason)
    reconcile_after_commit(session)
    return component


def resume(session: Session, clock: Clock, name: str, actor: str, reason: str
           ) -> models.Component:
    """Lift a pause (an operator's, or tracking's for a deleted branch)."""
    component = get_component(session, name, lock=True)
    if not component.paused:
        raise Conflict(f"component {name!r} is not paused")
    was = component.paused_reason or "paused by an operator"
    component.paused, component.paused_reason = False, None
    _audit(session, clock, actor, "resume", component, reason=reason, was=was)
    reconcile_after_commit(session)
    return component


def users(session: Session, component: models.Component) -> list[str]:
    """What still needs the component: the current known-good, open candidates, running
    culprit findings. Removing it is refused while this is not empty."""
    found: list[str] = []
    current = knowngood.current(session)
    if current is not None and component.name in knowngood.combination_of(
            session, current.combination_hash):
        found.append(f"known-good #{current.version}")
    open_states = [s.value for s in CandidateState if not s.is_final]
    for cand in session.scalars(
            select(models.Candidate)
            .join(models.CombinationItem,
                  models.CombinationItem.combination_hash == models.Candidate.combination_hash)
            .where(models.CombinationItem.component_id == component.id,
                   models.Candidate.state.in_([*open_states, CandidateState.REJECTED.value]))
            .order_by(models.Candidate.id)):
        bisecting = cand.bisection is not None and cand.bisection.running
        if cand.state != CandidateState.REJECTED or bisecting:
            found.append(f"candidate {cand.id} ({'culprit finding' if bisecting else cand.state})")
    return found


def remove(session: Session, clock: Clock, name: str, actor: str, reason: str
           ) -> models.Component:
    """Remove a component (audited): see the module docstring for what that keeps.

    Serialised with the scheduler's passes (``pass_lock``): a pass forming a candidate with the
    component commits first and the removal is refused, or waits for the removal."""
    pass_lock(session)
    component = get_component(session, name, lock=True)
    needed = users(session, component)
    if needed:
        raise Conflict(f"component {name!r} is part of {', '.join(needed)}: a known-good "
                       "carries its components into every next candidate, so it cannot be "
                       "removed; pause it to keep it at its known-good commit (open candidates: "
                       "cancel them first)")
    component.removed_at, component.removed_by = clock.now(), actor
    _audit(session, clock, actor, "remove", component, reason=reason)
    reconcile_after_commit(session)
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
    reconcile_after_commit(session)  # a new head may call for a new candidate
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


def ensure_combination(session: Session, combo: Combination, clock: Clock) -> models.Combination:
    """The row of ``combo``, created with its items (and any commit not seen yet) if new."""
    row = session.get(models.Combination, combo.hash)
    if row is not None:
        return row
    row = models.Combination(hash=combo.hash, created_at=clock.now())
    session.add(row)
    for name, sha in combo.pairs:
        component = get_component(session, name)
        commit = session.scalar(select(models.Commit).where(
            models.Commit.component_id == component.id, models.Commit.sha == sha))
        if commit is None:
            commit, _ = report_commit(session, name, sha, clock, seen_via="manifest")
        session.add(models.CombinationItem(combination_hash=combo.hash,
                                           component_id=component.id, commit_id=commit.id))
    session.flush()
    return row
