"""Judging one run: its checks, its tool health, and its numbers against the known-good's.

Three gates, from coarse to fine:

* **Checks and fixed limits**: a failed check (a host unreachable, a resource lost on upgrade) or
  an operator's limit such as ``bandwidth.throughput_gbps >= 5`` fails the run outright.
* **The margin**: a measurement worse than the known-good's median by more than a configured
  margin (percent *and* absolute floor, so microsecond jitter on a 50 µs ping does not reject
  anyone) regresses the run at once. It catches gross breakage from a single run, and it is the
  only numeric gate while the known-good has too few runs for statistics.
* **The statistical detector** (:mod:`certifier.domain.detector`): once the known-good has at
  least ``min_baseline`` runs on the testbed, every soak run tests the candidate's runs so far
  against them — rank tests calibrated for the whole soak, a practical floor, Holm across
  series — and a regression found there is explained with medians, the shift and its interval,
  the p-value against its level, and the run where the change began.

An **A/B run** (one that measured a control deployment of the known-good beside the candidate,
in rounds) is judged against those contemporaneous controls instead of the margin and the
history detector: a gate or bisect run by :func:`certifier.domain.abtest.judge_gate` (paired,
noise-aware, sequential), a soak run by :func:`certifier.domain.absoak.judge_soak` over the
candidate's soak runs so far. A busy host slows both sides alike, so what it does to the numbers
cancels; history only adds evidence about each series' noise. Checks and fixed limits count as
always.
"""

from __future__ import annotations

import operator
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from certifier.domain import absoak, abtest
from certifier.domain.detector import (
    DetectorPolicy,
    Series,
    as_factor,
    fmt_change,
    judge_candidate,
)
from certifier.domain.results import Better, Measurement, Side, SuiteResult


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    REGRESSED = "regressed"
    INFRA_ERROR = "infra_error"


class RunKind(StrEnum):
    GATE = "gate"
    SOAK = "soak"
    BASELINE = "baseline"
    BISECT = "bisect"


UNREADABLE = "unreadable"  # the kind of an excuse read back from a shape no version wrote


@dataclass(frozen=True, slots=True)
class Excuse:
    """One reason, in plain words, why something is not (yet) good; data carries the figures."""

    kind: str
    subject: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message,
                "data": dict(self.data)}

    @classmethod
    def read(cls, raw: object) -> Excuse:
        """A stored excuse, whatever shape it was stored in: one this version cannot read
        becomes an excuse that says so (kind ``unreadable``), never an error on a page."""
        if isinstance(raw, Mapping) and isinstance(raw.get("kind"), str) \
                and isinstance(raw.get("message"), str):
            data = raw.get("data")
            return cls(raw["kind"], str(raw.get("subject") or ""), raw["message"],
                       dict(data) if isinstance(data, Mapping)
                       else {} if data is None else {"stored": data})
        shown = repr(raw)
        return cls(UNREADABLE, "stored excuse",
                   "an excuse stored in a shape this version cannot read: "
                   + (shown if len(shown) <= 200 else shown[:199] + "…"), {"stored": raw})


@dataclass(frozen=True, slots=True)
class Margin:
    """How much worse than the baseline a metric may get: both limits must be exceeded."""

    max_worse_pct: float = 20.0
    min_abs: float = 0.0


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}
_LIMIT_RE = re.compile(
    r"^\s*([a-z_]+)\.([a-z0-9_]+)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$"
)


@dataclass(frozen=True, slots=True)
class FixedLimit:
    """An operator's absolute requirement, e.g. ``bandwidth.throughput_gbps >= 5``."""

    suite: str
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> FixedLimit:
        match = _LIMIT_RE.match(text)
        if not match:
            raise ValueError(
                f"not a limit: {text!r} (write it as suite.metric OP number, "
                "e.g. 'bandwidth.throughput_gbps >= 5')"
            )
        suite, metric, op, value = match.groups()
        return cls(suite, metric, op, float(value))

    def __str__(self) -> str:
        return f"{self.suite}.{self.metric} {self.op} {self.value:g}"

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)


@dataclass(frozen=True, slots=True)
class JudgementPolicy:
    default_margin: Margin = Margin()
    margins: Mapping[str, Margin] = field(default_factory=dict)  # "suite.metric" → margin
    limits: tuple[FixedLimit, ...] = ()
    detector: DetectorPolicy | None = None  # None: the margin is the only numeric gate
    ab: abtest.ABPolicy | None = None  # None: A/B runs are judged like single-sided ones
    ab_soak: absoak.SoakPolicy | None = None

    def margin_for(self, suite: str, metric: str) -> Margin:
        return self.margins.get(f"{suite}.{metric}", self.default_margin)


@dataclass(frozen=True, slots=True)
class Baseline:
    """The known-good's samples per series key, and which known-good they came from."""

    label: str  # e.g. "known-good #3"
    samples: Mapping[str, list[float]]


@dataclass(frozen=True, slots=True)
class RunHistory:
    """One value per run and series, oldest first, for the statistical detector.

    ``baseline``: the known-good's newest runs on the testbed of the run being judged (its own
    soak and the control runs interleaved with later soaks, so the baseline follows the
    testbed's drift). ``candidate``: the candidate's earlier runs on that testbed; the run being
    judged is added by :func:`judge_run`.
    """

    label: str
    baseline: Mapping[str, tuple[float, ...]]
    candidate: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ABEvidence:
    """What an A/B run is judged with besides its own rounds.

    ``noise``: earlier A/B runs on the same testbed, for each series' short-term spread.
    ``soak_runs``: for a soak run, the candidate's earlier soak runs on that testbed, oldest
    first, as paired series (None: a gate or bisect run, judged on its own rounds).
    """

    noise: abtest.NoiseHistory = field(default_factory=abtest.NoiseHistory)
    soak_runs: tuple[tuple[abtest.PairedSeries, ...], ...] | None = None


UNDECIDED_SHOWN = 3  # more undecided series than this are summed up in one excuse


@dataclass(frozen=True, slots=True)
class RunJudgement:
    verdict: Verdict
    excuses: tuple[Excuse, ...]


def _describe(m: Measurement) -> str:
    labels = m.labels
    if "src" in labels and "dst" in labels:
        where = f"{labels['src']}→{labels['dst']}"
        rest = {k: v for k, v in labels.items() if k not in ("src", "dst")}
    else:
        where, rest = "", dict(labels)
    extra = ",".join(f"{k}={v}" for k, v in sorted(rest.items()))
    text = f"{m.suite} {m.metric}"
    if where:
        text += f" {where}"
    if extra:
        text += f" ({extra})"
    return text


def _worse_pct(value: float, base: float, better: Better) -> float:
    """How much worse ``value`` is than ``base`` in percent of ``base`` (negative = better)."""
    delta = (base - value) if better is Better.HIGHER else (value - base)
    if base == 0:
        return 0.0 if delta <= 0 else float("inf")
    return 100.0 * delta / abs(base)


def compare_with_baseline(
    measurements: Iterable[Measurement], baseline: Baseline, policy: JudgementPolicy
) -> list[Excuse]:
    """Excuses for each series whose candidate median is worse than the baseline's by the margin."""
    grouped: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        grouped[m.key].append(m)
    excuses: list[Excuse] = []
    for key, samples in sorted(grouped.items()):
        base_values = baseline.samples.get(key)
        if not base_values:
            continue
        first = samples[0]
        value = statistics.median(s.value for s in samples)
        base = statistics.median(base_values)
        margin = policy.margin_for(first.suite, first.metric)
        worse = _worse_pct(value, base, first.better)
        if worse > margin.max_worse_pct and abs(value - base) > margin.min_abs:
            change = -worse if first.better is Better.HIGHER else worse
            shown = fmt_change(change, "%") if as_factor(change) else f"{change:+.1f} %"
            excuses.append(
                Excuse(
                    kind="regression",
                    subject=key,
                    message=(
                        f"{_describe(first)}: {value:.4g} {first.unit} vs {baseline.label} "
                        f"median {base:.4g} {first.unit} ({shown}; allowed "
                        f"{margin.max_worse_pct:g} % worse)"
                    ),
                    data={"suite": first.suite, "metric": first.metric,
                          "labels": dict(first.labels), "value": value, "baseline": base,
                          "baseline_n": len(base_values), "worse_pct": worse,
                          "unit": first.unit, "better": str(first.better)},
                )
            )
    return excuses


def compare_with_history(measurements: Iterable[Measurement], history: RunHistory,
                         detector: DetectorPolicy) -> list[Excuse]:
    """Regression excuses from the detector: the candidate's runs so far, this one included,
    against the known-good's runs, for every series with enough baseline runs."""
    grouped: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        grouped[m.key].append(m)
    series: list[Series] = []
    for key, samples in sorted(grouped.items()):
        base = history.baseline.get(key, ())
        if len(base) < detector.min_baseline:
            continue
        first = samples[0]
        this_run = statistics.median(s.value for s in samples)
        series.append(Series(first.suite, first.metric, first.unit, first.better, tuple(base),
                             (*history.candidate.get(key, ()), this_run), dict(first.labels)))
    if not series:
        return []
    return judge_candidate(series, detector, baseline_label=history.label).excuses()


def check_limits(measurements: Iterable[Measurement], limits: Iterable[FixedLimit]) -> list[Excuse]:
    excuses: list[Excuse] = []
    ms = list(measurements)
    for limit in limits:
        for m in ms:
            if (m.suite, m.metric) == (limit.suite, limit.metric) and not limit.holds(m.value):
                excuses.append(
                    Excuse(
                        kind="limit",
                        subject=m.key,
                        message=f"{_describe(m)}: {m.value:.4g} {m.unit} breaks '{limit}'",
                        data={"limit": str(limit), "value": m.value},
                    )
                )
    return excuses


def compare_with_controls(measurements: list[Measurement], evidence: ABEvidence,
                          policy: JudgementPolicy) -> list[Excuse]:
    """Regressions against the run's own controls first, then what cannot be decided yet (a
    few by name, the rest summed up: a soak's first runs leave most series undecidable)."""
    paired = tuple(abtest.paired_series(measurements))
    if evidence.soak_runs is None:
        verdict = abtest.judge_gate(paired, policy.ab, evidence.noise)
    else:
        verdict = absoak.judge_soak((*evidence.soak_runs, paired), policy.ab_soak)
    excuses = verdict.excuses()
    regressions = [e for e in excuses if e.kind == "regression"]
    # a series that leans worse is always named: it holds promotion (promotion.py)
    leaning = [e for e in excuses if e.kind != "regression" and e.data.get("leans_worse")]
    undecided = [e for e in excuses if e.kind != "regression" and e not in leaning]
    if len(undecided) > UNDECIDED_SHOWN:
        kind = undecided[0].kind
        needed = max((int(e.data.get("runs_needed") or 0) for e in undecided), default=0)
        stage = "at the gate; the soak goes on" if evidence.soak_runs is None else (
            f"yet (at most {needed} more soak run{'s' if needed != 1 else ''} needed)")
        names = ", ".join(e.subject for e in undecided[:UNDECIDED_SHOWN])
        undecided = [Excuse(kind, "series", (
            f"cannot decide {len(undecided)} series {stage}: {names} and "
            f"{len(undecided) - UNDECIDED_SHOWN} more"),
            {"series": [e.subject for e in undecided], "runs_needed": needed})]
    return [*regressions, *leaning, *undecided]


def _round_medians(measurements: list[Measurement]) -> list[Measurement]:
    """An A/B run's candidate values, one per series: the median over its rounds. A fixed limit
    holds for the candidate, not for one short round of it; a single-sided run is unchanged."""
    if not any(m.round for m in measurements):
        return measurements
    grouped: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        grouped[m.key].append(m)
    return [replace(ms[0], value=statistics.median(m.value for m in ms))
            for ms in grouped.values()]


def judge_run(
    results: Iterable[SuiteResult], baseline: Baseline | None, policy: JudgementPolicy,
    history: RunHistory | None = None, ab: ABEvidence | None = None,
) -> RunJudgement:
    """The verdict of one run.

    A failed check or a broken fixed limit in a suite that ran cleanly is direct evidence against
    the candidate, and it wins: when a commit cuts a host off, ping's reachability check fails and
    iperf3 cannot connect either, and retrying the tool would only delay the rejection. Otherwise
    tool or testbed trouble wins (``infra_error`` says nothing about the candidate, and the
    measurements are incomplete); then regressions. An A/B run given its ``ab`` evidence (and
    an A/B policy) is judged against its own controls only; otherwise against the baseline: the
    margin first, then, given the run ``history`` and a detector in the policy, the statistical
    test. With no baseline (no known-good yet: bootstrap) only checks and fixed limits count.
    Margins and limits read the candidate's side only: control rows are the known-good's.
    """
    results = list(results)
    infra = [r for r in results if r.infra_error]
    clean = [r for r in results if not r.infra_error]
    both = [m for r in clean for m in r.measurements]
    measurements = [m for m in both if m.side is Side.CANDIDATE]
    failed = [
        Excuse("check", f"{c.suite}.{c.name}",
               f"{c.suite} check '{c.name}' failed" + (f": {c.message}" if c.message else ""))
        for r in clean
        for c in r.checks
        if not c.passed
    ]
    failed += check_limits(_round_medians(measurements), policy.limits)
    infra_excuses = tuple(
        Excuse("infra_error", r.suite, f"{r.suite}: {r.infra_error}") for r in infra)
    if failed:
        return RunJudgement(Verdict.FAILED, (*failed, *infra_excuses))
    if infra:
        return RunJudgement(Verdict.INFRA_ERROR, infra_excuses)
    if ab is not None and policy.ab is not None and any(m.side is Side.CONTROL for m in both):
        found = compare_with_controls(both, ab, policy)
        regressed = any(e.kind == "regression" for e in found)
        return RunJudgement(Verdict.REGRESSED if regressed else Verdict.PASSED, tuple(found))
    if baseline is not None:
        regressions = compare_with_baseline(measurements, baseline, policy)
        if regressions:
            return RunJudgement(Verdict.REGRESSED, tuple(regressions))
    if history is not None and policy.detector is not None:
        regressions = compare_with_history(measurements, history, policy.detector)
        if regressions:
            return RunJudgement(Verdict.REGRESSED, tuple(regressions))
    return RunJudgement(Verdict.PASSED, ())
