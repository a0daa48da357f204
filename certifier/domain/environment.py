"""Judging a run's environment: was the testbed's host in its usual state while the run measured?

A busy machine slows every number a run measures, and a run judged on those numbers blames the
candidate for the machine. Each run therefore records host pressure during its suites and a
recipe-free calibration probe at its start and end (``workers/environment.py``,
``workers/calibration.py``). Here those figures are compared with the same testbed's earlier
runs, and a run whose environment is out of its usual range becomes ``infra_error`` with an
excuse such as "testbed too busy: cpu pressure 63 % vs usual 2 %": it is retried with backoff
and never counted against the candidate.

"Usual range" is robust: the median of the testbed's recent figures plus ``mad_k`` scaled MADs,
but never closer to the median than a floor, so that an idle history (MAD 0) does not turn a
3-point blip into "too busy". A ceiling refuses a figure whatever the history (a host 60 % of
the time short of CPU measures nothing reliably, even if it always is), and it is the only test
while the testbed has fewer than ``min_history`` runs with figures.

A run with contemporaneous controls (an A/B run: the known-good measured beside the candidate,
interleaved, in the same minutes) carries its own reference: a load both sides share is the
environment's and cancels in the comparison. Such a run is refused only beyond a ceiling
(``EnvironmentPolicy.controlled == "ceilings"``, the default); a figure merely out of the
testbed's usual range is noted with the run (:func:`assess`), and the run is left out of the
history, so a busy spell still never becomes the usual state. Single-sided runs, which have
only the history to go by, keep the usual-range test.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from certifier.domain.judgement import Excuse, RunJudgement, Verdict

MAD_SCALE = 1.4826  # a MAD times this estimates the standard deviation of normal noise


@dataclass(frozen=True, slots=True)
class Figure:
    """One judged figure: how to name it, which way is worse, its default floor and ceiling.

    ``floor`` is in the figure's own unit (percentage points for pressures) when
    ``relative`` is false, and a percentage of the usual value when it is true (probe figures,
    whose scale depends on the machine).
    """

    label: str
    unit: str
    worse: Literal["higher", "lower"]
    floor: float
    relative: bool = False
    ceiling: float | None = None


FIGURES: dict[str, Figure] = {
    # The host while nothing of ours runs: a quiet moment at the start of each probe. Only
    # other work on the machine shows here, so these carry the ceilings.
    "background_cpu_pressure_pct": Figure("cpu pressure", "%", "higher", 10.0, ceiling=50.0),
    "background_io_pressure_pct": Figure("io pressure", "%", "higher", 10.0, ceiling=50.0),
    "background_memory_pressure_pct": Figure("memory pressure", "%", "higher", 5.0,
                                             ceiling=20.0),
    # The host during the suites: our own tools load it too (iperf3 fills a core), so these are
    # judged against the testbed's history, where every run loaded it alike.
    "cpu_pressure_pct": Figure("cpu pressure during the suites", "%", "higher", 15.0),
    "io_pressure_pct": Figure("io pressure during the suites", "%", "higher", 15.0),
    "memory_pressure_pct": Figure("memory pressure during the suites", "%", "higher", 5.0,
                                  ceiling=25.0),
    "cpu_steal_pct": Figure("cpu steal", "%", "higher", 5.0, ceiling=25.0),
    "iowait_pct": Figure("iowait", "%", "higher", 10.0),
    "load_per_core": Figure("load per core", "", "higher", 1.0),
    # The calibration probe's own numbers (the mean of the start and end probes).
    "probe_rtt_ms": Figure("probe ping rtt", "ms", "higher", 200.0, relative=True),
    "probe_loss_pct": Figure("probe ping loss", "%", "higher", 2.0, ceiling=10.0),
    "probe_tcp_gbps": Figure("probe bandwidth", "Gbit/s", "lower", 40.0, relative=True),
    "probe_fio_iops": Figure("probe fio", "IOPS", "lower", 60.0, relative=True),
}
BACKGROUND = "background_"
UNUSUAL = "unusual"  # a stored environment's key: the figures :func:`assess` noted, in words
ENVIRONMENT = "environment"  # the subject of the check's excuse
HOST_FIGURES = tuple(k for k in FIGURES if not k.startswith(("probe_", BACKGROUND)))
PROBE_FIGURES = tuple(k for k in FIGURES if k.startswith("probe_"))
BACKGROUND_FIGURES = tuple(k for k in FIGURES if k.startswith(BACKGROUND))


@dataclass(frozen=True, slots=True)
class EnvironmentPolicy:
    """When a run's environment counts as out of range. ``floors`` and ``ceilings`` override
    :data:`FIGURES` per figure (a ceiling of None: none)."""

    enabled: bool = True
    window: int = 20
    min_history: int = 5
    mad_k: float = 4.0
    floors: Mapping[str, float] = field(default_factory=dict)
    ceilings: Mapping[str, float | None] = field(default_factory=dict)
    controlled: Literal["ceilings", "usual"] = "ceilings"  # runs with contemporaneous controls

    def floor(self, name: str) -> float:
        return self.floors.get(name, FIGURES[name].floor)

    def ceiling(self, name: str) -> float | None:
        return self.ceilings[name] if name in self.ceilings else FIGURES[name].ceiling


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _mean(name: str, values: list[float], found: dict[str, float]) -> None:
    if values:
        found[name] = round(statistics.fmean(values), 6)


def judged_figures(environment: Mapping[str, Any] | None) -> dict[str, float]:
    """The figures judged, from what a run stores (``runs.environment``).

    Host figures come from ``host`` (all suites combined); each probe figure, and each
    background figure (a probe's ``background`` span), is the mean of the start and end
    probes: a load that lasts shows in both, while a burst of a fraction of a second in one
    of them (seen on a shared machine: 6 % then 51 % background) is not enough to refuse a
    run. Anything missing or not a number is left out: an absent figure is never judged.
    """
    if not isinstance(environment, Mapping):
        return {}
    found: dict[str, float] = {}
    host = environment.get("host")
    if isinstance(host, Mapping):
        for name in HOST_FIGURES:
            value = _number(host.get(name))
            if value is not None:
                found[name] = value
    probes = environment.get("probes")
    probes = [p for p in probes.values() if isinstance(p, Mapping)] if isinstance(
        probes, Mapping) else []
    for name in PROBE_FIGURES:
        _mean(name, [v for p in probes if (v := _number(p.get(name))) is not None], found)
    quiet = [b for p in probes if isinstance(b := p.get("background"), Mapping)]
    for name in BACKGROUND_FIGURES:
        key = name.removeprefix(BACKGROUND)
        _mean(name, [v for b in quiet if (v := _number(b.get(key))) is not None], found)
    return found


def _fmt(value: float, unit: str) -> str:
    text = f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}" if value else "0"
    if unit == "%":
        return f"{text} %"
    return f"{text} {unit}".rstrip()


def summary_line(figures: Mapping[str, float]) -> str:
    """The judged figures in one short line, for the dashboard's run rows."""
    shown = ("background_cpu_pressure_pct", "cpu_pressure_pct", "background_io_pressure_pct",
             "cpu_steal_pct", "probe_tcp_gbps", "probe_rtt_ms", "probe_fio_iops")
    return ", ".join(f"{FIGURES[k].label} {_fmt(figures[k], FIGURES[k].unit)}"
                     for k in shown if k in figures)


def run_line(environment: Mapping[str, Any] | None) -> str:
    """A stored environment in one line for the run pages: :func:`summary_line`, then what
    was out of the testbed's usual range in a run judged against its controls."""
    line = summary_line(judged_figures(environment))
    noted = environment.get(UNUSUAL) if isinstance(environment, Mapping) else None
    if isinstance(noted, list) and noted:
        line += ("; " if line else "") + ("unusual for this testbed, so judged against its "
                                          "controls only: " + "; ".join(map(str, noted)))
    return line


@dataclass(frozen=True, slots=True)
class Deviation:
    """One figure out of range: its value, the usual value (None without history), the limit."""

    name: str
    value: float
    usual: float | None
    limit: float
    reason: Literal["usual range", "ceiling"]

    def describe(self) -> str:
        fig = FIGURES[self.name]
        text = f"{fig.label} {_fmt(self.value, fig.unit)}"
        if self.usual is not None:
            text += f" vs usual {_fmt(self.usual, fig.unit)}"
        if self.reason == "ceiling":
            text += f" (ceiling {_fmt(self.limit, fig.unit)})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.name, "value": self.value, "usual": self.usual,
                "limit": self.limit, "reason": self.reason}


def deviations(figures: Mapping[str, float], history: Sequence[Mapping[str, float]],
               policy: EnvironmentPolicy) -> list[Deviation]:
    """The figures of this run that are out of range, in :data:`FIGURES` order."""
    found: list[Deviation] = []
    for name, fig in FIGURES.items():
        value = figures.get(name)
        if value is None:
            continue
        past = [h[name] for h in history[:policy.window] if name in h]
        usual = statistics.median(past) if past else None
        ceiling = policy.ceiling(name)
        if ceiling is not None and (value > ceiling if fig.worse == "higher"
                                    else value < ceiling):
            found.append(Deviation(name, value, usual, ceiling, "ceiling"))
            continue
        if usual is None or len(past) < policy.min_history:
            continue
        spread = MAD_SCALE * statistics.median(abs(v - usual) for v in past)
        floor = policy.floor(name)
        allowed = max(policy.mad_k * spread,
                      abs(usual) * floor / 100 if fig.relative else floor)
        limit = usual + allowed if fig.worse == "higher" else usual - allowed
        if value > limit if fig.worse == "higher" else value < limit:
            found.append(Deviation(name, value, usual, limit, "usual range"))
    return found


def assess(figures: Mapping[str, float], history: Sequence[Mapping[str, float]],
           policy: EnvironmentPolicy, controlled: bool = False,
           ) -> tuple[Excuse | None, list[Deviation]]:
    """The environment check's answer for one run: the ``infra_error`` excuse that refuses it
    (None: judged on its numbers), and, for a run it does not refuse, the deviations it notes
    instead (a run with contemporaneous controls judged by ceilings only: figures out of the
    usual range, kept with the run and shown on its page; the run is kept out of the testbed's
    history). Both empty when the check is off.

    ``history``: the judged figures of the testbed's earlier runs, newest first (the newest
    ``policy.window`` are used). ``controlled``: the run measured contemporaneous controls
    (see the module's docstring).
    """
    if not policy.enabled:
        return None, []
    found = deviations(figures, history, policy)
    ceilings_only = controlled and policy.controlled == "ceilings"
    refused = [d for d in found if d.reason == "ceiling"] if ceilings_only else found
    if not refused:
        return None, found
    return Excuse("infra_error", ENVIRONMENT,
                  "testbed too busy: " + "; ".join(d.describe() for d in refused),
                  {"deviations": [d.as_dict() for d in refused],
                   "history_runs": min(len(history), policy.window)}), []


def judge_environment(figures: Mapping[str, float], history: Sequence[Mapping[str, float]],
                      policy: EnvironmentPolicy, controlled: bool = False) -> Excuse | None:
    """An ``infra_error`` excuse if the run's environment is out of range, else None
    (:func:`assess`)."""
    return assess(figures, history, policy, controlled)[0]


def only_too_busy(excuses: Sequence[Excuse]) -> bool:
    """Whether an ``infra_error`` run's only reason is the environment check ("testbed too
    busy"): such a run is waited for, never counted as an error (a testbed that also failed to
    build, say, is an error like any other)."""
    return bool(excuses) and all(e.subject == ENVIRONMENT for e in excuses)


def apply(judgement: RunJudgement, excuse: Excuse | None) -> RunJudgement:
    """The run's judgement once its environment is taken into account.

    A run judged on a host out of its usual range is ``infra_error`` with the environment's
    excuse, whether it passed or regressed: its numbers say nothing about the candidate, in
    either direction. A failed check (a host unreachable, a fixed limit, lost data) still fails:
    a busy host does not cut routes. An ``infra_error`` keeps its own excuses and gains this one.
    """
    if excuse is None or judgement.verdict is Verdict.FAILED:
        return judgement
    if judgement.verdict is Verdict.INFRA_ERROR:
        return RunJudgement(Verdict.INFRA_ERROR, (*judgement.excuses, excuse))
    return RunJudgement(Verdict.INFRA_ERROR, (excuse,))
