"""Statistical regression detection: is a candidate's series worse than the known-good's?

One series is one metric with one label set (``bandwidth.throughput_gbps{dst=h2,src=h1}``). The
candidate's runs are compared with the baseline (the known-good's runs on the same testbed) by

* a one-sided Mann-Whitney rank test, exact where there are no ties, on a log scale for
  latencies (a latency that doubles is as bad at 50 µs as at 5 ms), or Fisher's exact test on
  pooled counts for loss and errors when the caller knows events and trials;
* **and** a practical size: the Hodges-Lehmann shift must be worse than a per-metric floor
  (default 1 %), so a significant 0.3 % change on a quiet testbed rejects nobody.

The test's level is calibrated by simulation for a whole *plan* of checks: during soak the
gate runs after every soak run and scans every window of the newest runs (a regression that
begins on day 3 is not diluted by days 1 and 2), and the level per check is set so that a good
candidate's whole soak is falsely rejected at most at the target rate. Rank statistics are
distribution-free under "no change", so the calibration holds for any continuous noise; it does
not hold for autocorrelated noise or drift, which the accuracy benchmark measures. Across the
many series of one candidate, Holm's step-down keeps the candidate's false-reject rate at the
target too. Never judged on fewer than ``min_runs`` candidate runs, so a candidate's first one
to four runs alone cannot reject it; a 3-run dip of 3 sigma *inside* a soak still can (ranks
cannot tell it from the first runs of a step: see ``benchmarks/detector_accuracy.py``).
E-Divisive (:mod:`certifier.domain.changepoint`) only says where a change began.

Pure: numpy and scipy in, dataclasses out; it never raises on bad numbers (NaN, inf, one
sample, all-equal samples) but says what it did with them in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import special, stats  # type: ignore[import-untyped]

from certifier.domain.changepoint import ChangePoint, locate_change
from certifier.domain.results import Better, Measurement, series_key

if TYPE_CHECKING:  # judgement may import this module; import it back only when needed
    from certifier.domain.judgement import Excuse

FloatArray = npt.NDArray[np.float64]

LATENCY_UNITS = frozenset({"ns", "us", "µs", "μs", "ms", "s"})
MINUS = "\u2212"
EXACT_MAX_CELLS = 4000  # n·m above which the normal approximation replaces the exact table


class Scale(StrEnum):
    LINEAR = "linear"
    LOG = "log"


class Method(StrEnum):
    MANN_WHITNEY = "mann-whitney"
    FISHER = "fisher"


class Outcome(StrEnum):
    PASSED = "passed"
    REGRESSED = "regressed"
    NOT_TESTED = "not_tested"  # no baseline, too few runs or no usable numbers: says nothing


@dataclass(frozen=True, slots=True)
class Counts:
    """Bad events out of trials in one run, e.g. 3 packets lost of 1000 sent."""

    events: int
    trials: int


@dataclass(frozen=True, slots=True)
class Series:
    """One metric with one label set: the baseline's values and the candidate's, in run order.

    Give ``baseline_counts`` and ``candidate_counts`` (one per run) where events and trials are
    known (ping loss with packet counts, UDP lost packets, TCP retransmits of segments sent):
    the counts are then tested with Fisher's exact test instead of ranking the percentages.
    """

    suite: str
    metric: str
    unit: str
    better: Better
    baseline: tuple[float, ...]
    candidate: tuple[float, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    baseline_counts: tuple[Counts, ...] = ()
    candidate_counts: tuple[Counts, ...] = ()

    @property
    def key(self) -> str:
        return series_key(self.suite, self.metric, dict(self.labels))

    @property
    def scale(self) -> Scale:
        return Scale.LOG if self.better is Better.LOWER and self.unit in LATENCY_UNITS else (
            Scale.LINEAR)


def series_from_measurements(
    candidate: Iterable[Measurement], baseline: Mapping[str, Sequence[float]]
) -> list[Series]:
    """One :class:`Series` per key of ``candidate`` (measurements in run order), sorted by key.

    ``baseline`` maps series keys to the known-good's values (``judgement.Baseline.samples``).
    """
    grouped: dict[str, list[Measurement]] = {}
    for m in candidate:
        grouped.setdefault(m.key, []).append(m)
    return [
        Series(ms[0].suite, ms[0].metric, ms[0].unit, ms[0].better,
               tuple(float(v) for v in baseline.get(key, ())), tuple(m.value for m in ms),
               dict(ms[0].labels))
        for key, ms in sorted(grouped.items())
    ]


@dataclass(frozen=True, slots=True)
class DetectorPolicy:
    """How sure and how large before a series regresses, and over how many checks.

    ``false_reject_target`` is the chance that a good candidate is rejected over the whole
    plan of ``planned_checks`` checks (one per soak run), per series and, through Holm, per
    candidate. ``scan_windows`` tests every window of the newest ≥ ``min_runs`` runs at each
    check (soak); without it only all candidate runs together (pre-promotion comparison).
    ``floors`` maps "suite.metric" to a floor in percent (percentage points for counts).
    """

    false_reject_target: float = 0.05
    planned_checks: int = 28
    scan_windows: bool = True
    min_runs: int = 5
    min_baseline: int = 20
    baseline_window: int = 40  # the newest baseline runs compared (the testbed drifts)
    floor_pct: float = 1.0
    count_floor_pp: float = 0.1
    floors: Mapping[str, float] = field(default_factory=dict)
    calibration_headroom: float = 0.9  # Monte-Carlo error and discreteness: aim 10 % below
    calibration_trials: int = 20_000
    changepoint_alpha: float = 0.05  # only says where, after the gate said whether
    changepoint_permutations: int = 199
    seed: int = 20_240_601

    @classmethod
    def pre_promotion(cls, **overrides: Any) -> DetectorPolicy:
        """One comparison of all candidate runs (e.g. 10) with the baseline, at 1 %."""
        return replace(cls(false_reject_target=0.01, planned_checks=1, scan_windows=False),
                       **overrides)

    @classmethod
    def soak(cls, runs: int = 28, **overrides: Any) -> DetectorPolicy:
        """A check after each of ``runs`` soak runs (7 days, 4 a day), 5 % for the whole soak."""
        return replace(cls(planned_checks=runs), **overrides)

    def floor_for(self, suite: str, metric: str, counts: bool) -> float:
        default = self.count_floor_pp if counts else self.floor_pct
        return self.floors.get(f"{suite}.{metric}", default)

    def level(self, n_baseline: int) -> float:
        """The level of one series' test at one check, before the correction across series."""
        if self.planned_checks <= 1 and not self.scan_windows:
            return self.false_reject_target
        return calibrated_level(max(1, n_baseline), max(1, self.planned_checks),
                                self.false_reject_target * self.calibration_headroom,
                                self.min_runs, self.scan_windows, self.calibration_trials,
                                self.seed)


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    median: float
    iqr: float

    @classmethod
    def of(cls, values: FloatArray) -> Summary:
        if len(values) == 0:
            return cls(0, math.nan, math.nan)
        ordered = sorted(values.tolist())
        return cls(len(ordered), _quantile(ordered, 0.5),
                   _quantile(ordered, 0.75) - _quantile(ordered, 0.25))


def _quantile(ordered: list[float], q: float) -> float:
    """numpy's default (linear) quantile of sorted values, without numpy's per-call cost."""
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _median(values: FloatArray) -> float:
    return _quantile(sorted(values.tolist()), 0.5)


@dataclass(frozen=True, slots=True)
class SeriesVerdict:
    """Everything needed to explain one series' result, as data and as one sentence.

    ``shift`` is the candidate's change in the metric's own sense (-31.2 means 31.2 % lower),
    with its 95 % interval; ``worse`` is the same size signed so that positive is worse.
    ``window`` is the half-open range of candidate runs tested; ``change_run`` the candidate
    run (0-based) where E-Divisive found the change began.
    """

    key: str
    suite: str
    metric: str
    labels: Mapping[str, str]
    unit: str
    better: Better
    scale: Scale
    method: Method
    outcome: Outcome
    baseline: Summary
    candidate: Summary
    window: tuple[int, int]
    shift: float
    shift_low: float
    shift_high: float
    shift_unit: str  # "%" of the baseline, or "pp" (percentage points) for counts
    worse: float
    floor: float
    p_value: float
    level: float
    change: ChangePoint | None
    change_run: int | None
    notes: tuple[str, ...]
    sentence: str

    @property
    def regressed(self) -> bool:
        return self.outcome is Outcome.REGRESSED

    def as_dict(self) -> dict[str, Any]:
        return {
            **series_fields(self), "scale": str(self.scale), "method": str(self.method),
            "outcome": str(self.outcome),
            "baseline": _summary_dict(self.baseline), "candidate": _summary_dict(self.candidate),
            "window": list(self.window), "shift": _num(self.shift),
            "shift_ci": [_num(self.shift_low), _num(self.shift_high)],
            "shift_unit": self.shift_unit, "worse": _num(self.worse), "floor": self.floor,
            "p_value": _num(self.p_value), "level": self.level, "change_run": self.change_run,
            "change_p_value": None if self.change is None else self.change.p_value,
            "notes": list(self.notes),
        }

    def excuse(self) -> Excuse:
        from certifier.domain.judgement import Excuse  # here, not on top: see TYPE_CHECKING

        return Excuse("regression", self.key, self.sentence, self.as_dict())


@dataclass(frozen=True, slots=True)
class CandidateVerdict:
    """All series of one candidate at one check, after the correction across series."""

    verdicts: tuple[SeriesVerdict, ...]

    @property
    def regressed(self) -> tuple[SeriesVerdict, ...]:
        return tuple(v for v in self.verdicts if v.regressed)

    def excuses(self) -> list[Excuse]:
        """One ``regression`` excuse per regressed series (notes never block anyone)."""
        return [v.excuse() for v in self.regressed]

    def notes(self) -> list[str]:
        return [f"{v.key}: {note}" for v in self.verdicts for note in v.notes]


def _num(x: float) -> float | None:
    """JSON has no NaN or infinity: a number that is not finite is stored as null."""
    return x if math.isfinite(x) else None


def series_fields(verdict: Judged) -> dict[str, Any]:
    """What every verdict's dict starts with, the detector's and the A/B test's alike: the
    names of the series it judged, in one place so that the two dicts cannot drift apart."""
    return {
        "key": verdict.key, "suite": verdict.suite, "metric": verdict.metric,
        "labels": dict(verdict.labels), "unit": verdict.unit, "better": str(verdict.better),
    }


def _summary_dict(s: Summary) -> dict[str, Any]:
    return {"n": s.n, "median": _num(s.median), "iqr": _num(s.iqr)}


# --- the Mann-Whitney null distribution -----------------------------------------------------

@lru_cache(maxsize=512)
def _u_cdf(n: int, m: int) -> FloatArray:
    """Exact P(U ≤ u), u = 0…n·m, for samples of n and m distinct values under no change.

    Counts the k-subsets of ranks 1…n+m by their sum (k the smaller size; U's distribution is
    symmetric, so either size gives it); only additions of positives, so no cancellation.
    """
    k, total = min(n, m), n + m
    counts = np.zeros((k + 1, k * total + 1))
    counts[0, 0] = 1.0
    for rank in range(1, total + 1):
        counts[1:, rank:] = counts[1:, rank:] + counts[:-1, :-rank]
    low = k * (k + 1) // 2
    pmf = counts[k, low:low + n * m + 1] / math.comb(total, k)
    return np.minimum(np.cumsum(pmf), 1.0)


def _exact(n: int, m: int) -> bool:
    return n * m <= EXACT_MAX_CELLS


def _p_lower(u: float, n: int, m: int, tie_term: float) -> float:
    """One-sided P(U ≤ u): exact without ties, else normal with tie and continuity correction."""
    if tie_term == 0.0 and _exact(n, m) and float(u).is_integer():
        return float(_u_cdf(n, m)[int(u)])
    total = n + m
    var = n * m / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))
    if var <= 0:
        return 1.0
    return float(special.ndtr((u + 0.5 - n * m / 2.0) / math.sqrt(var)))


def _rank_of_ci(n: int, m: int, confidence: float = 0.95) -> int:
    """How many of the sorted n·m differences to skip at each end for the HL interval."""
    half = (1.0 - confidence) / 2.0
    if _exact(n, m):
        return int(np.searchsorted(_u_cdf(n, m), half, side="right"))
    z = float(special.ndtri(1.0 - half))
    return max(0, math.floor(n * m / 2.0 - z * math.sqrt(n * m * (n + m + 1) / 12.0)))


@lru_cache(maxsize=64)
def calibrated_level(
    n_baseline: int, planned_checks: int, target: float, min_runs: int, scan: bool,
    trials: int = 20_000, seed: int = 0,
) -> float:
    """The per-check level at which ``planned_checks`` checks falsely reject at rate ``target``.

    Simulates good soaks (baseline and candidate from one continuous distribution; ranks make
    the answer the same for any), runs the same windows the gate runs, and takes the
    ``target`` quantile of each soak's smallest p-value. Deterministic (fixed seed), cached.
    """
    m, runs = n_baseline, max(planned_checks, min_runs)
    rng = np.random.default_rng(seed)
    smallest = np.ones(trials)
    chunk = max(1, 2_000_000 // (runs * m))
    for start in range(0, trials, chunk):
        size = min(chunk, trials - start)
        base = rng.random((size, m))
        cand = rng.random((size, runs))
        below = (cand[:, :, None] > base[:, None, :]).sum(axis=2)
        cum = np.zeros((size, runs + 1), dtype=np.int64)
        cum[:, 1:] = below.cumsum(axis=1)
        low = smallest[start:start + size]
        for k in range(min_runs, runs + 1):
            for j in range(k - min_runs + 1) if scan else (0,):
                n = k - j
                u = cum[:, k] - cum[:, j]
                if _exact(n, m):
                    p = _u_cdf(n, m)[u]
                else:
                    p = special.ndtr((u + 0.5 - n * m / 2.0)
                                     / math.sqrt(n * m * (n + m + 1) / 12.0))
                np.minimum(low, p, out=low)
    ordered = np.sort(smallest)
    share = np.searchsorted(ordered, ordered, side="right") / trials
    allowed = ordered[share <= target]
    return float(allowed.max()) if len(allowed) else float(ordered[0]) / 2.0


# --- one series ---------------------------------------------------------------------------

@dataclass(slots=True)
class _Scored:
    """A series after its test, before the level (which depends on the other series) is set."""

    series: Series
    method: Method
    scale: Scale
    notes: list[str]
    base: FloatArray  # finite values, original scale
    cand: FloatArray
    testable: bool
    p: float = 1.0
    window: tuple[int, int] = (0, 0)
    shift: float = 0.0
    low: float = math.nan
    high: float = math.nan
    floor: float = 0.0

    @property
    def worse(self) -> float:
        if self.method is Method.FISHER or self.series.better is Better.LOWER:
            return self.shift
        return -self.shift


def _finite(values: Sequence[float], what: str, notes: list[str]) -> FloatArray:
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    keep = np.isfinite(data)
    if not keep.all():
        notes.append(f"{int((~keep).sum())} non-finite {what} value(s) left out")
    return data[keep]


def _to_pct(diff: float, scale: Scale, base_median: float) -> float:
    if scale is Scale.LOG:
        return 100.0 * math.expm1(diff)
    if base_median == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return 100.0 * diff / abs(base_median)


def _windows(n: int, policy: DetectorPolicy) -> list[int]:
    """Window lengths (newest runs) tested at this check; the longest first."""
    if not policy.scan_windows:
        return [n]
    return list(range(n, policy.min_runs - 1, -1))


def _score_ranks(s: _Scored, policy: DetectorPolicy, alpha: float) -> None:
    """Every window's p-value; the reported window is the most significant one that is also
    worse than the floor, else the most significant one, else all runs."""
    base = np.log(s.base) if s.scale is Scale.LOG else s.base
    cand = np.log(s.cand) if s.scale is Scale.LOG else s.cand
    sign = 1.0 if s.series.better is Better.HIGHER else -1.0  # oriented: lower is worse
    zb, zc = sign * base, sign * cand
    n, m = len(zc), len(zb)
    wins = (zc[:, None] > zb[None, :]).sum(axis=1) + 0.5 * (zc[:, None] == zb[None, :]).sum(axis=1)
    cum = np.concatenate([[0.0], np.cumsum(wins)])
    ties = len(np.unique(np.concatenate([zc, zb]))) < n + m
    base_median = _median(s.base)
    pvalues: list[tuple[float, int]] = []
    for length in _windows(n, policy):
        tie_term = 0.0
        if ties:
            _, counts = np.unique(np.concatenate([zc[n - length:], zb]), return_counts=True)
            tie_term = float(np.sum(counts.astype(np.float64) ** 3 - counts))
        pvalues.append((_p_lower(float(cum[n] - cum[n - length]), length, m, tie_term), length))
    chosen: tuple[float, int, tuple[float, float, float]] | None = None
    for p, length in sorted(pvalues, key=lambda pl: (pl[0], -pl[1])):
        if p > alpha:
            break
        hl = _hodges_lehmann(cand[n - length:], base, s.scale, base_median)
        if chosen is None:
            chosen = (p, length, hl)  # the most significant, in case none is large enough
        if (-hl[0] if sign > 0 else hl[0]) > s.floor:
            chosen = (p, length, hl)
            break
    if chosen is None:
        p, length = next(pl for pl in pvalues if pl[1] == n)
        chosen = (p, length, _hodges_lehmann(cand, base, s.scale, base_median))
    s.p, length, (s.shift, s.low, s.high) = chosen
    s.window = (n - length, n)


def _hodges_lehmann(
    cand: FloatArray, base: FloatArray, scale: Scale, base_median: float
) -> tuple[float, float, float]:
    """Shift of ``cand`` from ``base`` in percent, with the distribution-free 95 % interval."""
    diffs = np.sort((cand[:, None] - base[None, :]).reshape(-1))
    k = _rank_of_ci(len(cand), len(base))
    low = float(diffs[k - 1]) if k >= 1 else -math.inf
    high = float(diffs[len(diffs) - k]) if k >= 1 else math.inf
    return (_to_pct(_quantile(diffs.tolist(), 0.5), scale, base_median),
            _to_pct(low, scale, base_median), _to_pct(high, scale, base_median))


def _clean_counts(counts: Sequence[Counts], what: str, notes: list[str]) -> list[Counts]:
    good = [c for c in counts if 0 <= c.events <= c.trials and c.trials > 0]
    if len(good) != len(counts):
        notes.append(f"{len(counts) - len(good)} {what} count(s) left out "
                     "(no trials, or events outside 0…trials)")
    return good


def _wilson(events: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    p = events / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    half = z * spread / (1 + z * z / trials)
    return centre - half, centre + half


def _score_counts(s: _Scored, policy: DetectorPolicy, alpha: float,
                  base_counts: list[Counts], cand_counts: list[Counts]) -> None:
    be, bt = sum(c.events for c in base_counts), sum(c.trials for c in base_counts)
    rate_b = be / bt
    lb, hb = _wilson(be, bt)
    best: tuple[float, int, float, float, float] | None = None
    n = len(cand_counts)
    for length in _windows(n, policy):
        window = cand_counts[n - length:]
        ce, ct = sum(c.events for c in window), sum(c.trials for c in window)
        p = float(stats.fisher_exact([[ce, ct - ce], [be, bt - be]],
                                     alternative="greater").pvalue)
        rate_c = ce / ct
        lc, hc = _wilson(ce, ct)
        diff = rate_c - rate_b  # Newcombe's hybrid score interval for a difference
        low = diff - math.sqrt((rate_c - lc) ** 2 + (hb - rate_b) ** 2)
        high = diff + math.sqrt((hc - rate_c) ** 2 + (rate_b - lb) ** 2)
        scored = (p, length, 100 * diff, 100 * low, 100 * high)
        if length == n:
            s.p, s.shift, s.low, s.high = p, scored[2], scored[3], scored[4]
            s.window = (0, n)
        if p <= alpha and 100 * diff > s.floor and (best is None or p < best[0]):
            best = scored
    if best is not None:
        s.p, length, s.shift, s.low, s.high = best
        s.window = (n - length, n)


def _score(series: Series, policy: DetectorPolicy, alpha: float) -> _Scored:
    notes: list[str] = []
    counted = bool(series.baseline_counts and series.candidate_counts)
    base_counts = _clean_counts(series.baseline_counts, "baseline", notes) if counted else []
    cand_counts = _clean_counts(series.candidate_counts, "candidate", notes) if counted else []
    if counted:
        base = np.array([100.0 * c.events / c.trials for c in base_counts])
        cand = np.array([100.0 * c.events / c.trials for c in cand_counts])
    else:
        base = _finite(series.baseline, "baseline", notes)
        cand = _finite(series.candidate, "candidate", notes)
    scale = series.scale
    if scale is Scale.LOG and (np.any(base <= 0) or np.any(cand <= 0)):
        notes.append("values ≤ 0 cannot be compared on a log scale: compared as they are")
        scale = Scale.LINEAR
    s = _Scored(series, Method.FISHER if counted else Method.MANN_WHITNEY,
                Scale.LINEAR if counted else scale, notes, base, cand, testable=False,
                floor=policy.floor_for(series.suite, series.metric, counted))
    if len(base) == 0:
        notes.append("no baseline: nothing to compare with")
    elif len(cand) < policy.min_runs:
        notes.append(f"{len(cand)} candidate run(s): at least {policy.min_runs} needed to judge")
    else:
        s.testable = True
        if len(base) < policy.min_baseline:
            notes.append(f"insufficient baseline: {len(base)} run(s) of "
                         f"{policy.min_baseline} wanted")
        if counted:
            _score_counts(s, policy, alpha, base_counts, cand_counts)
        else:
            _score_ranks(s, policy, alpha)
    return s


def _fmt_signed(x: float, digits: int = 1) -> str:
    if math.isinf(x):
        return "+∞" if x > 0 else f"{MINUS}∞"
    text = f"{x:+.{digits}f}"
    return text.replace("-", MINUS)


AS_FACTOR_PCT = 900.0
"""A rise of this many percent or more reads as the factor it is: "+17904.7 %" (a write latency
180 times its controls') is a number nobody reads at a glance."""
TIMES = "\u00d7"


def as_factor(x: float, unit: str = "%") -> bool:
    """Whether a change ``x`` in ``unit`` is shown as a factor (a rise of ten times or more)."""
    return unit == "%" and math.isfinite(x) and x >= AS_FACTOR_PCT


def factor_number(pct: float) -> str:
    """The factor of a rise of ``pct`` percent, in plain digits: "10.5", "180", "15,411"."""
    f = 1.0 + pct / 100.0
    return f"{f:,.0f}" if f >= 100 else f"{f:.3g}"


def fmt_change(x: float, unit: str) -> str:
    """A signed change in its unit ("+6.0 %", "-0.35 ms" with a minus sign); a rise of
    ``AS_FACTOR_PCT`` % or more as a factor ("180" and ``TIMES``)."""
    return factor_number(x) + TIMES if as_factor(x, unit) else f"{_fmt_signed(x)} {unit}"


def fmt_interval(low: float, high: float, unit: str) -> str:
    """An interval of changes: "+1.2…+3.4 %"; each end with its own unit when one is a factor
    ("+110.4 %…15,411" and ``TIMES``; an open end is just "+∞")."""
    if as_factor(low, unit) or as_factor(high, unit):
        ends = (fmt_change(v, unit) if math.isfinite(v) else _fmt_signed(v) for v in (low, high))
        return "…".join(ends)
    return f"{_fmt_signed(low)}…{_fmt_signed(high)} {unit}"



def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


class Described(Protocol):
    """Anything that names a series: a :class:`Series` or an A/B ``PairedSeries``."""

    @property
    def suite(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


class Judged(Described, Protocol):
    """A verdict on one series: a :class:`SeriesVerdict` or an A/B ``ABVerdict``."""

    @property
    def key(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def better(self) -> Better: ...


def describe(series: Described) -> str:
    """"bandwidth throughput_gbps h1→h2 (streams=1)": suite, metric, pair, other labels."""
    labels = dict(series.labels)
    text = f"{series.suite} {series.metric}"
    if "src" in labels and "dst" in labels:
        text += f" {labels.pop('src')}→{labels.pop('dst')}"
    if labels:
        text += " (" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + ")"
    return text


def _finish(s: _Scored, level: float, policy: DetectorPolicy, baseline_label: str,
            locate: bool | None, held_back: bool = False) -> SeriesVerdict:
    """The outcome at ``level``; ``held_back``: Holm's step-down stopped at a series before."""
    series = s.series
    if held_back and s.p <= level:
        s.notes.append("significant on its own, but Holm's step-down stopped before it")
    if not s.testable:
        outcome = Outcome.NOT_TESTED
    elif s.p <= level and s.worse > s.floor and not held_back:
        outcome = Outcome.REGRESSED
    else:
        outcome = Outcome.PASSED
    change: ChangePoint | None = None
    change_run: int | None = None
    if s.testable and (locate or (locate is None and outcome is Outcome.REGRESSED)):
        change, change_run = _locate(s, policy)
    unit = "pp" if s.method is Method.FISHER else "%"
    if s.testable:
        sentence = (f"{describe(series)} {fmt_change(s.shift, unit)} (95 % CI "
                    f"{fmt_interval(s.low, s.high, unit)}) vs {baseline_label}, "
                    f"{_fmt_p(s.p)} (level {level:.2g})")
        if outcome is Outcome.PASSED and s.p <= level and not held_back:
            sentence += f", within the {s.floor:g} {unit} floor"
        if s.window != (0, len(s.cand)):
            sentence += f", runs {s.window[0] + 1}\u2013{s.window[1]} of {len(s.cand)}"
        if change_run is not None:
            sentence += f"; change began at run {change_run + 1}"
        if s.method is Method.FISHER:
            sentence += "; Fisher's exact test on pooled counts"
    else:
        sentence = f"{describe(series)}: not tested ({'; '.join(s.notes)})"
    window_values = s.cand[s.window[0]:s.window[1]] if s.testable else s.cand
    return SeriesVerdict(
        series.key, series.suite, series.metric, dict(series.labels), series.unit, series.better,
        s.scale, s.method, outcome, Summary.of(s.base), Summary.of(window_values), s.window,
        s.shift, s.low, s.high, unit, s.worse, s.floor, s.p, level, change, change_run,
        tuple(s.notes), sentence)


def _locate(s: _Scored, policy: DetectorPolicy) -> tuple[ChangePoint | None, int | None]:
    values = np.concatenate([s.base, s.cand])
    analysed = np.log(values) if s.scale is Scale.LOG else values
    worse_is_lower = s.series.better is Better.HIGHER and s.method is Method.MANN_WHITNEY
    point = locate_change(analysed, worse="lower" if worse_is_lower else "higher",
                          first=len(s.base), min_after=policy.min_runs,
                          alpha=policy.changepoint_alpha,
                          permutations=policy.changepoint_permutations, seed=policy.seed)
    if point is None:
        return None, None
    if s.scale is Scale.LOG:
        point = replace(point, median_before=math.exp(point.median_before),
                        median_after=math.exp(point.median_after))
    return point, point.index - len(s.base)


# --- public entry points ------------------------------------------------------------------

def compare_series(
    series: Series,
    policy: DetectorPolicy | None = None,
    *,
    baseline_label: str = "known-good",
    level: float | None = None,
    locate: bool | None = None,
) -> SeriesVerdict:
    """One series on its own (no correction across series) at ``level`` or the policy's.

    ``locate``: run E-Divisive to say where the change began: None (default) for a regressed
    series only, True always, False never (it costs milliseconds; the test costs microseconds).
    """
    policy = policy or DetectorPolicy.pre_promotion()
    alpha = policy.level(len(series.baseline)) if level is None else level
    return _finish(_score(series, policy, alpha), alpha, policy, baseline_label, locate)


def judge_candidate(
    series: Iterable[Series],
    policy: DetectorPolicy | None = None,
    *,
    baseline_label: str = "known-good",
    locate: bool | None = None,
) -> CandidateVerdict:
    """Every series of one candidate at one check, with Holm's correction across them.

    Holm's step-down at the per-check level keeps the chance that any of a good candidate's
    series is falsely rejected at that level, however many series it has, and loses less
    power than Bonferroni. A series regresses when its p-value passes its Holm level and its
    shift is worse than its floor.
    """
    policy = policy or DetectorPolicy.pre_promotion()
    all_series = list(series)
    alphas = [policy.level(len(s.baseline)) for s in all_series]
    scored = [_score(s, policy, a) for s, a in zip(all_series, alphas, strict=True)]
    testable = sorted((i for i, s in enumerate(scored) if s.testable), key=lambda i: scored[i].p)
    levels = list(alphas)
    blocked = [False] * len(scored)
    stopped = False
    for rank, i in enumerate(testable):
        levels[i] = alphas[i] / (len(testable) - rank)
        stopped = stopped or scored[i].p > levels[i]
        blocked[i] = stopped
    verdicts = tuple(_finish(s, lv, policy, baseline_label, locate, held_back=b)
                     for s, lv, b in zip(scored, levels, blocked, strict=True))
    return CandidateVerdict(verdicts)
