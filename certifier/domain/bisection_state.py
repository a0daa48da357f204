"""What culprit finding records on a candidate: its ranges, every step, its result.

The search itself is :mod:`certifier.domain.bisection`; this is its memory between reconcile
passes, stored as JSON in ``Candidate.bisection``. :meth:`Record.as_dict` writes exactly the
shape earlier versions wrote (keys a step gains later, ``failures`` and ``withdrawn``, appear
only once set), and :meth:`Record.read` reads any stored value back without raising: missing or
ill-typed keys take their empty value, and a value that is no record at all reads as an
``unreadable`` search, which the pipeline stops rather than trusts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RUNNING, FOUND, INCONCLUSIVE, STOPPED = "running", "found", "inconclusive", "stopped"
UNREADABLE = "unreadable"


def _when(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strs(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _map(value: object) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One bisect run: what it tested and, once finished, its verdict."""

    run: int
    phase: str  # reproduce | swap | bisect
    component: str
    sha: str
    combination: Mapping[str, str]
    purpose: str = ""
    retry: int = 0
    verdict: str | None = None  # None: not finished
    finished_at: datetime | None = None
    failures: tuple[str, ...] | None = None  # "kind:subject" of each failure; None: not read
    withdrawn: bool = False  # taken back before it started (culprit finding stopped)
    busy: bool = False  # an infra error only because the testbed was too busy

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run": self.run, "phase": self.phase, "component": self.component, "sha": self.sha,
            "combination": dict(self.combination), "verdict": self.verdict,
            "finished_at": _iso(self.finished_at), "retry": self.retry,
            "purpose": self.purpose}
        if self.failures is not None:
            out["failures"] = list(self.failures)
        if self.withdrawn:
            out["withdrawn"] = True
        if self.busy:
            out["busy"] = True
        return out

    @classmethod
    def read(cls, raw: Mapping[Any, Any]) -> StepRecord:
        failures = raw.get("failures")
        return cls(
            run=_int(raw.get("run")) or 0, phase=str(raw.get("phase") or ""),
            component=str(raw.get("component") or ""), sha=str(raw.get("sha") or ""),
            combination={str(k): str(v) for k, v in _map(raw.get("combination")).items()},
            purpose=str(raw.get("purpose") or ""), retry=_int(raw.get("retry")) or 0,
            verdict=str(raw["verdict"]) if raw.get("verdict") else None,
            finished_at=_when(raw.get("finished_at")),
            failures=_strs(failures) if failures is not None else None,
            withdrawn=bool(raw.get("withdrawn")), busy=raw.get("busy") is True)


@dataclass(frozen=True, slots=True)
class CulpritRecord:
    """The commit found: ``component`` broke at ``sha``; ``carriers``: the commits that carry
    it (the culprit up to the rejected candidate's), held back while a head is one of them."""

    component: str
    sha: str
    last_good: str
    evidence: tuple[int, ...] = ()
    explanation: str = ""
    together: tuple[str, ...] = ()
    carriers: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"component": self.component, "sha": self.sha, "last_good": self.last_good,
                "evidence": list(self.evidence), "explanation": self.explanation,
                "together": list(self.together), "carriers": list(self.carriers)}

    @classmethod
    def read(cls, raw: Mapping[Any, Any]) -> CulpritRecord:
        evidence = raw.get("evidence")
        return cls(
            component=str(raw.get("component") or ""), sha=str(raw.get("sha") or ""),
            last_good=str(raw.get("last_good") or ""),
            evidence=tuple(r for r in (_int(e) for e in evidence) if r is not None)
            if isinstance(evidence, list) else (),
            explanation=str(raw.get("explanation") or ""), together=_strs(raw.get("together")),
            carriers=_strs(raw.get("carriers")))


@dataclass(frozen=True, slots=True)
class Record:
    """A candidate's culprit finding as stored."""

    status: str  # running | found | inconclusive | stopped (| unreadable)
    known_good: int | None  # the known-good it searches from
    failed_run: int | None  # the run that rejected the candidate
    started_at: datetime | None = None
    finished_at: datetime | None = None
    ranges: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # oldest first
    steps: tuple[StepRecord, ...] = ()
    result: CulpritRecord | None = None
    reason: str | None = None  # why it was inconclusive or stopped

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "known_good": self.known_good,
                "failed_run": self.failed_run, "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at),
                "ranges": {name: list(commits) for name, commits in self.ranges.items()},
                "steps": [s.as_dict() for s in self.steps],
                "result": self.result.as_dict() if self.result is not None else None,
                "reason": self.reason}

    @classmethod
    def read(cls, raw: object) -> Record:
        if not isinstance(raw, Mapping):
            shown = repr(raw)
            return cls(UNREADABLE, None, None, reason="the stored culprit finding cannot be "
                       "read: " + (shown if len(shown) <= 200 else shown[:199] + "…"))
        steps = raw.get("steps")
        result = raw.get("result")
        return cls(
            status=str(raw.get("status") or UNREADABLE), known_good=_int(raw.get("known_good")),
            failed_run=_int(raw.get("failed_run")), started_at=_when(raw.get("started_at")),
            finished_at=_when(raw.get("finished_at")),
            ranges={str(n): _strs(c) for n, c in _map(raw.get("ranges")).items()},
            steps=tuple(StepRecord.read(s) for s in steps if isinstance(s, Mapping))
            if isinstance(steps, list) else (),
            result=CulpritRecord.read(result) if isinstance(result, Mapping) else None,
            reason=str(raw["reason"]) if raw.get("reason") else None)
