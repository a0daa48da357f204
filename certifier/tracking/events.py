"""What a push or a poll saw, applied to the database: new commits, moved heads, history events.

An :class:`Observation` is computed outside any transaction (it may talk to the upstream) against
the head tracking knew; :func:`apply` then writes it, idempotently: the same commit seen by a
webhook and by a poll is one row (the ``(component, sha)`` unique key, with a SAVEPOINT for the
race on PostgreSQL). The head only moves if nobody moved it meanwhile (compare-and-set on
``tracking_states.head_sha``); a stale observation still records its commits and asks for a poll.

History events: a new head that is not a descendant of the old one is a force-push — audited,
and the commits it took off the branch are marked ``gone`` (never a head again, unless a later
push brings them back; shown as ``gone_upstream`` in the manifest). A worker that finds upstream
without a commit marks it the same way (:func:`notice_gone`). A deleted branch pauses the
component (``paused_reason`` says why); the branch coming back resumes it. Only pauses made by
tracking are lifted by tracking.

Replays: a signed push can be captured and sent again under a new delivery id. A push that does
not start from the head we know, or is not a fast-forward from it, is therefore checked with the
source before it moves anything: it moves the head only if the source says the pushed sha *is*
the branch head now. When the source cannot be asked, a pushed sha we have seen before never
moves the head (a poll is scheduled instead); a new one is applied as sent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.clock import Clock
from certifier.pipeline import components
from certifier.pipeline.toolbox import audit
from certifier.tracking.sources import (
    CommitInfo,
    Source,
    SourceError,
    SourceSpec,
    project_of,
)
from certifier.tracking.webhooks import RefUpdate

SourceFactory = Callable[[SourceSpec], Source]
BRANCH_DELETED = "branch deleted upstream"
# What the API shows for an unexpected exception in a poll or a delivery (the traceback is
# in the worker's log): never silent, never an internal detail.
UNEXPECTED = "internal error while {what} ({kind}); the worker log has the details"


def database_down(exc: BaseException) -> bool:
    """A lost database cannot record a failure either: the task fails, and is retried."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


@dataclass(frozen=True, slots=True)
class Observation:
    """The branch as seen once, relative to ``base`` (the head tracking knew when it looked)."""

    base: str | None
    head: str | None  # None: the branch does not exist
    ahead: tuple[CommitInfo, ...] = ()  # new commits, oldest first, ending with the head
    behind: tuple[str, ...] = ()  # commits of the old head that the new one lacks
    forced: bool = False
    note: str = ""
    # Not checked with the source although the push did not start from our head: apply moves
    # the head only to a commit never seen before (a replay carries an old one).
    unverified: bool = False


@dataclass
class Applied:
    new_commits: list[str] = field(default_factory=list)
    moved: bool = False
    stale: bool = False
    outcome: str = ""


def short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def spec_of(component: models.Component, environ: Mapping[str, str] | None = None) -> SourceSpec:
    env = os.environ if environ is None else environ
    token = env.get(component.token_env, "") if component.token_env else ""
    return SourceSpec(name=component.name, kind=component.source, url=component.url,
                      branch=component.branch, project=component.project,
                      api_url=component.api_url, token=token or None)


def project_path(component: models.Component) -> str | None:
    """The forge project a webhook names for this component (None if it cannot be told)."""
    try:
        return project_of(spec_of(component, {}))
    except SourceError:
        return None


def _with_head(ahead: tuple[CommitInfo, ...], head: str, source: Source | None
               ) -> tuple[CommitInfo, ...]:
    if ahead and ahead[-1].sha == head:
        return ahead
    rest = tuple(c for c in ahead if c.sha != head)
    info = CommitInfo(head)
    if source is not None:
        with contextlib.suppress(SourceError):
            info = source.commit(head)
    return (*rest, info)


def observe_poll(source: Source, known: str | None, limit: int) -> Observation:
    """Ask the source where the branch is now. Raises SourceError / RateLimited."""
    head = source.head()
    if head is None or head == known:
        return Observation(known, head)
    if known is None:
        return Observation(None, head, (source.commit(head),))
    cmp = source.compare(known, head, limit)
    note = "history truncated to the newest commits" if cmp.truncated else ""
    return Observation(known, head, _with_head(cmp.ahead, head, source), cmp.behind,
                       bool(cmp.behind), note)


def observe_push(update: RefUpdate, known: str | None, source: Source | None,
                 limit: int) -> Observation:
    """What a webhook says, checked against the source when the payload cannot be trusted alone.

    The payload alone suffices when the forge says the push was not forced, lists every new
    commit and starts from the head we know (GitHub, usually). GitLab does not say whether a
    push was forced and Gerrit lists no commits: the source tells us. If the source cannot be
    reached the payload is applied as it is, and polling completes the picture later.
    """
    after = update.after
    if after is None and known is not None and update.before != known and source is not None:
        with contextlib.suppress(SourceError):  # unreachable: applied as sent; polls resume
            if source.head() is not None:
                return Observation(known, known, note=(
                    "ignored: the branch still exists upstream (a replayed or outdated "
                    f"deletion); head stays {short(known)}"))
    if after is None or after == known:
        return Observation(known, after)
    if known is None:  # the first sight of this branch: nothing to compare with
        return Observation(None, after, _with_head(update.commits[-limit:], after, source))
    follows = update.before == known
    trusted = update.forced is False and update.complete and bool(update.commits) and follows
    if trusted:
        return Observation(known, after, _with_head(update.commits[-limit:], after, None))
    note = ""
    if source is not None:
        try:
            cmp = source.compare(known, after, limit)
            if (cmp.behind or not follows) and source.head() != after:
                # Not a push from our head (Gerrit's compare cannot even tell an older sha
                # from a newer one), or not a fast-forward, and not where the branch is now: a
                # replayed or outdated push, forced or not. It moves nothing; a later push or
                # poll brings what it carried.
                return Observation(known, known, note=(
                    f"ignored: {short(after)} is not the branch head upstream (a replayed or "
                    f"outdated push); head stays {short(known)}"))
            return Observation(known, after, _with_head(cmp.ahead, after, source), cmp.behind,
                               bool(cmp.behind))
        except SourceError as exc:
            note = f"source unavailable ({exc}); payload applied as sent"
    return Observation(known, after, _with_head(update.commits[-limit:], after, None), (),
                       bool(update.forced), note, unverified=not follows)


@contextlib.contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A SAVEPOINT on PostgreSQL, where two writers can race on a unique key; SQLite serialises
    writers, and pysqlite's SAVEPOINTs outside a begun transaction would commit early."""
    if session.get_bind().dialect.name == "postgresql":
        with session.begin_nested():
            yield
    else:
        yield


def tracking_state(session: Session, component_id: int, *, lock: bool = True
                   ) -> models.TrackingState:
    """The component's tracking row (created if missing), locked FOR UPDATE on PostgreSQL so
    two processes applying observations to one branch take turns."""
    query = select(models.TrackingState).where(models.TrackingState.component_id == component_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    state = session.scalar(query)
    if state is not None:
        return state
    try:
        with savepoint(session):
            state = models.TrackingState(component_id=component_id, poll_failures=0,
                                         last_error="")
            session.add(state)
            session.flush()
    except IntegrityError:
        state = session.scalar(query)
        assert state is not None
    return state


def _ensure_commit(session: Session, component: models.Component, info: CommitInfo,
                   clock: Clock, via: str) -> tuple[models.Commit, bool]:
    query = select(models.Commit).where(models.Commit.component_id == component.id,
                                        models.Commit.sha == info.sha)
    existing = session.scalar(query)
    if existing is not None:
        return existing, False
    try:
        with savepoint(session):
            return components.report_commit(
                session, component.name, info.sha, clock, title=info.title,
                author=info.author, committed_at=info.committed_at, seen_via=via)
    except IntegrityError:  # a webhook and a poll raced on PostgreSQL: the other one won
        existing = session.scalar(query)
        assert existing is not None
        return existing, False


def _audit(session: Session, clock: Clock, action: str, component: models.Component,
           **detail: Any) -> None:
    audit(session, clock, "tracking", action, f"component {component.name}", **detail)


def mark_gone(session: Session, component: models.Component, shas: Iterable[str],
              now: datetime) -> list[str]:
    """Mark the component's commits ``shas`` gone from upstream as of ``now`` (those not marked
    already); the shas newly marked. The manifest and the commit list show it as
    ``gone_upstream``, and formation releases a hold at such a commit."""
    wanted = list(shas)
    if not wanted:
        return []
    gone = []
    for commit in session.scalars(select(models.Commit).where(
            models.Commit.component_id == component.id, models.Commit.sha.in_(wanted),
            models.Commit.gone_at.is_(None))):
        commit.gone_at = now
        gone.append(commit.sha)
    return sorted(gone)


def notice_gone(session: Session, name: str, sha: str, clock: Clock, actor: str,
                reason: str) -> bool:
    """A worker found upstream without ``sha`` (it fetched, and the commit was not there): mark
    it gone, as a force-push seen by tracking would, and audit who noticed. False: already
    marked, or not a commit Certifier knows."""
    component = session.scalar(select(models.Component).where(models.Component.name == name))
    if component is None or not mark_gone(session, component, [sha], clock.now()):
        return False
    audit(session, clock, actor, "gone_upstream", f"component {name}", sha=sha, reason=reason)
    session.flush()
    return True


def apply(session: Session, component: models.Component, obs: Observation, clock: Clock,
          via: str) -> Applied:
    """Write one observation; flushes, the caller commits."""
    state = tracking_state(session, component.id)
    now = clock.now()
    result = Applied()
    if obs.head is None:
        state.head_sha, state.head_seen_at, state.head_seen_via = None, now, via
        if component.paused:
            result.outcome = f"branch {component.branch} absent; component stays paused"
            return result
        component.paused = True
        component.paused_reason = f"{BRANCH_DELETED} ({via})"
        _audit(session, clock, "pause", component, reason=component.paused_reason,
               last_head=obs.base)
        result.outcome = f"branch {component.branch} deleted: component paused"
        session.flush()
        return result
    notes = []
    if component.paused and (component.paused_reason or "").startswith(BRANCH_DELETED):
        component.paused, component.paused_reason = False, None
        _audit(session, clock, "resume", component, head=obs.head)
        notes.append("branch is back: component resumed")
    result.stale = state.head_sha not in (None, obs.base, obs.head)
    if obs.unverified and state.head_sha != obs.head and session.scalar(
            select(models.Commit.id).where(models.Commit.component_id == component.id,
                                           models.Commit.sha == obs.head)) is not None:
        state.next_poll_at = now  # the poll asks the source where the branch really is
        notes.append(f"{obs.note.split(';')[0]}; {short(obs.head)} was seen before (a replay?): "
                     f"head left at {short(state.head_sha)}, poll scheduled")
        result.outcome = "; ".join(notes)
        session.flush()
        return result
    ahead = obs.ahead if any(c.sha == obs.head for c in obs.ahead) \
        else (*obs.ahead, CommitInfo(obs.head))
    head_commit = None
    for info in ahead:
        commit, created = _ensure_commit(session, component, info, clock, via)
        if created:
            result.new_commits.append(commit.sha)
            if info.note:
                notes.append(f"commit {short(info.sha)}: {info.note}")
        elif commit.gone_at is not None and not result.stale:
            commit.gone_at = None  # a push brought it back onto the branch
        if info.sha == obs.head:
            head_commit = commit
    assert head_commit is not None
    if result.stale:
        state.next_poll_at = now  # somebody moved the head meanwhile: look again
        notes.append(f"{len(result.new_commits)} new commits; head left at "
                     f"{short(state.head_sha)} (it moved meanwhile; poll scheduled)")
        result.outcome = "; ".join(notes)
        session.flush()
        return result
    if state.head_sha == obs.head:
        notes.append(f"no change: head already {short(obs.head)}")
    else:
        gone: list[str] = []
        if obs.forced:
            gone = mark_gone(session, component, obs.behind, now)
            _audit(session, clock, "force_push", component, old=obs.base, new=obs.head,
                   gone=sorted(gone), seen_via=via)
            notes.append(f"force-push: head {short(obs.base)} -> {short(obs.head)}, "
                         f"{len(gone)} commits gone")
        head_commit.head_at = now
        head_commit.gone_at = None
        state.head_sha, state.head_seen_at, state.head_seen_via = obs.head, now, via
        result.moved = True
        if not obs.forced:
            notes.append(f"{len(result.new_commits)} new commits; head {short(obs.head)}")
    if obs.note:
        notes.append(obs.note)
    result.outcome = "; ".join(notes)
    session.flush()
    return result
