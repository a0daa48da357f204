"""A/B judgement over a soak: every soak run's candidate-vs-control differences, run after run.

Each soak run is an A/B run (:mod:`certifier.domain.abtest`): its rounds give worse-oriented
paired differences in which the testbed's shared state (a busy host, a slow day, AR(1) drift,
a burst) cancels. After every soak run :func:`judge_soak` tests, per series, whether those
differences are shifted to "worse":

* a one-sided **Wilcoxon signed-rank test**, exact (no normal approximation) unless values tie,
  on the differences of every window of the newest ≥ ``min_runs`` runs (a regression that
  begins on day 3 is not diluted by days 1 and 2), like the history detector's scan;
* **and** a practical size: the one-sample Hodges-Lehmann shift (median of the Walsh
  averages) beyond the floor (1 % by default);
* counts (ping loss with packets) pooled over the window's runs and tested as counts.

The unit is the *round* by default: a soak run contributes its rounds' differences (4 per run
by default, ``rounds_per_run``: with 4 the soak meets its targets for 5 % steps, with 3 it
barely does and with 2 it cannot; see ``benchmarks/README.md``). With one difference per
*run* (``unit="run"``) the exact test cannot reach the level in time: the smallest p-value
of 10 runs is 2⁻¹⁰ ≈ 0.001, while 50 series at 5 % per candidate over a 36-run plan need
about 3e-5 per check. Rounds of one run are
independent when the per-side noise is (what the benchmark assumes); a deployment-level effect
shared by a run's rounds would break that — then use ``unit="run"`` and a longer soak.

**Calibration per candidate.** The per-check level is set by simulation for the whole plan
(every check, every window, extensions included) so that a good candidate with ``m`` judged
series is falsely rejected at most ``false_reject_target`` over its whole soak: each series
gets target/m of it (a union bound over series, so correlated series only help). Signed ranks
are distribution-free for symmetric differences, so one simulation serves every metric; it is
cached per plan and takes about a second.

**Saying when it cannot decide.** A series whose all-runs window cannot reach the level even
with every difference on the worse side, or whose 95 % interval still straddles the floor and
the equivalence bound, is ``undecided`` with "needs ≥ N more runs" (:func:`runs_needed`), so
the promotion policy can extend the soak, within ``max_extra_runs``.
:func:`soak_config_warnings` says at start when ``min_runs`` or the plan can never reach it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import special, stats  # type: ignore[import-untyped]

from certifier.domain.abtest import (
    DEFAULT_INFORMATIVE,
    DEFAULT_MIN_CHANGE,
    MAD_TO_SD,
    ABJudgement,
    ABVerdict,
    Outcome,
    PairedSeries,
    binomial_p,
    counts_text,
    floor_words,
    fmt_p,
    fmt_size,
    fmt_spread,
    fmt_value,
    informative_verdict,
    is_informative,
    linear_floor,
    median_of,
    pct_threshold,
    rate_difference,
    scale_of,
    shift_unit,
    shown,
    shown_interval,
    sum_counts,
    with_min_change,
    worse_diffs,
)
from certifier.domain.detector import (
    DetectorPolicy,
    Scale,
    _fmt_signed,
    as_factor,
    describe,
    fmt_change,
    fmt_interval,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SoakPolicy:
    """How sure and how large before a soak rejects, over how many runs, and the unit.

    ``false_reject_target`` is per candidate over the whole soak, its extensions included
    (``planned_runs + max_extra_runs`` runs); ``rounds_per_run`` is what a soak run measures
    (the calibration assumes it).
    """

    false_reject_target: float = 0.05
    planned_runs: int = 28
    max_extra_runs: int = 8
    min_runs: int = 5
    rounds_per_run: int = 4
    unit: Literal["round", "run"] = "round"
    floor_pct: float = 1.0
    floors: Mapping[str, float] = field(default_factory=dict)
    equivalence_pct: float = 5.0
    lean_pct: float = 20.0
    lean_p: float = 0.05
    count_floor_pp: float = 0.5
    count_equivalence_pp: float = 2.0
    pp_floor: float = 0.1
    informative: frozenset[str] = DEFAULT_INFORMATIVE
    min_change: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_CHANGE))
    calibration_headroom: float = 0.9
    calibration_trials: int = 20_000
    seed: int = 20_261_205

    @classmethod
    def of(cls, **overrides: Any) -> SoakPolicy:
        return replace(cls(), **overrides)

    @property
    def max_runs(self) -> int:
        return self.planned_runs + self.max_extra_runs

    @property
    def units_per_run(self) -> int:
        return self.rounds_per_run if self.unit == "round" else 1

    def level(self, judged: int) -> float:
        """The per-check level of one series' test for a candidate of ``judged`` series."""
        return calibrated_soak_level(
            self.max_runs, self.min_runs, self.units_per_run,
            self.false_reject_target * self.calibration_headroom / max(1, judged),
            self.calibration_trials, self.seed)

    def lean_level(self, judged: int) -> float:
        """How consistently an undecided series of a candidate of ``judged`` series must point
        worse to lean worse: ``lean_p`` shared among them (Bonferroni; for "does any series
        lean", Holm's first step is the same). Unadjusted, each of a good candidate's ~50
        series would get its own 5 % chance to hold it for a person."""
        return self.lean_p / max(1, judged)


# --- the signed-rank null distribution --------------------------------------------------------

@lru_cache(maxsize=256)
def signed_rank_sf(n: int) -> FloatArray:
    """Exact P(W+ ≥ w), w = 0…n(n+1)/2, for n nonzero untied differences under no change."""
    top = n * (n + 1) // 2
    pmf = np.zeros(top + 1)
    pmf[0] = 1.0
    for r in range(1, n + 1):
        shifted = np.zeros_like(pmf)
        shifted[r:] = pmf[:-r]
        pmf = 0.5 * (pmf + shifted)
    return np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)


def smallest_p(units: int) -> float:
    """The smallest one-sided p-value ``units`` differences can give: all on the worse side."""
    return 0.5 ** units if units > 0 else 1.0


def units_to_reach(level: float) -> int:
    """How many differences the exact test needs before its smallest p-value is ≤ ``level``."""
    return max(1, math.ceil(-math.log2(level))) if level > 0 else 10**6


def _walsh_prefix(z: npt.NDArray[np.floating[Any]], unit: int) -> npt.NDArray[np.int32]:
    """For rows of differences grouped in runs of ``unit``, C with W+(runs a…b) = C[b, b] -
    C[a, b]: the number of Walsh averages (i ≤ j, both in the runs) above 0, which is the
    signed-rank statistic. Summed per pair of runs first: windows start and end at runs."""
    t, n = z.shape
    runs = n // unit
    positive = (z[:, :, None] + z[:, None, :]) > 0
    positive &= np.triu(np.ones((n, n), dtype=bool))
    blocks = positive.reshape(t, runs, unit, runs, unit).sum(axis=(2, 4), dtype=np.int32)
    c = np.zeros((t, runs + 1, runs + 1), dtype=np.int32)
    c[:, 1:, 1:] = blocks.cumsum(axis=1, dtype=np.int32).cumsum(axis=2, dtype=np.int32)
    return c


def _windows(runs: int, min_runs: int) -> list[tuple[int, int]]:
    """(first run, end run) of every window the plan tests, in check order (end = check)."""
    return [(check - k, check)
            for check in range(min_runs, runs + 1) for k in range(min_runs, check + 1)]


@lru_cache(maxsize=32)
def _null_min_p(runs: int, min_runs: int, unit: int, trials: int, seed: int) -> FloatArray:
    """Sorted smallest p-value of each simulated good series over the whole plan."""
    rng = np.random.default_rng(seed)
    width = runs * unit
    chunk = max(1, 4_000_000 // (width * width))
    windows = _windows(runs, min_runs)
    smallest = np.ones(trials)
    for start in range(0, trials, chunk):
        size = min(chunk, trials - start)
        c = _walsh_prefix(rng.standard_normal((size, width), dtype=np.float32), unit)
        low = smallest[start:start + size]
        for a, b in windows:
            np.minimum(low, signed_rank_sf((b - a) * unit)[c[:, b, b] - c[:, a, b]], out=low)
    return np.sort(smallest)


def calibrated_soak_level(runs: int, min_runs: int, unit: int, per_series: float,
                          trials: int = 40_000, seed: int = 0) -> float:
    """The per-check level at which one good series is falsely flagged at most ``per_series``
    over the whole plan (the ``per_series`` quantile of its smallest p-value)."""
    ordered = _null_min_p(max(runs, min_runs), min_runs, unit, trials, seed)
    share = np.searchsorted(ordered, ordered, side="right") / len(ordered)
    allowed = ordered[share <= per_series]
    return float(allowed.max()) if len(allowed) else float(ordered[0]) / 2.0


def first_alarms(diffs: FloatArray, level: float, floor: float, min_runs: int) -> IntArray:
    """For rows of worse-oriented differences (trials x runs x units per run), the soak check
    (number of runs seen) at which :func:`judge_soak`'s rule first flags each row, 0 if never.

    The same rule, vectorised for the accuracy benchmark: a window of the newest ≥ ``min_runs``
    runs with exact p ≤ ``level`` and Hodges-Lehmann shift > ``floor``.
    """
    trials, runs, unit = diffs.shape
    flat = diffs.reshape(trials, runs * unit)
    alarms = np.zeros(trials, dtype=np.int64)
    chunk = max(1, 4_000_000 // max(1, (runs * unit) ** 2))
    for start in range(0, trials, chunk):
        rows = flat[start:start + chunk]
        c = _walsh_prefix(rows, unit)
        found = alarms[start:start + chunk]
        for a, b in _windows(runs, min_runs):
            p = signed_rank_sf((b - a) * unit)[c[:, b, b] - c[:, a, b]]
            for i in np.flatnonzero((p <= level) & (found == 0)):
                if _hodges_lehmann(rows[i, a * unit:b * unit])[0] > floor:
                    found[i] = b
    return alarms


# --- one series over the soak -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SoakSeries:
    """One series over the soak so far: its paired rounds in each soak run, oldest first."""

    key: str
    runs: tuple[PairedSeries, ...]

    @property
    def head(self) -> PairedSeries:
        return self.runs[0]


def soak_series(runs: Sequence[Sequence[PairedSeries]]) -> list[SoakSeries]:
    """Regroup soak runs (each a list of paired series) by series, sorted by key."""
    found: dict[str, list[PairedSeries]] = {}
    for run in runs:
        for s in run:
            found.setdefault(s.key, []).append(s)
    return [SoakSeries(key, tuple(found[key])) for key in sorted(found)]


def _units(series: SoakSeries, scale: Scale, unit: str) -> list[FloatArray]:
    """Each run's differences: all its rounds', or their median (``unit="run"``)."""
    out = []
    for run in series.runs:
        d = worse_diffs(run, scale)
        if len(d) and unit == "run":
            d = np.array([float(np.median(d))])
        out.append(d)
    return out


def _walsh(d: FloatArray) -> FloatArray:
    i, j = np.triu_indices(len(d))
    return np.sort((d[i] + d[j]) / 2.0)


def _hodges_lehmann(d: FloatArray) -> tuple[float, float, float]:
    """The one-sample Hodges-Lehmann shift with its distribution-free 95 % interval."""
    walsh = _walsh(d)
    n = len(d)
    sf = signed_rank_sf(n)  # P(W ≤ w) = P(W ≥ top - w), by symmetry
    k = int(np.sum(sf[::-1] <= 0.025))
    low = float(walsh[k - 1]) if k >= 1 else -math.inf
    high = float(walsh[len(walsh) - k]) if k >= 1 else math.inf
    return float(np.median(walsh)), low, high


def signed_rank_p(d: FloatArray) -> float:
    """One-sided P(W+ ≥ observed): exact without ties or zeros, else normal with corrections."""
    nonzero = d[d != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    ranks = stats.rankdata(np.abs(nonzero))
    w = float(ranks[nonzero > 0].sum())
    if len(np.unique(np.abs(nonzero))) == n:
        return float(signed_rank_sf(n)[int(w)])
    _, ties = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(ties ** 3 - ties)) / 48.0
    if var <= 0:
        return 1.0
    return float(special.ndtr(-(w - 0.5 - n * (n + 1) / 4.0) / math.sqrt(var)))


@dataclass(slots=True)
class _Window:
    runs: int
    p: float
    shift: float
    low: float
    high: float


def _scan(units: list[FloatArray], policy: SoakPolicy, level: float,
          floor: float) -> tuple[_Window, bool]:
    """Every window of the newest ≥ min_runs runs; the reported one is the most significant
    one beyond the floor, else the all-runs window. True when a window regressed."""
    windows = []
    for k in range(len(units), policy.min_runs - 1, -1):
        d = np.concatenate(units[len(units) - k:])
        if len(d) == 0:
            continue
        windows.append(_Window(k, signed_rank_p(d), *_hodges_lehmann(d)))
    for w in sorted(windows, key=lambda w: (w.p, -w.runs)):
        if w.p > level:
            break
        if w.shift > floor:
            return w, True
    return windows[0], False


def _needed_units(units: int, shift: float, sd: float, level: float, floor: float,
                  equivalence: float) -> int:
    """Differences needed before the series can be decided: the exact test's reach, and the
    interval's width for the gap between the shift and the nearer decision bound."""
    reach = units_to_reach(level)
    to_reject = shift - floor
    to_clear = equivalence - shift
    if to_reject >= to_clear and to_reject > 0:
        z, gap = float(special.ndtri(1.0 - level)), to_reject
    else:
        z, gap = 1.645, max(to_clear, 1e-9)
    precision = math.ceil((z * sd / gap) ** 2) if sd > 0 else 0
    return max(reach if shift > floor else 0, precision) - units


def _medians(series: SoakSeries) -> tuple[float, float]:
    """The candidate's and the controls' medians over every round of the soak so far."""
    return (median_of([v for r in series.runs for v in r.candidate]),
            median_of([v for r in series.runs for v in r.control]))


def _soak_counts(series: SoakSeries, policy: SoakPolicy, level: float, lean_level: float
                 ) -> ABVerdict:
    s = series.head
    floor = policy.floors.get(f"{s.suite}.{s.metric}", policy.count_floor_pp)
    per_run = [run.totals() for run in series.runs]
    n = len(per_run)
    best: tuple[float, int, float, float, float] | None = None
    all_runs: tuple[float, int, float, float, float] | None = None
    for k in range(n, policy.min_runs - 1, -1):
        cand = sum_counts(c for c, _ in per_run[n - k:])
        ctrl = sum_counts(c for _, c in per_run[n - k:])
        if cand.trials == 0 or ctrl.trials == 0:
            continue
        scored = (binomial_p(cand, ctrl), k, *rate_difference(cand, ctrl))
        all_runs = all_runs or scored
        if scored[0] <= level and scored[2] > floor and (best is None or scored[0] < best[0]):
            best = scored
    cand = sum_counts(c for c, _ in per_run)
    ctrl = sum_counts(c for _, c in per_run)
    chosen = best or all_runs
    if chosen is None:
        outcome, chosen = Outcome.UNDECIDED, (1.0, n, math.nan, math.nan, math.nan)
    elif best is not None:
        outcome = Outcome.REGRESSED
    elif chosen[4] < policy.count_equivalence_pp:
        outcome = Outcome.OK
    else:
        outcome = Outcome.UNDECIDED
    p, k, diff, low, high = chosen
    if best is not None:
        cand = sum_counts(c for c, _ in per_run[n - k:])
        ctrl = sum_counts(c for _, c in per_run[n - k:])
    figures = counts_text(s.metric, cand, ctrl)
    if outcome is Outcome.REGRESSED:
        sentence = (f"{describe(s)}: {figures} over soak runs {n - k + 1}\u2013{n} of {n} "
                    f"({_fmt_signed(diff, 2)} pp, 95 % CI {_fmt_signed(low, 2)}…"
                    f"{_fmt_signed(high, 2)} pp; floor {floor:g} pp), {fmt_p(p)} "
                    f"(level {level:.2g})")
    elif outcome is Outcome.UNDECIDED:
        sentence = (f"{describe(s)}: cannot decide yet after {n} soak run{'s' * (n != 1)} "
                    f"({figures}), needs more runs")
    else:
        sentence = f"{describe(s)}: ok, {figures} over {n} soak runs"
    counted = cand.trials > 0 and ctrl.trials > 0
    all_diff = rate_difference(cand, ctrl)[0] if counted else math.nan
    all_p = binomial_p(cand, ctrl) if counted else 1.0
    leans = (outcome is Outcome.UNDECIDED and all_diff > policy.count_equivalence_pp
             and all_p < lean_level)
    lean_text = (f"{_fmt_signed(all_diff, 2)} pp over every run, beyond the lean bound of "
                 f"{policy.count_equivalence_pp:g} pp, {fmt_p(all_p)} (level {lean_level:.2g})")
    return ABVerdict(*s.names, "soak",
                     "binomial", outcome, n, *_medians(series), diff, low, high, "pp", math.nan,
                     floor, p, level, (cand, ctrl), 0, (), _leaning(sentence, leans, lean_text),
                     leans)


def _soak_values(series: SoakSeries, policy: SoakPolicy, level: float, lean_level: float
                 ) -> ABVerdict:
    s = series.head
    scale = scale_of(series.runs)
    units = _units(series, scale, policy.unit)
    n = len(units)
    cand_med, ctrl_med = _medians(series)
    unit = shift_unit(s.unit, scale)
    configured = policy.floors.get(f"{s.suite}.{s.metric}", policy.floor_pct)
    min_change = policy.min_change.get(f"{s.suite}.{s.metric}")
    if scale is Scale.LOG:
        floor_shown = with_min_change(configured, min_change, ctrl_med, scale)
        floor = pct_threshold(floor_shown, s.better, scale)
        equivalence = pct_threshold(max(policy.equivalence_pct, 2 * floor_shown), s.better,
                                    scale)
        lean_pct = max(policy.lean_pct, 2 * floor_shown)
        lean = pct_threshold(lean_pct, s.better, scale)
        bound = f"{lean_pct:g} %"
    else:
        configured = linear_floor(s, configured, policy.pp_floor, ctrl_med)
        floor = floor_shown = with_min_change(configured, min_change, ctrl_med, scale)
        ref = abs(ctrl_med) if math.isfinite(ctrl_med) else 0.0
        equivalence = max(policy.equivalence_pct / 100.0 * ref, 2 * floor)
        lean = max(policy.lean_pct / 100.0 * ref, 2 * floor)
        bound = f"{fmt_size(lean)} {unit}"
    total = sum(len(u) for u in units)
    # the estimate over every round so far (NaN: none) and how consistently the rounds point
    # worse: an undecided series beyond the lean bound on both is never promoted undecided
    every_round = np.concatenate(units) if total else np.zeros(0)
    overall = float(np.median(every_round)) if total else math.nan
    all_p = signed_rank_p(every_round) if total else 1.0
    leans = overall > lean and all_p < lean_level
    lean_text = (f"{fmt_change(shown(overall, s.better, scale), unit)} over every round, "
                 f"beyond the lean bound of {bound}, signed-rank {fmt_p(all_p)} "
                 f"(level {lean_level:.2g})")
    notes: list[str] = []
    if n < policy.min_runs or total == 0:
        notes.append(f"{n} soak run(s): at least {policy.min_runs} needed to judge")
        needed = max(policy.min_runs - n, 1)
        sentence = (f"{describe(s)}: cannot decide yet after {n} soak run{'s' * (n != 1)}, "
                    f"needs ≥ {needed} more run{'s' * (needed != 1)}")
        return ABVerdict(*s.names, "soak",
                         "signed-rank", Outcome.UNDECIDED, n, cand_med, ctrl_med, math.nan,
                         math.nan, math.nan, unit, math.nan, floor_shown, 1.0, level, None,
                         needed, tuple(notes), _leaning(sentence, leans, lean_text), leans)
    window, regressed = _scan(units, policy, level, floor)
    every = np.concatenate(units)
    sd = MAD_TO_SD * float(np.median(np.abs(every - np.median(every))))
    needed_units = _needed_units(total, window.shift, sd, level, floor, equivalence)
    needed = 0 if regressed else max(0, math.ceil(needed_units / policy.units_per_run))
    outcome = (Outcome.REGRESSED if regressed else Outcome.UNDECIDED if needed > 0
               else Outcome.OK)
    shift = shown(window.shift, s.better, scale)
    low, high = shown_interval(window.low, window.high, s.better, scale)
    half = (abs(high - low) / 2.0) if math.isfinite(high - low) else math.inf
    runs_text = (f"runs {n - window.runs + 1}\u2013{n} of {n}" if window.runs != n
                 else f"{n} soak runs")
    if outcome is Outcome.REGRESSED:
        sentence = (f"{describe(s)}: {fmt_value(cand_med, s.unit)} vs "
                    f"{fmt_value(ctrl_med, s.unit)} in the controls (medians), "
                    f"{fmt_change(shift, unit)} (95 % CI {fmt_interval(low, high, unit)}; "
                    f"{floor_words(floor_shown, configured, min_change, s.unit, unit)}) over "
                    f"{runs_text}, signed-rank {fmt_p(window.p)} (level {level:.2g})")
    elif outcome is Outcome.UNDECIDED:
        # the interval is lopsided in percent: past ten times, its ends say more than a ±
        band = (f", 95 % CI {fmt_interval(low, high, unit)}" if as_factor(high, unit)
                else f" {fmt_spread(half, unit, ' ')}")
        sentence = (f"{describe(s)}: cannot decide yet after {n} soak runs (shift "
                    f"{fmt_change(shift, unit)}{band}), needs ≥ {needed} "
                    f"more run{'s' * (needed != 1)}")
    else:
        sentence = f"{describe(s)}: ok, {fmt_change(shift, unit)} vs the controls ({runs_text})"
    leans = leans and outcome is Outcome.UNDECIDED
    return ABVerdict(*s.names, "soak",
                     "signed-rank", outcome, n, cand_med, ctrl_med, shift, low, high, unit,
                     half, floor_shown, window.p, level, None, needed, tuple(notes),
                     _leaning(sentence, leans, lean_text), leans)


def _leaning(sentence: str, leans: bool, why: str) -> str:
    """An undecided series' sentence, saying when it leans worse (and so holds promotion)."""
    return f"{sentence}; it leans worse ({why})" if leans else sentence


def _judged(series: Iterable[SoakSeries], policy: SoakPolicy) -> list[SoakSeries]:
    return [s for s in series if not is_informative(s.head, policy.informative)]


def judge_soak(runs: Sequence[Sequence[PairedSeries]], policy: SoakPolicy | None = None
               ) -> ABJudgement:
    """Every series of a candidate after its newest soak run (runs oldest first)."""
    policy = policy or SoakPolicy()
    grouped = soak_series(runs)
    judged = len(_judged(grouped, policy))
    level, lean_level = policy.level(judged), policy.lean_level(judged)
    verdicts = []
    for series in grouped:
        if is_informative(series.head, policy.informative):
            verdicts.append(informative_verdict(series.head, "soak"))
        elif all(run.counted for run in series.runs):
            verdicts.append(_soak_counts(series, policy, level, lean_level))
        else:
            verdicts.append(_soak_values(series, policy, level, lean_level))
    return ABJudgement(tuple(verdicts))


def runs_needed(series: SoakSeries, policy: SoakPolicy | None = None, judged: int = 1) -> int:
    """More soak runs before ``series`` can be decided (0: it can be now), for a candidate of
    ``judged`` judged series; the promotion policy bounds the extension by ``max_extra_runs``."""
    policy = policy or SoakPolicy()
    if is_informative(series.head, policy.informative):
        return 0
    levels = policy.level(judged), policy.lean_level(judged)
    if all(run.counted for run in series.runs):
        verdict = _soak_counts(series, policy, *levels)
        return 0 if verdict.outcome is not Outcome.UNDECIDED else 1
    return _soak_values(series, policy, *levels).runs_needed


def soak_config_warnings(policy: SoakPolicy, series: int = 50) -> list[str]:
    """Plain-words warnings when the soak's plan can never reach its own level."""
    level = policy.level(series)
    reach = units_to_reach(level)
    unit = policy.units_per_run
    what = "rounds" if policy.unit == "round" else "runs"
    warnings = []
    if policy.min_runs * unit < reach:
        runs = math.ceil(reach / unit)
        warnings.append(
            f"soak: min_runs = {policy.min_runs} ({policy.min_runs * unit} {what}) can never "
            f"reject on its own at the per-check level {level:.2g} for {series} series "
            f"(smallest p-value {smallest_p(policy.min_runs * unit):.2g}); a regression needs "
            f"≥ {runs} runs in a window")
    if policy.max_runs * unit < reach:
        warnings.append(
            f"soak: even {policy.max_runs} runs ({policy.max_runs * unit} {what}) cannot reach "
            f"the level {level:.2g} for {series} series: the soak can never reject; raise "
            "planned_runs or rounds_per_run")
    return warnings


def detector_config_warnings(policy: DetectorPolicy, series: int = 50) -> list[str]:
    """The history detector's counterpart: can ``min_runs`` against ``min_baseline`` runs ever
    reach the first Holm level? (the smallest rank-test p-value is 1/C(n+m, n))."""
    level = policy.level(policy.min_baseline) / max(1, series)
    smallest = 1.0 / math.comb(policy.min_runs + policy.min_baseline, policy.min_runs)
    if smallest <= level:
        return []
    return [f"detector: {policy.min_runs} candidate runs against {policy.min_baseline} baseline "
            f"runs can never reach the level {level:.2g} for {series} series (smallest p-value "
            f"{smallest:.2g}); raise min_runs or min_baseline"]
