"""What a suite yields: checks (pass/fail with a message) and measurements (numbers with units).

These are the plain records that flow from a testbed run into judgement; the suites in
``workers/suites`` build them, persistence stores them, and :mod:`certifier.domain.judgement`
compares them with the known-good's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certifier.domain.snapshots import StateDiff


class Better(StrEnum):
    """Which way a metric improves; regression detection needs to know."""

    HIGHER = "higher"
    LOWER = "lower"


@dataclass(frozen=True, slots=True)
class Check:
    """One pass/fail statement about a run, e.g. "h1 reaches h2"."""

    suite: str
    name: str
    passed: bool
    message: str = ""


class Side(StrEnum):
    """Which deployment a measurement was taken on, in a run that measures both side by side.

    A run of a candidate also deploys the current known-good on a twin testbed (the *control*)
    and runs every suite on both, interleaved in rounds, so that a busy host slows both alike
    and the comparison is made within the same minutes, not against history alone.
    """

    CANDIDATE = "candidate"
    CONTROL = "control"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One number a suite measured, e.g. bandwidth from h1 to h2 in Gbit/s.

    ``side`` and ``round`` place it in an A/B run (round 0 is the first pair). ``events`` and
    ``trials`` are set for loss-type metrics whose value is a rate of countable events (ping
    packets lost of sent, UDP datagrams lost of sent): those are judged as counts, not as
    percentages against a median of zero.
    """

    suite: str
    metric: str
    value: float
    unit: str
    better: Better
    labels: dict[str, str] = field(default_factory=dict)
    side: Side = Side.CANDIDATE
    round: int = 0
    events: int | None = None
    trials: int | None = None

    @property
    def key(self) -> str:
        """Identity of the series this sample belongs to: suite, metric and sorted labels."""
        return series_key(self.suite, self.metric, self.labels)


def series_key(suite: str, metric: str, labels: dict[str, str]) -> str:
    """A stable text key for one (suite, metric, labels) series, used to pair with the baseline."""
    label_text = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    return f"{suite}.{metric}{{{label_text}}}"


@dataclass(slots=True)
class SuiteResult:
    """Everything one suite produced in one run.

    ``infra_error`` is set when the testbed or a tool failed (binary missing, timeout, garbage
    output): such a result says nothing about the candidate and must never count against it.
    """

    suite: str
    checks: list[Check] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    infra_error: str | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    log: str = ""
    state_diffs: list[StateDiff] = field(default_factory=list)  # the upgrade suite's
