"""Read-only views of what stands beside the pipeline: components and their commits, the
known-good history and its diffs, the audit log and webhook deliveries.

Beside the overview and the candidate pages (``read.overview``, ``read.candidate``), with the
same rules: a handful of queries per page, plain frozen dataclasses out, nothing written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from certifier.db import models
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import knowngood
from certifier.pipeline.errors import NotFound
from certifier.pipeline.read.records import (
    AuditView,
    CommitRef,
    audit_view,
    base_items,
    commits_between,
    ref,
)

# Components -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tag:
    """What became of a commit: known-good, soaking, rejected (and whether it was blamed)…"""

    kind: str  # a candidate state, "known-good" or "was-known-good", "culprit"
    text: str
    href: str


@dataclass(frozen=True, slots=True)
class CommitStatus:
    commit: CommitRef
    seen_via: str
    gone: bool  # gone upstream (force-pushed away, or found missing by a worker)
    tags: tuple[Tag, ...]
    gone_at: datetime | None = None  # when Certifier noticed


@dataclass(frozen=True, slots=True)
class ComponentPage:
    name: str
    source: str
    url: str
    branch: str
    paused: bool
    paused_reason: str | None
    known_good_sha: str | None
    commits: tuple[CommitStatus, ...]
    more: bool
    # Tracking's health: failed polls in a row and the last error (a poll's or a delivery's).
    poll_failures: int = 0
    last_error: str = ""
    last_polled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ComponentRow:
    name: str
    source: str
    url: str
    branch: str
    paused: bool
    head: CommitRef | None
    known_good: CommitRef | None


def component_list(session: Session) -> list[ComponentRow]:
    """Every component with its newest commit and its commit in the current known-good."""
    from certifier.pipeline import queries  # the API's own "newest commit" rule

    heads = queries.newest_commits(session)
    kg = knowngood.current(session)
    in_kg = base_items(session, kg.version) if kg else {}
    out = []
    for comp in session.scalars(select(models.Component).where(
            models.Component.removed_at.is_(None)).order_by(models.Component.name)):
        head = heads.get(comp.id)
        kg_item = in_kg.get(comp.name)
        out.append(ComponentRow(comp.name, comp.source, comp.url, comp.branch, comp.paused,
                                ref(head, comp) if head else None,
                                ref(kg_item.commit, comp) if kg_item else None))
    return out


def component_page(session: Session, name: str, limit: int = 100) -> ComponentPage:
    """A component's commits, newest first, each tagged with what became of it."""
    comp = session.scalar(select(models.Component).where(models.Component.name == name))
    if comp is None:
        raise NotFound(f"no component named {name!r}")
    commits = list(session.scalars(
        select(models.Commit).where(models.Commit.component_id == comp.id)
        .order_by(models.Commit.first_seen_at.desc(), models.Commit.id.desc()).limit(limit + 1)))
    shown = commits[:limit]
    ids = [c.id for c in shown]
    current = knowngood.current(session)
    versions: dict[int, list[int]] = defaultdict(list)
    for version, commit_id in session.execute(
        select(models.KnownGood.version, models.CombinationItem.commit_id)
        .join(models.CombinationItem,
              models.CombinationItem.combination_hash == models.KnownGood.combination_hash)
        .where(models.CombinationItem.component_id == comp.id,
               models.CombinationItem.commit_id.in_(ids))
        .order_by(models.KnownGood.version)):
        versions[commit_id].append(version)
    cands: dict[int, list[tuple[int, str, list[Any]]]] = defaultdict(list)
    for commit_id, cand_id, state, changed in session.execute(
        select(models.CombinationItem.commit_id, models.Candidate.id, models.Candidate.state,
               models.Candidate.changed)
        .join(models.Candidate,
              models.Candidate.combination_hash == models.CombinationItem.combination_hash)
        .where(models.CombinationItem.component_id == comp.id,
               models.CombinationItem.commit_id.in_(ids))
        .order_by(models.Candidate.id.desc())):
        cands[commit_id].append((cand_id, state, list(changed or [])))
    kg_sha = None
    out = []
    for commit in shown:
        tags: list[Tag] = []
        for version in reversed(versions.get(commit.id, [])):
            if current is not None and version == current.version:
                kg_sha = commit.sha
                tags.append(Tag("known-good", f"known-good #{version}", f"/known-good#v{version}"))
            else:
                tags.append(Tag("was-known-good", f"was #{version}", f"/known-good#v{version}"))
        for cand_id, state, changed in cands.get(commit.id, [])[:6]:
            if name not in changed or state == CandidateState.PROMOTED:
                continue  # carried along unchanged, or already shown as a known-good
            if state == CandidateState.REJECTED and changed == [name]:
                tags.append(Tag("culprit", f"blamed by #{cand_id}", f"/candidates/{cand_id}"))
            else:
                tags.append(Tag(state, f"{state} #{cand_id}", f"/candidates/{cand_id}"))
        out.append(CommitStatus(ref(commit, comp), commit.seen_via, commit.gone_at is not None,
                                tuple(tags), commit.gone_at))
    tracking = session.get(models.TrackingState, comp.id)
    return ComponentPage(comp.name, comp.source, comp.url, comp.branch, comp.paused,
                         comp.paused_reason, kg_sha, tuple(out), len(commits) > limit,
                         tracking.poll_failures if tracking else 0,
                         tracking.last_error if tracking else "",
                         tracking.last_polled_at if tracking else None)


# Known-good history ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentDiff:
    component: str
    old: CommitRef | None
    new: CommitRef | None
    between: tuple[CommitRef, ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    promoted_at: datetime
    revoked_at: datetime | None
    candidate_id: int
    reason: str
    previous: int | None
    diff: tuple[ComponentDiff, ...]
    # Its commits upstream no longer has, and when that was noticed: the archive deploys them.
    gone_upstream: tuple[tuple[CommitRef, datetime], ...] = ()


def _combination_items(session: Session,
                       hashes: Iterable[str]) -> dict[str, dict[str, models.CombinationItem]]:
    out: dict[str, dict[str, models.CombinationItem]] = defaultdict(dict)
    for item in session.scalars(
        select(models.CombinationItem)
        .where(models.CombinationItem.combination_hash.in_(list(set(hashes))))
        .options(selectinload(models.CombinationItem.component),
                 selectinload(models.CombinationItem.commit))):
        out[item.combination_hash][item.component.name] = item
    return out


Between = Callable[[models.Component, models.Commit | None, models.Commit],
                   tuple[tuple[CommitRef, ...], bool]]


def _diff(old: Mapping[str, models.CombinationItem], new: Mapping[str, models.CombinationItem],
          between: Between) -> tuple[ComponentDiff, ...]:
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is not None and b is not None and a.commit_id == b.commit_id:
            continue
        commits: tuple[CommitRef, ...] = ()
        more = False
        if b is not None:
            commits, more = between(b.component, a.commit if a else None, b.commit)
        out.append(ComponentDiff(name, ref(a.commit, a.component) if a else None,
                                 ref(b.commit, b.component) if b else None, commits, more))
    return tuple(out)


def _preloaded_between(session: Session, pairs: list[tuple[models.Commit, models.Commit]],
                       limit: int) -> Between:
    """:func:`commits_between` for many ranges at once: one query loads every component's
    commits over the span of its ranges, and each range is cut from them in memory."""
    def key(c: models.Commit) -> tuple[datetime, int]:
        return (c.first_seen_at, c.id)

    spans: dict[int, tuple[datetime, datetime]] = {}
    for base, head in pairs:
        lo, hi = spans.get(head.component_id, (base.first_seen_at, head.first_seen_at))
        spans[head.component_id] = (min(lo, base.first_seen_at), max(hi, head.first_seen_at))
    loaded: dict[int, list[models.Commit]] = defaultdict(list)
    if spans:
        for commit in session.scalars(
            select(models.Commit).where(or_(*(
                and_(models.Commit.component_id == cid, models.Commit.first_seen_at >= lo,
                     models.Commit.first_seen_at <= hi) for cid, (lo, hi) in spans.items())))
            .order_by(models.Commit.first_seen_at.desc(), models.Commit.id.desc())):
            loaded[commit.component_id].append(commit)

    def between(component: models.Component, base: models.Commit | None,
                head: models.Commit) -> tuple[tuple[CommitRef, ...], bool]:
        if base is None:
            return (ref(head, component),), False
        rows = [c for c in loaded[component.id] if key(base) < key(c) <= key(head)]
        if not rows or rows[0].id != head.id:
            rows = [head]
        return tuple(ref(c, component) for c in rows[:limit]), len(rows) > limit

    return between


def known_good_history(session: Session, before: int | None = None, limit: int = 20,
                       commits: int = 10) -> tuple[list[HistoryEntry], int | None]:
    """Known-good versions newest first, each with its diff against the version before it."""
    # One more than shown: it is the "previous" of the oldest shown, and says there is more.
    query = select(models.KnownGood).order_by(models.KnownGood.version.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(models.KnownGood.version < before)
    kgs = list(session.scalars(query))
    items = _combination_items(session, (k.combination_hash for k in kgs))
    pairs = [
        (items[prev.combination_hash][name].commit, item.commit)
        for kg, prev in pairwise(kgs)
        for name, item in items[kg.combination_hash].items()
        if name in items[prev.combination_hash]
        and items[prev.combination_hash][name].commit_id != item.commit_id
    ]
    between = _preloaded_between(session, pairs, commits)
    out = []
    for i, kg in enumerate(kgs[:limit]):
        prev = kgs[i + 1] if i + 1 < len(kgs) else None
        diff = _diff(items[prev.combination_hash] if prev else {}, items[kg.combination_hash],
                     between)
        gone = tuple((ref(item.commit, item.component), item.commit.gone_at)
                     for _, item in sorted(items[kg.combination_hash].items())
                     if item.commit.gone_at is not None)
        out.append(HistoryEntry(kg.version, kg.promoted_at, kg.revoked_at, kg.candidate_id,
                                kg.reason, prev.version if prev else None, diff, gone))
    return out, (kgs[limit - 1].version if len(kgs) > limit else None)


def known_good_diff(
    session: Session, a: int, b: int, commits: int = 50
) -> tuple[ComponentDiff, ...]:
    """From known-good ``a`` to ``b``: per component, the old and new commit and those between."""
    old, new = knowngood.get(session, a), knowngood.get(session, b)
    items = _combination_items(session, (old.combination_hash, new.combination_hash))
    return _diff(items[old.combination_hash], items[new.combination_hash],
                 lambda component, base, head: commits_between(session, component, base, head,
                                                               commits))


# Audit log and webhook deliveries -----------------------------------------------------------------


def audit_log(session: Session, before: int | None = None, limit: int = 100,
              action: str | None = None) -> tuple[list[AuditView], int | None]:
    query = select(models.AuditEvent).order_by(models.AuditEvent.id.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(models.AuditEvent.id < before)
    if action:
        query = query.where(models.AuditEvent.action == action)
    events = [audit_view(e) for e in session.scalars(query)]
    return events[:limit], (events[limit - 1].id if len(events) > limit else None)


def audit_actions(session: Session) -> list[str]:
    return [str(a) for a in session.scalars(
        select(models.AuditEvent.action).distinct().order_by(models.AuditEvent.action))]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    source: str
    event: str
    received_at: datetime
    state: str
    outcome: str
    project: str | None
    ref: str | None
    component: str | None
    attempts: int
    processed_at: datetime | None
    replays: int


@dataclass(frozen=True, slots=True)
class RejectionView:
    source: str
    reason: str
    count: int
    last_at: datetime


def deliveries(session: Session, before: int | None = None,
               limit: int = 100) -> tuple[list[DeliveryView], int | None, list[RejectionView]]:
    """Stored webhook deliveries newest first, and the counts of refused ones."""
    query = (select(models.Delivery, models.Component.name)
             .outerjoin(models.Component, models.Component.id == models.Delivery.component_id)
             .order_by(models.Delivery.id.desc()).limit(limit + 1))
    if before is not None:
        query = query.where(models.Delivery.id < before)
    rows = [DeliveryView(d.id, d.source, d.event, d.received_at, d.state, d.outcome, d.project,
                         d.ref, name, d.attempts, d.processed_at, d.replays)
            for d, name in session.execute(query)]
    refused = [RejectionView(r.source, r.reason, r.count, r.last_at) for r in session.scalars(
        select(models.WebhookRejection).order_by(models.WebhookRejection.source,
                                                 models.WebhookRejection.reason))]
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None), refused
