"""Request and response bodies of the v1 API, and their construction.

Responses are built explicitly (``of``), never by serialising ORM objects, so the wire format
is the contract published in OpenAPI and a model change cannot leak a column. What the
dashboard shows too (candidates, runs, excuses, culprit finding) is built from the read
model's frozen views (:mod:`certifier.pipeline.read`), the ones its templates are built from,
so the API and the pages give one answer.
Lists are objects with an ``items`` array, so fields (paging, totals) can be added later without
breaking clients.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from certifier.api.schema_base import Out as _Out
from certifier.api.schemas_tracking import (
    DeliveryDetail as DeliveryDetail,
)
from certifier.api.schemas_tracking import (
    DeliveryList as DeliveryList,
)
from certifier.api.schemas_tracking import (
    DeliveryOut as DeliveryOut,
)
from certifier.api.schemas_tracking import (
    RejectionOut as RejectionOut,
)
from certifier.api.schemas_tracking import (
    TrackingOut as TrackingOut,
)
from certifier.api.schemas_tracking import (
    WebhookAnswer as WebhookAnswer,
)
from certifier.db import models
from certifier.domain.environment import judged_figures
from certifier.limits import ID_MAX, MAX_DURATION, PROJECT_MAX, URL_MAX, CommitTime, DbId
from certifier.pipeline import read
from certifier.settings import ComponentConfig

SHA_PATTERN = r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$"
# Free text that is stored: PostgreSQL text cannot hold a NUL byte (psycopg raises DataError).
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"  # and something other than white space


class FieldError(_Out):
    """One invalid field of a request; its value is never echoed back."""

    loc: list[str | int] = Field(description="where: path, query, header or body, then the keys")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. missing, string_too_long")


class ErrorOut(_Out):
    """Every 4xx (and 5xx) answer: one sentence, plus the invalid fields of a 422."""

    detail: str = Field(description="what went wrong, in words")
    errors: list[FieldError] = Field(default_factory=list,
                                     description="the invalid fields (validation errors only)")


class HealthOut(_Out):
    status: str


class ExcuseOut(_Out):
    """One plain-words reason why a candidate or run is not (yet) good."""

    kind: str
    subject: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def many(cls, excuses: Iterable[read.ExcuseView]) -> list[ExcuseOut]:
        return [cls(kind=e.kind, subject=e.subject, message=e.message, data=dict(e.data))
                for e in excuses]


# Components and commits ---------------------------------------------------------------------


class CommitOut(_Out):
    component: str
    sha: str
    title: str
    author: str
    committed_at: datetime | None
    first_seen_at: datetime
    seen_via: str
    gone_upstream: bool = Field(
        default=False, description="upstream no longer has it (a force-push took it off the "
        "branch, or a worker found it missing)")
    gone_upstream_at: datetime | None = Field(default=None,
                                              description="when Certifier noticed it was gone")

    @classmethod
    def of(cls, commit: models.Commit, component: str) -> CommitOut:
        return cls(component=component, sha=commit.sha, title=commit.title, author=commit.author,
                   committed_at=commit.committed_at, first_seen_at=commit.first_seen_at,
                   gone_upstream=commit.gone_at is not None, gone_upstream_at=commit.gone_at,
                   seen_via=commit.seen_via)


class CommitList(_Out):
    items: list[CommitOut]


def _string_part(schema: dict[str, Any]) -> dict[str, Any]:
    """The string alternative of a nullable field's schema (or the schema itself)."""
    parts = [p for p in schema.get("anyOf", ())
             if isinstance(p, dict) and p.get("type") == "string"]
    return parts[0] if parts else schema


# JSON Schema cannot compare times: this pattern names the years in range at any UTC offset.
_SAFE_YEARS = r"^(?:190[1-9]|19[1-9][0-9]|20[0-9]{2}|21[0-8][0-9]|219[0-8])-"


class CommitReport(BaseModel):
    """A commit seen on a component's branch, reported by a script or a CI job."""

    model_config = ConfigDict(extra="forbid")

    sha: str = Field(pattern=SHA_PATTERN, description="full commit id: 40 or 64 hex digits")
    title: str = Field(default="", max_length=10_000, pattern=NO_NUL,
                       description="stored up to 500 characters")
    author: str = Field(default="", max_length=1_000, pattern=NO_NUL,
                        description="stored up to 200 characters")
    committed_at: CommitTime | None = Field(
        default=None, description="with a UTC offset; from 1900 to before 2200",
        json_schema_extra=lambda schema: _string_part(schema).update(pattern=_SAFE_YEARS))


class CommitReported(_Out):
    commit: CommitOut
    created: bool


# What the validators of ComponentConfig accept, as JSON Schema (ECMA regexes), so that the
# published schema says which bodies are valid; each is as strict as its validator or stricter.
_COMPONENT_FIELDS: dict[str, dict[str, Any]] = {
    "name": {"pattern": r"^[a-z][a-z0-9_-]{0,62}$"},
    "url": {"minLength": 1, "maxLength": URL_MAX, "pattern":
            r"^(?![A-Za-z][A-Za-z0-9+.-]*::)(?!-)"
            r"(?!(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*:[^/?#]*@)[^\u0000\r\n]+$"},
    "branch": {"pattern": r"^(?!.*\.\.)(?!/)(?!-)(?!.*//)[A-Za-z0-9._/-]{0,199}[A-Za-z0-9_-]$"},
    "project": {"maxLength": PROJECT_MAX,
                "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_-]*(?:/[A-Za-z0-9_][A-Za-z0-9_-]*){0,23}$"},
    "api_url": {"maxLength": URL_MAX - 8, "pattern": r"^https?://[!-~]+$"},
    "webhook_secret_env": {"pattern": r"^[A-Z][A-Z0-9_]{0,93}_SECRET$"},
}
# Durations as JSON Schema can say them: 5 s to 999 d in short form, or seconds.
_POLL_INTERVAL = [
    {"type": "string", "pattern": r"^(?:[5-9]|[1-9][0-9]{1,2})s$|^[1-9][0-9]{0,2}[mhd]$"},
    {"type": "integer", "minimum": 5, "maximum": int(MAX_DURATION.total_seconds())},
    {"type": "null"},
]


def _document_component(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    for hidden in ("recipe", "token_env"):  # refused over the API: not part of its contract
        properties.pop(hidden, None)
    for name, constraints in _COMPONENT_FIELDS.items():
        _string_part(properties[name]).update(constraints)
    properties["poll_interval"]["anyOf"] = _POLL_INTERVAL
    properties["poll_interval"]["default"] = "5m"


class ComponentRequest(ComponentConfig):
    """A component registered over the API: the config file's fields, minus two.

    Registering needs an ``admin`` token, but a token is not a root login: a body must not
    choose what runs as root on a worker (``recipe``: a folder of executables) nor which forge
    token goes where (``token_env``, with ``api_url`` pointing anywhere). Both are the
    operator's, in the config file. Its ``url`` and ``api_url`` must pass the config's
    ``sources`` policy.
    """

    model_config = ConfigDict(json_schema_extra=_document_component)

    @model_validator(mode="after")
    def _operator_only(self) -> ComponentRequest:
        given = [f for f in ("recipe", "token_env") if getattr(self, f) is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} can only be set in the config file")
        return self


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


RunOut = read.RunRow
"""A run in a candidate's answer: the read model's own record, served as it is."""


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
    side: str = Field(description="candidate, or control: the known-good measured beside it "
                                  "in an A/B run")
    round: int = Field(description="the A/B round that measured it (0 in a single-sided run)")
    events: int | None = Field(description="for loss-type series: events lost (of trials)")
    trials: int | None = Field(description="for loss-type series: trials (packets sent)")


class SeriesOut(_Out):
    """One series of the run, both sides round by round (null where a side did not measure it
    in that round)."""

    key: str
    suite: str
    metric: str
    labels: dict[str, str]
    unit: str
    better: str
    rounds: list[int]
    candidate: list[float | None]
    control: list[float | None]


class StateChangeOut(_Out):
    key: str
    kind: str = Field(description="changed, removed or added")
    before: str | None = Field(description="the value before the upgrade (known-good)")
    after: str | None = Field(description="the value after the upgrade")
    fresh: str | None = Field(description="the value on a fresh deployment of the candidate")
    note: str | None = Field(description="the candidate's upgrade note that declares it, if any")


class FileChangeOut(_Out):
    path: str = Field(description="relative to the component's state folder")
    kind: str = Field(description="changed, removed or added")
    before: str | None = Field(description="sha256 prefix before the upgrade")
    after: str | None = Field(description="sha256 prefix after the upgrade")
    diff: list[str] = Field(description="changed lines of a text file (-old, +new)")


class StateDiffOut(_Out):
    """One component's state across the upgrade (docs/recipes.md, "State snapshots")."""

    component: str
    source: str = Field(description="hook (the recipe's snapshot hook: judged), files "
                                    "(configuration-like files: shown, not judged) or none")
    changes: list[StateChangeOut]
    files: list[FileChangeOut]
    unchanged: int
    problems: list[str]

    @classmethod
    def many(cls, stored: list[Any] | None) -> list[StateDiffOut]:
        return [cls.model_validate(item) for item in stored or [] if isinstance(item, dict)]


class RunDetail(RunOut):
    candidate_id: int
    worker: str | None
    dispatched_at: datetime | None
    tool_versions: dict[str, Any]
    rounds: int = Field(description="A/B rounds measured (candidate and control interleaved); "
                                    "0: a single-sided run")
    checks: list[CheckOut]
    measurements: list[MeasurementOut]
    state_diff: list[StateDiffOut] = Field(
        description="the upgrade suite's diff of each component's state snapshots")
    series: list[SeriesOut] = Field(description="the measurements per series, by side and round")
    log: str
    environment: dict[str, Any] | None = Field(
        default=None, description="the host during the run: pressure per suite and combined "
        "(host), the calibration probes at start and end (probes, each with its background "
        "pressure), the figures the environment check judged (judged), and for a run with "
        "controls judged despite figures out of the testbed's usual range, those figures in "
        "words (unusual)")
    too_busy: bool = Field(default=False, description="the environment check refused the run: "
                           "a figure out of the testbed's usual range (single-sided runs) or "
                           "beyond a ceiling (any run); it is infra_error unless a check "
                           "failed")

    @classmethod
    def of(cls, run: models.Run) -> RunDetail:
        return cls(
            **dict(read.run_row(run)),
            candidate_id=run.candidate_id, worker=run.worker, dispatched_at=run.dispatched_at,
            tool_versions=dict(run.tool_versions),
            checks=[CheckOut(suite=c.suite, name=c.name, passed=c.passed, message=c.message)
                    for c in run.checks],
            rounds=run.rounds,
            measurements=[
                MeasurementOut(suite=m.suite, metric=m.metric, labels=dict(m.labels),
                               value=m.value, unit=m.unit, better=m.better, side=m.side,
                               round=m.round, events=m.events, trials=m.trials)
                for m in run.measurements
            ],
            state_diff=StateDiffOut.many(run.state_diff),
            series=[SeriesOut(key=s.key, suite=s.suite, metric=s.metric, labels=dict(s.labels),
                              unit=s.unit, better=s.better, rounds=list(s.rounds),
                              candidate=list(s.candidate), control=list(s.control))
                    for s in read.ab_series(run.measurements)],
            log=run.log,
            environment=(None if run.environment is None
                         else {**run.environment, "judged": judged_figures(run.environment)}),
            too_busy=run.too_busy,
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
    retried_at: datetime | None = Field(
        default=None, description="when a person last retried it after its infra retries ran "
        "out; infra errors before count no more")
    excuses: list[ExcuseOut]

    @classmethod
    def of(cls, cand: read.CandidateSummary) -> CandidateOut:
        return cls(id=cand.id, state=cand.state, combination=cand.combination_hash,
                   base_version=cand.base_version, changed=list(cand.changed),
                   created_at=cand.created_at, updated_at=cand.updated_at,
                   gating_started_at=cand.gating_started_at,
                   soak_started_at=cand.soak_started_at, finished_at=cand.finished_at,
                   retried_at=cand.retried_at, excuses=ExcuseOut.many(cand.excuses))

    @classmethod
    def stored(cls, cand: models.Candidate) -> CandidateOut:
        """``cand`` with the excuses stored on it: lists, and the answers of actions."""
        return cls.of(read.candidate_summary(cand))


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


class BadMarkOut(_Out):
    """A person marked the candidate's combination bad: it is never formed or promoted again."""

    at: datetime
    by: str = Field(description="token:<name> or cli:<user>")
    reason: str

    @classmethod
    def of(cls, mark: read.BadMark | None) -> BadMarkOut | None:
        if mark is None:
            return None
        return cls(at=mark.at, by=mark.by, reason=mark.reason)


class BisectStepOut(_Out):
    """One run of culprit finding: the combination it tested and its verdict."""

    run: int
    phase: str = Field(description="reproduce: the rejected combination itself, run again; "
                                   "swap: one changed component set back to its known-good "
                                   "commit; bisect: one commit inside the guilty component's range")
    component: str
    sha: str = Field(description="the commit of `component` this step tested")
    purpose: str
    combination: dict[str, str] = Field(description="component → sha: what the run deployed")
    verdict: str | None = Field(description="null while the run has not finished")
    withdrawn: bool = Field(description="taken back before it started: culprit finding stopped")


class CulpritOut(_Out):
    component: str
    sha: str = Field(description="the first bad commit")
    last_good: str = Field(description="the commit before it; later candidates hold it there")
    evidence: list[int] = Field(description="run ids that show it: a pass at last_good, a "
                                            "failure at sha")
    explanation: str
    together: list[str] = Field(description="other components whose swap-back passed too: the "
                                            "failure needs them together")


class BisectionOut(_Out):
    """Culprit finding after the candidate was rejected (docs/architecture.md)."""

    status: str = Field(description="running, found, inconclusive or stopped")
    known_good: int | None = Field(description="the known-good it searched from")
    failed_run: int | None = Field(description="the run that rejected the candidate")
    started_at: datetime | None
    finished_at: datetime | None
    commits: dict[str, int] = Field(description="changed component → commits in its range")
    steps: list[BisectStepOut]
    culprit: CulpritOut | None
    reason: str | None = Field(description="why it was inconclusive or stopped")

    @classmethod
    def of(cls, found: read.BisectionView | None) -> BisectionOut | None:
        if found is None:
            return None
        culprit = found.culprit
        return cls(
            status=found.status, known_good=found.known_good, failed_run=found.failed_run,
            started_at=found.started_at, finished_at=found.finished_at,
            commits=dict(found.commits), reason=found.reason,
            steps=[BisectStepOut(run=s.run_id, phase=s.phase, component=s.component, sha=s.sha,
                                 purpose=s.purpose, combination=dict(s.combination),
                                 verdict=s.verdict, withdrawn=s.withdrawn)
                   for s in found.steps],
            culprit=CulpritOut(component=culprit.component, sha=culprit.sha,
                               last_good=culprit.last_good, evidence=list(culprit.evidence),
                               explanation=culprit.explanation, together=list(culprit.together))
            if culprit is not None else None)


class CandidateDetail(CandidateOut):
    components: list[CombinationEntry]
    runs: list[RunOut]
    waivers: list[WaiverOut] = Field(default_factory=list)
    marked_bad: BadMarkOut | None = Field(default=None,
                                          description="set when its combination is marked bad")
    bisection: BisectionOut | None = Field(
        default=None, description="culprit finding after a rejection (null: none ran)")

    @classmethod
    def detail(cls, cand: read.CandidateDetail, waivers: list[models.Waiver] | None = None,
               now: datetime | None = None) -> CandidateDetail:
        at = now or datetime.now(UTC)
        return cls(**CandidateOut.of(cand.summary).model_dump(),
                   components=[CombinationEntry(name=c.component, sha=c.sha, title=c.title)
                               for c in cand.combination],
                   runs=list(cand.runs),
                   waivers=[WaiverOut.of(w, at) for w in waivers or []],
                   marked_bad=BadMarkOut.of(cand.marked_bad),
                   bisection=BisectionOut.of(cand.bisection))


# Operator actions ---------------------------------------------------------------------------


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK,
                        description="why: kept in the audit log")


class CancelRequest(_Action):
    pass


class ComponentAction(_Action):
    """Pause or resume a component."""


class WaiveRequest(_Action):
    subject: str = Field(min_length=1, max_length=400,
                         description="the subject of a failing check or metric excuse")
    expires_in: str | None = Field(default=None, max_length=32,
                                   description="e.g. 12h, 7d; none: until the candidate ends")


class MarkBadRequest(_Action):
    pass


class RetryRequest(_Action):
    pass


class StopCulpritRequest(_Action):
    pass


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
    gone_upstream: bool = Field(
        default=False, description="upstream no longer has the commit (force-pushed away); "
        "Certifier's archive still deploys it")
    gone_upstream_at: str | None = Field(default=None,
                                         description="when Certifier noticed it was gone")


class Manifest(_Out):
    """The document an operator deploys (its JSON form; also served as YAML and env lines)."""

    version: int
    promoted_at: str
    combination: str
    candidate: int
    revoked_at: str | None = Field(description="set once revoked: do not deploy it")
    issued_at: str = Field(description="when these bytes were signed")
    expires_at: str = Field(description="the signature is not to be trusted after this; fetch "
                                        "the manifest again (it is re-signed every half of "
                                        "manifest.validity)")
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


class DiffCommit(_Out):
    sha: str
    title: str
    author: str
    committed_at: datetime | None


class ComponentChange(_Out):
    """One component that differs between two known-goods; ``commits`` newest first."""

    name: str
    from_sha: str | None = Field(description="null: the component is new in the later version")
    to_sha: str | None = Field(description="null: the component was dropped")
    commits: list[DiffCommit] = Field(description="the commits between, newest first")
    more: bool = Field(description="more commits lie between than are listed")


class ManifestDiff(_Out):
    from_version: int
    to_version: int
    changed: list[ComponentChange]


class ExcusesOut(_Out):
    """Why a candidate is not (yet) known-good, now or as of a past time."""

    candidate: int
    state: str = Field(description="the candidate's state then (or now)")
    as_of: datetime | None = Field(description="null: now, as the policy judges it now (the "
                                   "candidate page's answer, and the next reconcile pass's)")
    excuses: list[ExcuseOut]
    waived: list[str] = Field(description="excuse subjects set aside by waivers in force then")
    bisection: BisectionOut | None = Field(
        default=None, description="culprit finding after a rejection, as it stands now")


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


# Autoholds ----------------------------------------------------------------------------------


class HoldRequest(BaseModel):
    """Keep the testbed of the next failed or regressed run that matches, for inspection.

    ``candidate_id`` and ``component`` narrow what matches (both: a run of that candidate, which
    must change that component); neither: the next failing run of any candidate.
    """

    model_config = ConfigDict(extra="forbid")

    candidate_id: DbId | None = None
    component: str | None = Field(default=None, max_length=63, pattern=r"^[a-z][a-z0-9_-]*$")
    duration: str = Field(default="2h", max_length=32,
                          description="how long a caught testbed is kept, e.g. 30m, 2h, 1d")
    reason: str = Field(default="", max_length=2000, pattern=NO_NUL)


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
DB_ID_MAX = ID_MAX


def json_error(description: str) -> dict[str, Any]:
    """An error documented as JSON for a route whose success is text: FastAPI's ``model`` would
    document it under the route's own media type (text/plain)."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
