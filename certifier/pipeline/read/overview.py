"""The front page and ``certifier status``: known-good, the board, recent decisions, testbeds;
and the digest the pages poll to know whether anything changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from certifier.db import models
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import (
    SoakPolicy,
)
from certifier.pipeline import knowngood, waivers
from certifier.pipeline.queries import with_combination_and_runs
from certifier.pipeline.read.records import (
    ACTIVE_STATES,
    FINAL_STATES,
    UNFINISHED_RUN_STATES,
    CommitRef,
    ExcuseView,
    RunView,
    SoakProgress,
    changed_refs,
    excuse_views,
    live_excuses,
    ref,
    run_view,
    soak_progress,
)

DEFAULT_STALE_AFTER = timedelta(days=3)


def stale_after(settings: Any) -> timedelta:
    """``dashboard.stale_after`` from the config when it has one, else three days."""
    configured = getattr(getattr(getattr(settings, "config", None), "dashboard", None),
                         "stale_after", None)
    return configured if isinstance(configured, timedelta) else DEFAULT_STALE_AFTER


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A candidate on the pipeline board (queued, gating or soaking)."""

    id: int
    state: str
    base_version: int | None
    created_at: datetime
    updated_at: datetime
    changed: tuple[CommitRef, ...]
    excuses: tuple[ExcuseView, ...]
    current_run: RunView | None
    runs_total: int
    soak: SoakProgress | None = None


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """A candidate that reached a final state, and why in one line."""

    id: int
    state: str
    finished_at: datetime | None
    changed: tuple[CommitRef, ...]
    reason: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class TestbedEntry:
    name: str
    driver: str
    role: str
    run_id: int | None = None
    candidate_id: int | None = None
    run_label: str = ""
    run_started_at: datetime | None = None
    lease_expires_at: datetime | None = None
    lease_expired: bool = False


@dataclass(frozen=True, slots=True)
class KnownGoodView:
    version: int
    promoted_at: datetime
    revoked_at: datetime | None
    candidate_id: int
    combination_hash: str
    reason: str
    age: timedelta
    components: tuple[CommitRef, ...]


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    known_good: KnownGoodView | None
    stale_after: timedelta
    queued: tuple[BoardEntry, ...]
    gating: tuple[BoardEntry, ...]
    soaking: tuple[BoardEntry, ...]
    decisions: tuple[DecisionEntry, ...]
    testbeds: tuple[TestbedEntry, ...]
    counts: Mapping[str, int]

    @property
    def stale(self) -> bool:
        """LKGR-style: nothing promoted for longer than the configured age (or never)."""
        return self.known_good is None or self.known_good.age > self.stale_after


def _board_entry(cand: models.Candidate, now: datetime, policy: SoakPolicy,
                 waived: frozenset[str] = frozenset()) -> BoardEntry:
    current = next((r for r in reversed(cand.runs) if r.state != "finished"), None)
    return BoardEntry(
        id=cand.id, state=cand.state, base_version=cand.base_version,
        created_at=cand.created_at, updated_at=cand.updated_at, changed=changed_refs(cand),
        excuses=live_excuses(cand, now, policy, waived),
        current_run=run_view(current) if current is not None else None,
        runs_total=len(cand.runs), soak=soak_progress(cand, now, policy))


def _known_good_view(session: Session, kg: models.KnownGood, now: datetime) -> KnownGoodView:
    combo = session.scalar(
        select(models.Combination).where(models.Combination.hash == kg.combination_hash)
        .options(selectinload(models.Combination.items)
                 .selectinload(models.CombinationItem.component),
                 selectinload(models.Combination.items)
                 .selectinload(models.CombinationItem.commit)))
    items = sorted(combo.items, key=lambda i: i.component.name) if combo else []
    return KnownGoodView(
        version=kg.version, promoted_at=kg.promoted_at, revoked_at=kg.revoked_at,
        candidate_id=kg.candidate_id, combination_hash=kg.combination_hash, reason=kg.reason,
        age=max(now - kg.promoted_at, timedelta(0)),
        components=tuple(ref(i.commit, i.component) for i in items))


# The overview ---------------------------------------------------------------------------------


def overview(
    session: Session, now: datetime, policy: SoakPolicy, stale: timedelta = DEFAULT_STALE_AFTER,
    *, decisions: int = 10, queued_limit: int = 20,
) -> Overview:
    """The front page: known-good, the board, recent decisions, testbeds."""
    kg = knowngood.current(session)
    board = list(session.scalars(
        select(models.Candidate)
        .where(models.Candidate.state.in_(ACTIVE_STATES))
        .order_by(models.Candidate.id).options(*with_combination_and_runs())))
    queued = list(session.scalars(
        select(models.Candidate).where(models.Candidate.state == CandidateState.QUEUED)
        .order_by(models.Candidate.id).limit(queued_limit)
        .options(*with_combination_and_runs())))
    waived = {c.id: waivers.active_subjects(session, c.id, now) for c in board}
    entries = [_board_entry(c, now, policy, waived.get(c.id, frozenset()))
               for c in [*board, *queued]]
    counts = {str(state): int(n) for state, n in session.execute(
        select(models.Candidate.state, func.count()).group_by(models.Candidate.state))}
    return Overview(
        now=now,
        known_good=_known_good_view(session, kg, now) if kg is not None else None,
        stale_after=stale,
        queued=tuple(e for e in entries if e.state == CandidateState.QUEUED),
        gating=tuple(e for e in entries if e.state == CandidateState.GATING),
        soaking=tuple(e for e in entries if e.state == CandidateState.SOAKING),
        decisions=tuple(recent_decisions(session, decisions)),
        testbeds=tuple(testbeds(session, now)),
        counts=counts,
    )


def recent_decisions(session: Session, limit: int = 10) -> list[DecisionEntry]:
    """The newest final candidates (promoted, rejected, superseded, cancelled)."""
    cands = list(session.scalars(
        select(models.Candidate).where(models.Candidate.state.in_(FINAL_STATES))
        .order_by(models.Candidate.finished_at.desc().nulls_last(), models.Candidate.id.desc())
        .limit(limit)
        .options(*with_combination_and_runs()[:2])))
    versions = dict(session.execute(
        select(models.KnownGood.candidate_id, models.KnownGood.version)
        .where(models.KnownGood.candidate_id.in_([c.id for c in cands])))
        .all()) if cands else {}
    out = []
    for cand in cands:
        excuses = excuse_views(cand.excuses)
        version = versions.get(cand.id)
        if cand.state == CandidateState.PROMOTED and version is not None:
            reason = f"promoted to known-good #{version}"
        else:
            reason = excuses[0].message if excuses else cand.state
            if len(excuses) > 1:
                reason += f" (and {len(excuses) - 1} more)"
        out.append(DecisionEntry(id=cand.id, state=cand.state, finished_at=cand.finished_at,
                                 changed=changed_refs(cand), reason=reason, version=version))
    return out


def testbeds(session: Session, now: datetime) -> list[TestbedEntry]:
    """Every testbed and the run that holds its lease, if any."""
    rows = session.execute(
        select(models.Testbed, models.Run)
        .outerjoin(models.Run, models.Run.id == models.Testbed.leased_by_run_id)
        .order_by(models.Testbed.name)).all()
    out = []
    for bed, run in rows:
        if bed.leased_by_run_id is None:
            out.append(TestbedEntry(bed.name, bed.driver, bed.role))
            continue
        expired = bed.lease_expires_at is not None and bed.lease_expires_at < now
        out.append(TestbedEntry(
            bed.name, bed.driver, bed.role, run_id=bed.leased_by_run_id,
            candidate_id=run.candidate_id if run else None,
            run_label=f"{run.kind} {run.attempt}" if run else "",
            run_started_at=run.started_at if run else None,
            lease_expires_at=bed.lease_expires_at, lease_expired=expired))
    return out


def state_version(session: Session) -> str:
    """A short digest of everything the pages show that can change; cheap enough to poll.

    Candidates move (``updated_at``), runs appear and finish (the unfinished ones are few and
    indexed by state), known-goods are promoted or revoked, commits, audit events and webhook
    deliveries arrive, leases change hands. Each part is an indexed max or a tiny table.
    """
    scalars = session.execute(select(
        select(func.max(models.Candidate.updated_at)).scalar_subquery(),
        select(func.max(models.Candidate.id)).scalar_subquery(),
        select(func.max(models.Run.id)).scalar_subquery(),
        select(func.max(models.KnownGood.version)).scalar_subquery(),
        select(func.count(models.KnownGood.revoked_at)).scalar_subquery(),
        select(func.max(models.Commit.id)).scalar_subquery(),
        select(func.max(models.AuditEvent.id)).scalar_subquery(),
        select(func.max(models.Delivery.id)).scalar_subquery(),
        select(func.count()).select_from(models.Delivery)
        .where(models.Delivery.state == "pending").scalar_subquery(),
    )).one()
    unfinished = session.execute(
        select(models.Run.id, models.Run.state).where(
            models.Run.state.in_(UNFINISHED_RUN_STATES)).order_by(models.Run.id)).all()
    leases = session.execute(
        select(models.Testbed.name, models.Testbed.leased_by_run_id)
        .order_by(models.Testbed.name)).all()
    text = repr((tuple(scalars), [tuple(r) for r in unfinished], [tuple(r) for r in leases]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


