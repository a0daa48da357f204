"""Request and response bodies of the v1 API, and their construction from database rows.

Responses are built explicitly from rows (``of``) rather than serialising ORM objects, so the
wire format is the contract published in OpenAPI and a model change cannot leak a column.
Lists are objects with an ``items`` array, so fields (paging, totals) can be added later without
breaking clients.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from certifier.db import models

SHA_PATTERN = r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorOut(_Out):
    detail: str


class HealthOut(_Out):
    status: str


class ExcuseOut(_Out):
    """One plain-words reason why a candidate or run is not (yet) good."""

    kind: str
    subject: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def many(cls, raw: list[Any]) -> list[ExcuseOut]:
        return [
            cls(kind=str(e.get("kind", "")), subject=str(e.get("subject", "")),
                message=str(e.get("message", "")), data=dict(e.get("data") or {}))
            for e in raw
            if isinstance(e, dict)
        ]


# Components and commits ---------------------------------------------------------------------


class CommitOut(_Out):
    component: str
    sha: str
    title: str
    author: str
    committed_at: datetime | None
    first_seen_at: datetime
    seen_via: str

    @classmethod
    def of(cls, commit: models.Commit, component: str) -> CommitOut:
        return cls(component=component, sha=commit.sha, title=commit.title, author=commit.author,
                   committed_at=commit.committed_at, first_seen_at=commit.first_seen_at,
                   seen_via=commit.seen_via)


class CommitList(_Out):
    items: list[CommitOut]


class CommitReport(BaseModel):
    """A commit seen on a component's branch, reported by a script or a CI job."""

    model_config = ConfigDict(extra="forbid")

    sha: str = Field(pattern=SHA_PATTERN, description="full commit id: 40 or 64 hex digits")
    title: str = Field(default="", max_length=10_000, description="stored up to 500 characters")
    author: str = Field(default="", max_length=1_000, description="stored up to 200 characters")
    committed_at: AwareDatetime | None = None


class CommitReported(_Out):
    commit: CommitOut
    created: bool


class ComponentOut(_Out):
    name: str
    source: str
    url: str
    branch: str
    recipe: str | None
    run_in: str
    paused: bool
    created_at: datetime
    head_sha: str | None = Field(description="the newest reported commit, if any")

    @classmethod
    def of(cls, component: models.Component, head: models.Commit | None) -> ComponentOut:
        return cls(name=component.name, source=component.source, url=component.url,
                   branch=component.branch, recipe=component.recipe, run_in=component.run_in,
                   paused=component.paused, created_at=component.created_at,
                   head_sha=head.sha if head else None)


class ComponentList(_Out):
    items: list[ComponentOut]


# Candidates and runs ------------------------------------------------------------------------


class RunOut(_Out):
    id: int
    kind: str
    attempt: int
    state: str
    verdict: str | None
    testbed: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    excuses: list[ExcuseOut]

    @classmethod
    def summary(cls, run: models.Run) -> RunOut:
        return cls(id=run.id, kind=run.kind, attempt=run.attempt, state=run.state,
                   verdict=run.verdict, testbed=run.testbed, created_at=run.created_at,
                   started_at=run.started_at, finished_at=run.finished_at,
                   excuses=ExcuseOut.many(run.excuses))


class CheckOut(_Out):
    suite: str
    name: str
    passed: bool
    message: str


class MeasurementOut(_Out):
    suite: str
    metric: str
    labels: dict[str, Any]
    value: float
    unit: str
    better: str


class RunDetail(RunOut):
    candidate_id: int
    worker: str | None
    dispatched_at: datetime | None
    tool_versions: dict[str, Any]
    checks: list[CheckOut]
    measurements: list[MeasurementOut]
    log: str

    @classmethod
    def of(cls, run: models.Run) -> RunDetail:
        return cls(
            **RunOut.summary(run).model_dump(),
            candidate_id=run.candidate_id, worker=run.worker, dispatched_at=run.dispatched_at,
            tool_versions=dict(run.tool_versions),
            checks=[CheckOut(suite=c.suite, name=c.name, passed=c.passed, message=c.message)
                    for c in run.checks],
            measurements=[
                MeasurementOut(suite=m.suite, metric=m.metric, labels=dict(m.labels),
                               value=m.value, unit=m.unit, better=m.better)
                for m in run.measurements
            ],
            log=run.log,
        )


class CandidateOut(_Out):
    id: int
    state: str
    combination: str = Field(description="content hash of the combination")
    base_version: int | None = Field(description="the known-good version it was formed on")
    changed: list[str] = Field(description="components whose commit differs from the base")
    created_at: datetime
    updated_at: datetime
    gating_started_at: datetime | None
    soak_started_at: datetime | None
    finished_at: datetime | None
    excuses: list[ExcuseOut]

    @classmethod
    def of(cls, cand: models.Candidate) -> CandidateOut:
        return cls(id=cand.id, state=cand.state, combination=cand.combination_hash,
                   base_version=cand.base_version, changed=[str(c) for c in cand.changed],
                   created_at=cand.created_at, updated_at=cand.updated_at,
                   gating_started_at=cand.gating_started_at,
                   soak_started_at=cand.soak_started_at, finished_at=cand.finished_at,
                   excuses=ExcuseOut.many(cand.excuses))


class CandidateList(_Out):
    items: list[CandidateOut]


class CombinationEntry(_Out):
    name: str
    sha: str
    title: str


class WaiverOut(_Out):
    """A failing check or metric of one candidate that a person set aside."""

    id: int
    subject: str = Field(description="the excuse subject waived, e.g. 'ping.h1 reaches h2'")
    reason: str
    author: str
    created_at: datetime
    expires_at: datetime | None
    active: bool = Field(description="false once expired: an expired waiver no longer counts")

    @classmethod
    def of(cls, waiver: models.Waiver, now: datetime) -> WaiverOut:
        return cls(id=waiver.id, subject=waiver.subject, reason=waiver.reason,
                   author=waiver.author, created_at=waiver.created_at,
                   expires_at=waiver.expires_at,
                   active=waiver.expires_at is None or waiver.expires_at > now)


class CandidateDetail(CandidateOut):
    components: list[CombinationEntry]
    runs: list[RunOut]
    waivers: list[WaiverOut] = Field(default_factory=list)

    @classmethod
    def detail(cls, cand: models.Candidate, waivers: list[models.Waiver] | None = None,
               now: datetime | None = None) -> CandidateDetail:
        entries = sorted(
            (CombinationEntry(name=i.component.name, sha=i.commit.sha, title=i.commit.title)
             for i in cand.combination.items),
            key=lambda e: e.name,
        )
        at = now or datetime.now(UTC)
        return cls(**CandidateOut.of(cand).model_dump(), components=entries,
                   runs=[RunOut.summary(r) for r in cand.runs],
                   waivers=[WaiverOut.of(w, at) for w in waivers or []])


# Operator actions ---------------------------------------------------------------------------


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S",
                        description="why: kept in the audit log")


class CancelRequest(_Action):
    pass


class WaiveRequest(_Action):
    subject: str = Field(min_length=1, max_length=400,
                         description="the subject of a failing check or metric excuse")
    expires_in: str | None = Field(default=None, max_length=32,
                                   description="e.g. 12h, 7d; none: until the candidate ends")


class PromoteRequest(_Action):
    force: bool = Field(default=False,
                        description="promote even with unwaived failures (they are audited)")


class RevokeRequest(_Action):
    pass


class WaiveAnswer(_Out):
    waiver: WaiverOut
    candidate: CandidateOut
    requeued: bool = Field(description="a rejected candidate whose every failure is now waived "
                                       "went back to the queue")


class PromoteAnswer(_Out):
    candidate: CandidateOut
    known_good: ManifestSummary


class RevokeAnswer(_Out):
    revoked: ManifestSummary
    current: ManifestSummary | None = Field(description="the known-good now served")


class AuditEventOut(_Out):
    id: int
    at: datetime
    actor: str = Field(description="token:<name>, cli:<user>, or scheduler")
    action: str
    subject: str
    detail: dict[str, Any]


class AuditList(_Out):
    items: list[AuditEventOut]
    next_before: int | None = Field(description="pass as ?before= for the next, older page")


# Known-goods --------------------------------------------------------------------------------


class ManifestComponent(_Out):
    name: str
    source: str
    url: str
    branch: str
    sha: str
    title: str
    committed_at: str | None


class Manifest(_Out):
    """The document an operator deploys (its JSON form; also served as YAML and env lines)."""

    version: int
    promoted_at: str
    combination: str
    candidate: int
    revoked_at: str | None
    components: list[ManifestComponent]


class ManifestSummary(_Out):
    version: int
    promoted_at: datetime
    combination: str
    candidate: int
    reason: str
    revoked_at: datetime | None

    @classmethod
    def of(cls, kg: models.KnownGood) -> ManifestSummary:
        return cls(version=kg.version, promoted_at=kg.promoted_at,
                   combination=kg.combination_hash, candidate=kg.candidate_id, reason=kg.reason,
                   revoked_at=kg.revoked_at)


class ManifestList(_Out):
    items: list[ManifestSummary]


# Testbeds -----------------------------------------------------------------------------------


class TestbedOut(_Out):
    __test__ = False  # not a pytest test class, despite the name

    name: str
    driver: str
    role: str
    leased_by_run_id: int | None
    lease_expires_at: datetime | None

    @classmethod
    def of(cls, bed: models.Testbed) -> TestbedOut:
        return cls(name=bed.name, driver=bed.driver, role=bed.role,
                   leased_by_run_id=bed.leased_by_run_id, lease_expires_at=bed.lease_expires_at)


class TestbedList(_Out):
    __test__ = False

    items: list[TestbedOut]


# Upstream tracking: webhook deliveries and per-component tracking state ---------------------


class WebhookAnswer(_Out):
    """The answer to a webhook: ``accepted`` (stored, queued), ``duplicate`` (seen before) or
    ``ignored: <reason>`` (stored in the delivery log, nothing to do)."""

    status: str
    delivery: int | None = None


class DeliveryOut(_Out):
    id: int
    source: str
    event: str
    received_at: datetime
    state: str = Field(description="pending (stored, not processed yet) or processed")
    outcome: str = Field(description="what processing did, or why the delivery was ignored")
    project: str | None
    ref: str | None
    component: str | None
    attempts: int
    replays: int = Field(description="redeliveries answered 'duplicate'")
    last_replay_at: datetime | None
    processed_at: datetime | None

    @classmethod
    def of(cls, d: models.Delivery) -> DeliveryOut:
        return cls(id=d.id, source=d.source, event=d.event, received_at=d.received_at,
                   state=d.state, outcome=d.outcome, project=d.project, ref=d.ref,
                   component=d.component.name if d.component else None, attempts=d.attempts,
                   replays=d.replays, last_replay_at=d.last_replay_at,
                   processed_at=d.processed_at)


class RejectionOut(_Out):
    """Refused deliveries (bad signature, malformed JSON…): counted, never stored."""

    source: str
    reason: str
    count: int
    last_at: datetime


class DeliveryList(_Out):
    items: list[DeliveryOut]
    rejected: list[RejectionOut]


class DeliveryDetail(DeliveryOut):
    headers: dict[str, Any]
    payload: Any


class TrackingOut(_Out):
    """How tracking sees one component: its branch head, pause, and polling health."""

    component: str
    source: str
    project: str | None
    branch: str
    head_sha: str | None
    head_seen_at: datetime | None
    head_seen_via: str | None
    paused: bool
    paused_reason: str | None
    poll_interval_s: int | None
    next_poll_at: datetime | None
    last_polled_at: datetime | None
    poll_failures: int
    last_error: str


# Autoholds ----------------------------------------------------------------------------------


class HoldRequest(BaseModel):
    """Keep the testbed of the next failed or regressed run that matches, for inspection.

    ``candidate_id`` and ``component`` narrow what matches (both: a run of that candidate, which
    must change that component); neither: the next failing run of any candidate.
    """

    model_config = ConfigDict(extra="forbid")

    candidate_id: int | None = Field(default=None, ge=1)
    component: str | None = Field(default=None, max_length=63)
    duration: str = Field(default="2h", max_length=32,
                          description="how long a caught testbed is kept, e.g. 30m, 2h, 1d")
    reason: str = Field(default="", max_length=2000)


class HoldOut(_Out):
    id: int
    state: str = Field(description="armed, holding, releasing or released")
    candidate_id: int | None
    component: str | None
    duration_s: int
    reason: str
    requested_by: str
    created_at: datetime
    run_id: int | None = Field(description="the failed run whose testbed is kept")
    testbed: str | None
    tag: str | None
    commands: list[str] = Field(description="how to enter the kept testbed, and release it")
    held_at: datetime | None
    expires_at: datetime | None
    released_at: datetime | None
    released_by: str | None
    torn_down_at: datetime | None

    @classmethod
    def of(cls, hold: models.Autohold) -> HoldOut:
        return cls(id=hold.id, state=hold.state, candidate_id=hold.candidate_id,
                   component=hold.component, duration_s=hold.duration_s, reason=hold.reason,
                   requested_by=hold.requested_by, created_at=hold.created_at,
                   run_id=hold.run_id, testbed=hold.testbed, tag=hold.tag,
                   commands=[str(c) for c in hold.commands], held_at=hold.held_at,
                   expires_at=hold.expires_at, released_at=hold.released_at,
                   released_by=hold.released_by, torn_down_at=hold.torn_down_at)


class HoldList(_Out):
    items: list[HoldOut]


# A database id in a path: at least 1 and within a 32-bit INTEGER column, so an absurd id is a
# 422 from validation (or a 404), never an overflow inside the database driver.
DB_ID_MAX = 2**31 - 1


def json_error(description: str) -> dict[str, Any]:
    """An error documented as JSON for a route whose success is text: FastAPI's ``model`` would
    document it under the route's own media type (text/plain)."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
