"""A/B judgement at the gate: the candidate against contemporaneous controls, round by round.

A gate run deploys the candidate and a *control* (the current known-good) on twin testbeds and
runs every suite on both, interleaved in rounds (A B, B A, …). A busy host then slows both
sides of a round alike, and the paired difference of a round cancels it. Here live

* :func:`paired_series`: measurements grouped into series, candidate and control paired per
  round (a round missing a side is dropped; counts summed per side);
* :func:`judge_gate`: one verdict per series — ``regressed``, ``ok`` or ``undecided`` — and
  :func:`needs_more_rounds`, which asks for another pair of rounds while a series is undecided,
  and :func:`undecided_suites`, the suites that round measures;
* the verdict records and their excuses, shared with the soak (:mod:`certifier.domain.absoak`).

How a series is judged. Each round gives one *worse-oriented* difference (positive = the
candidate is worse): 100·ln(candidate/control) for positive metrics (a throughput or a latency
that changes by 5 % moves by ~5 whatever its size), or candidate - control in the metric's own
units (percentage points for "%") for metrics that can be 0. The noise scale is the series'
own short-term spread: the robust (MAD) spread of consecutive-round differences within each
side, of this run and of earlier runs on the testbed (:class:`NoiseHistory`), blended with a
prior while there are few of them and never below a small floor — so nobody has to guess a
``min_abs`` for a 50 µs RTT. The shift is a Huber M-estimate of the differences (one 15 %
outlier in six rounds does not swing it). A series **regresses** when the lower confidence
bound of its shift is above the practical floor (1 % by default), at a level corrected for
every judged series and every look (Bonferroni over ``m`` series, the level spent over the
sequential rounds in growing shares: see :meth:`ABPolicy.level`),
so a good candidate is falsely flagged at most ``false_reject_target`` (1 %) per candidate at
the gate; or when *every* round of at least three is worse than ``max_worse_pct`` (50 %: the
noise band is capped, so a gross break is seen even on a series whose band is wider — unless
the cap is within two noise scales, as on ``rtt_max_ms`` of a loaded loopback, where three
rounds past it happen by chance). It is **ok** when the upper bound (95 %) is below the
equivalence bound, else **undecided**: more rounds, then the soak, decide it.

Loss-type series with counts (ping: packets lost of sent) are judged as counts: a one-sided
conditional binomial test of the candidate's events against the controls' (Fisher's test
conditioned on the total), with a floor in percentage points, and explained with absolute
figures ("3 of 400 packets lost vs 0 of 400 in the controls"), never ``+inf %``.

**Informative series** (``ABPolicy.informative``) are reported, not judged: UDP loss and TCP
retransmits on a loaded host are overdispersed and follow the *sender's* CPU starvation rather
than the candidate, and iperf3's CPU percentages measure the host's load more than the
candidate; judging them would blame the candidate for a busy machine.

Pure: numpy and scipy, no I/O; bad numbers (NaN, inf, ≤ 0 on a log scale) are left out or
handled and said in ``notes``.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

from certifier.domain.detector import (
    TIMES,
    Counts,
    Scale,
    _fmt_signed,
    _num,
    _wilson,
    as_factor,
    describe,
    factor_number,
    fmt_change,
    fmt_interval,
    series_fields,
)
from certifier.domain.results import Better, Measurement, Side, series_key

if TYPE_CHECKING:  # judgement may import this module; import it back only when needed
    from certifier.domain.judgement import Excuse

FloatArray = npt.NDArray[np.float64]

DEFAULT_PRIOR_NOISE: Mapping[str, float] = {
    **{f"ping.{m}": 30.0 for m in ("rtt_min_ms", "rtt_avg_ms", "rtt_p50_ms", "rtt_p99_ms",
                                   "rtt_max_ms")},
    "bandwidth.udp_jitter_ms": 30.0}
"""Priors of one round's noise (percent) for series known to be far noisier than the default:
round-trip times of tens of microseconds between namespaces jump between a fast and a slow mode
(7 µs or 20 µs, whatever the CPU was doing), so two rounds that both landed in different modes
must not look like a 170 % regression before the noise history has seen the series. iperf3's
UDP jitter between namespaces is a few microseconds and moves the same way."""

DEFAULT_MIN_CHANGE: Mapping[str, float] = {"bandwidth.udp_jitter_ms": 0.05}
"""The smallest change that matters, in the metric's own unit, where a percentage cannot say
it: UDP jitter of 2.5 µs against 7.3 µs is +192 % (seen on an idle machine, and not repeated
by the confirmation run) but no network anyone runs can tell; a real jitter problem is
milliseconds. A series must worsen by more than this *and* by more than its floor in percent."""

DEFAULT_INFORMATIVE = frozenset({
    "bandwidth.udp_loss_pct", "bandwidth.retransmits",
    "bandwidth.cpu_sender_pct", "bandwidth.cpu_receiver_pct",
})
MAD_TO_SD = 1.4826
GROSS_ROUNDS = 3  # rounds all worse than the cap before a series regresses on the cap alone
COUNT_FLOOR = 0.5  # a "count" metric (lost packets) must worsen by more than half an event
TINY = 1e-12  # the noise scale of a series that never moved: never zero, never a division by 0
MEAN_DEV_TO_SD = 1.2533  # sqrt(pi/2): mean absolute deviation to SD, Gaussian
HUBER_K = 1.5
HUBER_VARIANCE = 1.0 / 0.95  # the Huber estimate's variance at k = 1.5 relative to the mean's


class Outcome(StrEnum):
    REGRESSED = "regressed"
    OK = "ok"
    UNDECIDED = "undecided"  # not enough evidence either way (yet)
    INFORMATIVE = "informative"  # reported, never judged


# --- pairing --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PairedSeries:
    """One series of one A/B run: the candidate's and the control's value in each round.

    ``candidate_counts``/``control_counts`` hold one :class:`Counts` per round when the suite
    gave events and trials (else empty): such a series is judged as counts.
    """

    suite: str
    metric: str
    unit: str
    better: Better
    labels: Mapping[str, str]
    rounds: tuple[int, ...]
    candidate: tuple[float, ...]
    control: tuple[float, ...]
    candidate_counts: tuple[Counts, ...] = ()
    control_counts: tuple[Counts, ...] = ()

    @property
    def key(self) -> str:
        return series_key(self.suite, self.metric, dict(self.labels))

    @property
    def names(self) -> tuple[str, str, str, dict[str, str], str, Better]:
        """What its :class:`ABVerdict` begins with, whichever stage and method judged it."""
        return self.key, self.suite, self.metric, dict(self.labels), self.unit, self.better

    @property
    def counted(self) -> bool:
        return bool(self.rounds) and len(self.candidate_counts) == len(self.rounds) == len(
            self.control_counts)

    def totals(self) -> tuple[Counts, Counts]:
        """The candidate's and the controls' counts summed over the rounds."""
        return sum_counts(self.candidate_counts), sum_counts(self.control_counts)


def sum_counts(counts: Iterable[Counts]) -> Counts:
    listed = list(counts)
    return Counts(sum(c.events for c in listed), sum(c.trials for c in listed))


def paired_series(measurements: Iterable[Measurement]) -> list[PairedSeries]:
    """Group an A/B run's measurements by series and pair the sides round by round.

    A side measured several times in a round gives its median (and its counts summed); a
    round that misses a side is dropped. Counts are kept only when every kept round has them
    on both sides. Sorted by series key.
    """
    grouped: dict[str, dict[int, dict[Side, list[Measurement]]]] = {}
    first: dict[str, Measurement] = {}
    for m in measurements:
        first.setdefault(m.key, m)
        grouped.setdefault(m.key, {}).setdefault(m.round, {}).setdefault(m.side, []).append(m)
    out: list[PairedSeries] = []
    for key in sorted(grouped):
        head = first[key]
        rounds, cand, ctrl = [], [], []
        cand_counts: list[Counts] = []
        ctrl_counts: list[Counts] = []
        for r in sorted(grouped[key]):
            sides = grouped[key][r]
            if Side.CANDIDATE not in sides or Side.CONTROL not in sides:
                continue
            rounds.append(r)
            cand.append(float(np.median([m.value for m in sides[Side.CANDIDATE]])))
            ctrl.append(float(np.median([m.value for m in sides[Side.CONTROL]])))
            for side, into in ((Side.CANDIDATE, cand_counts), (Side.CONTROL, ctrl_counts)):
                counted = [m for m in sides[side] if m.events is not None and m.trials]
                if len(counted) == len(sides[side]):
                    into.append(Counts(sum(int(m.events or 0) for m in counted),
                                       sum(int(m.trials or 0) for m in counted)))
        if not rounds:
            continue
        whole = len(cand_counts) == len(rounds) == len(ctrl_counts)
        out.append(PairedSeries(head.suite, head.metric, head.unit, head.better,
                                dict(head.labels), tuple(rounds), tuple(cand), tuple(ctrl),
                                tuple(cand_counts) if whole else (),
                                tuple(ctrl_counts) if whole else ()))
    return out


@dataclass(frozen=True, slots=True)
class NoiseHistory:
    """Earlier values of each series on this testbed, for its short-term noise scale.

    ``sequences`` maps a series key to sequences of one side's values in round order (one
    sequence per side of an earlier A/B run, or the known-good's runs in order): only
    differences *within* a sequence are used, so a level change between runs does not count
    as noise. Fill it from the database with :meth:`from_runs` or by hand.
    """

    sequences: Mapping[str, Sequence[Sequence[float]]] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: Iterable[Iterable[PairedSeries]]) -> NoiseHistory:
        found: dict[str, list[tuple[float, ...]]] = {}
        for run in runs:
            for s in run:
                found.setdefault(s.key, []).extend((s.candidate, s.control))
        return cls(found)

    def for_key(self, key: str) -> Sequence[Sequence[float]]:
        return self.sequences.get(key, ())


# --- policy ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ABPolicy:
    """How sure and how large before a series regresses at the gate, and how many rounds.

    ``floors`` maps "suite.metric" to a floor in percent (percentage points for counts and
    "%" metrics); ``caps`` to a ``max_worse_pct``. ``prior_noise_pct`` is the spread of one
    round's difference assumed before any is seen, worth ``prior_weight`` observed ones
    (``prior_noise`` per "suite.metric", by default the ping round-trip times').
    """

    false_reject_target: float = 0.01  # per candidate, over every series and look
    min_rounds: int = 2
    max_rounds: int = 6
    floor_pct: float = 1.0
    floors: Mapping[str, float] = field(default_factory=dict)
    max_worse_pct: float = 50.0
    caps: Mapping[str, float] = field(default_factory=dict)
    equivalence_pct: float = 20.0  # the README's margin: finer changes are the soak's
    ok_confidence: float = 0.95
    count_floor_pp: float = 0.5
    count_equivalence_pp: float = 2.0
    pp_floor: float = 0.1  # floor and noise floor, percentage points, "%" metrics
    prior_noise_pct: float = 5.0
    prior_noise: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRIOR_NOISE))
    prior_weight: float = 3.0
    noise_floor_pct: float = 0.5
    informative: frozenset[str] = DEFAULT_INFORMATIVE
    min_change: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_CHANGE))

    @property
    def looks(self) -> int:
        return max(1, self.max_rounds - self.min_rounds + 1)

    def level(self, judged: int, rounds: int | None = None) -> float:
        """One series' level at the look after ``rounds`` rounds (default: the last look).

        The target is divided among the judged series (Bonferroni) and spent over the looks in
        proportion to their number (1, 2, …, L of L(L+1)/2): early looks with few rounds are
        strict — a gross break passes them anyway — and the last look, with the most
        rounds, gets the largest share. The shares add up to the target, so the union bound
        holds over every series and look.
        """
        looks = self.looks
        look = looks if rounds is None else min(looks, max(1, rounds - self.min_rounds + 1))
        return self.false_reject_target / max(1, judged) * look / (looks * (looks + 1) / 2)

    def floor_for(self, suite: str, metric: str, default: float) -> float:
        return self.floors.get(f"{suite}.{metric}", default)

    def cap_for(self, suite: str, metric: str) -> float:
        return self.caps.get(f"{suite}.{metric}", self.max_worse_pct)

    def prior_for(self, suite: str, metric: str) -> float:
        return self.prior_noise.get(f"{suite}.{metric}", self.prior_noise_pct)


# --- verdicts -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ABVerdict:
    """One series' result, as data and as one sentence.

    ``shift``/``low``/``high`` are the candidate's change in the metric's own sense (-4.1 means
    4.1 % lower) in ``shift_unit`` ("%", "pp" or the metric's unit); ``noise`` the half-width
    of the noise band in the same unit; ``n`` rounds (gate) or runs (soak) judged.
    """

    key: str
    suite: str
    metric: str
    labels: Mapping[str, str]
    unit: str
    better: Better
    stage: str  # "gate" | "soak"
    method: str  # "paired-huber" | "signed-rank" | "binomial" | "none"
    outcome: Outcome
    n: int
    candidate_median: float
    control_median: float
    shift: float
    low: float
    high: float
    shift_unit: str
    noise: float
    floor: float
    p_value: float
    level: float
    counts: tuple[Counts, Counts] | None
    runs_needed: int
    notes: tuple[str, ...]
    sentence: str
    leans_worse: bool = False  # undecided, but worse than the lean bound, consistently
    more_rounds_help: bool = False  # gate: undecided, and the rounds left could decide it

    @property
    def regressed(self) -> bool:
        return self.outcome is Outcome.REGRESSED

    def as_dict(self) -> dict[str, Any]:
        return {
            **series_fields(self), "stage": self.stage, "method": self.method,
            "outcome": str(self.outcome), "n": self.n,
            "candidate_median": _num(self.candidate_median),
            "control_median": _num(self.control_median), "shift": _num(self.shift),
            "shift_ci": [_num(self.low), _num(self.high)], "shift_unit": self.shift_unit,
            "noise": _num(self.noise), "floor": self.floor, "p_value": _num(self.p_value),
            "level": self.level, "runs_needed": self.runs_needed,
            "leans_worse": self.leans_worse,
            "counts": None if self.counts is None else {
                "candidate": [self.counts[0].events, self.counts[0].trials],
                "control": [self.counts[1].events, self.counts[1].trials]},
            "notes": list(self.notes),
        }

    def excuse(self) -> Excuse | None:
        """``regression`` (blocking) or ``undecided``/``undecidable`` (non-blocking); None
        for a series that is ok or informative."""
        from certifier.domain.judgement import Excuse  # here, not on top: see TYPE_CHECKING

        if self.outcome is Outcome.REGRESSED:
            return Excuse("regression", self.key, self.sentence, self.as_dict())
        if self.outcome is Outcome.UNDECIDED:
            kind = "undecided" if self.stage == "gate" else "undecidable"
            return Excuse(kind, self.key, self.sentence, self.as_dict())
        return None


@dataclass(frozen=True, slots=True)
class ABJudgement:
    """Every series of one candidate at one gate look or soak check."""

    verdicts: tuple[ABVerdict, ...]

    @property
    def regressed(self) -> tuple[ABVerdict, ...]:
        return tuple(v for v in self.verdicts if v.outcome is Outcome.REGRESSED)

    @property
    def undecided(self) -> tuple[ABVerdict, ...]:
        return tuple(v for v in self.verdicts if v.outcome is Outcome.UNDECIDED)

    def excuses(self) -> list[Excuse]:
        """Regressions first (they block), then the series that cannot be decided yet."""
        found = [v.excuse() for v in (*self.regressed, *self.undecided)]
        return [e for e in found if e is not None]

    def suites_to_remeasure(self) -> frozenset[str]:
        """The suites another gate round should measure: those with an undecided series the
        rounds left could decide (:func:`_decidable_by_the_cap`; counts and series below
        ``min_rounds`` always may); none once some series has regressed."""
        if self.regressed:
            return frozenset()
        return frozenset(v.suite for v in self.undecided
                         if v.more_rounds_help or v.method == "binomial")


# --- shared arithmetic (the soak uses it too) -------------------------------------------------

def scale_of(series: Sequence[PairedSeries]) -> Scale:
    """Log ratios for positive metrics; linear for "%" and counts, or any value ≤ 0."""
    if not series:
        return Scale.LINEAR
    head = series[0]
    if head.unit in ("%", "count"):
        return Scale.LINEAR
    values = [v for s in series for v in (*s.candidate, *s.control) if math.isfinite(v)]
    return Scale.LOG if values and min(values) > 0 else Scale.LINEAR


def analysed(values: Sequence[float], scale: Scale) -> FloatArray:
    """Values on the scale differences are taken on: 100·ln(v) (log-percent) or as they are."""
    data = np.asarray(values, dtype=np.float64)
    if scale is Scale.LOG:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(100.0 * np.log(data), dtype=np.float64)
    return data


def orientation(better: Better) -> float:
    """+1 when a higher value is worse (latency), -1 when a lower one is (throughput)."""
    return 1.0 if better is Better.LOWER else -1.0


def worse_diffs(s: PairedSeries, scale: Scale) -> FloatArray:
    """One worse-oriented difference per round, non-finite ones left out."""
    d = orientation(s.better) * (analysed(s.candidate, scale) - analysed(s.control, scale))
    return d[np.isfinite(d)]


def pct_threshold(pct: float, better: Better, scale: Scale) -> float:
    """A "worse by pct %" threshold on the difference scale (log-percent or as given)."""
    if scale is not Scale.LOG:
        return pct
    if better is Better.HIGHER:
        return -100.0 * math.log(max(1e-9, 1.0 - pct / 100.0))
    return 100.0 * math.log1p(pct / 100.0)


def shown(d: float, better: Better, scale: Scale) -> float:
    """A worse-oriented difference as a change in the metric's own sense (% or units)."""
    own = orientation(better) * d
    if scale is Scale.LOG:
        return 100.0 * math.expm1(own / 100.0) if math.isfinite(own) else own
    return own


def shown_interval(low: float, high: float, better: Better, scale: Scale) -> tuple[float, float]:
    a, b = shown(low, better, scale), shown(high, better, scale)
    return (a, b) if a <= b else (b, a)


def shift_unit(unit: str, scale: Scale) -> str:
    if scale is Scale.LOG:
        return "%"
    return "pp" if unit == "%" else unit


def linear_floor(s: PairedSeries, policy_pct: float, pp_floor: float, median: float) -> float:
    """A linear series' floor: the percentage of the control's median, at least ``pp_floor``
    for "%" metrics and half an event for counts (a median of 0 has no percentage)."""
    base = policy_pct / 100.0 * abs(median) if math.isfinite(median) else 0.0
    return max(base, pp_floor if s.unit == "%" else COUNT_FLOOR if s.unit == "count" else 0.0)


def with_min_change(floor_pct: float, min_change: float | None, median: float,
                    scale: Scale) -> float:
    """A floor raised to ``min_change`` (the metric's own unit): in percent of the control's
    ``median`` on the log scale, as it is on the linear one."""
    if not min_change:
        return floor_pct
    if scale is Scale.LOG:
        return (max(floor_pct, 100.0 * min_change / median)
                if math.isfinite(median) and median > 0 else floor_pct)
    return max(floor_pct, min_change)


def floor_words(floor_shown: float, configured: float, min_change: float | None,
                metric_unit: str, unit: str) -> str:
    """"floor 1 %", or "floor 0.05 ms" where the smallest change that matters set it."""
    if min_change and floor_shown > configured and unit == "%":
        return f"floor {min_change:g} {metric_unit}"
    return f"floor {floor_shown:g} {unit}"


def noise_scale(sequences: Iterable[Sequence[float]], scale: Scale, prior: float,
                prior_weight: float, floor: float) -> tuple[float, int]:
    """The spread of one round's paired difference, and how many differences it rests on.

    Consecutive differences within one side have variance 2sigma² (sigma one side's noise), the same
    as a paired difference of two independent sides; so their robust SD (1.4826·MAD) is the
    paired difference's SD, and a slow drift of the testbed barely enters it. Blended with
    ``prior`` (as ``prior_weight`` observations) and kept above ``floor``.
    """
    steps: list[float] = []
    for seq in sequences:
        values = [v for v in _on_scale(seq, scale) if math.isfinite(v)]
        steps.extend(b - a for a, b in itertools.pairwise(values))
    n = len(steps)
    if n:
        centre = statistics.median(steps)
        spread = [abs(x - centre) for x in steps]
        # the larger of the MAD's and the mean deviation's SD: the MAD alone ignores the
        # occasional outlier round entirely, and a series with outliers then looks too quiet
        sd = max(MAD_TO_SD * statistics.median(spread), MEAN_DEV_TO_SD * statistics.fmean(spread))
        var = (n * sd * sd + prior_weight * prior * prior) / (n + prior_weight)
    else:
        var = prior * prior
    return max(math.sqrt(var), floor), n


def _on_scale(values: Sequence[float], scale: Scale) -> list[float]:
    """:func:`analysed` for a few values, in plain floats (numpy costs more than it saves)."""
    if scale is Scale.LOG:
        return [100.0 * math.log(v) if v > 0 else math.nan for v in values]
    return [float(v) for v in values]


@lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """Student's t quantile, cached: the gate asks the same few dozen at every look."""
    return float(stats.t.ppf(q, df))


def huber(d: FloatArray, sigma: float) -> float:
    """Huber's M-estimate of location with a known scale (k = 1.5), from the median."""
    values = d.tolist()
    mu = float(statistics.median(values))
    for _ in range(50):
        step = sigma * statistics.fmean(max(-HUBER_K, min(HUBER_K, (x - mu) / sigma))
                                        for x in values)
        mu += step
        if abs(step) < 1e-9 * max(1.0, sigma):
            break
    return mu


def count_noun(metric: str) -> str:
    return "packets lost" if "loss" in metric or "lost" in metric else "events"


def counts_text(metric: str, cand: Counts, ctrl: Counts) -> str:
    """"3 of 400 packets lost vs 0 of 400 in the controls": absolute, never a percentage of 0."""
    return (f"{cand.events} of {cand.trials} {count_noun(metric)} vs {ctrl.events} of "
            f"{ctrl.trials} in the controls")


def binomial_p(cand: Counts, ctrl: Counts) -> float:
    """One-sided P(candidate's events ≥ observed | total events), equal rates: Fisher's
    conditional test in its binomial form (exact)."""
    total = cand.events + ctrl.events
    if total == 0 or cand.trials <= 0 or ctrl.trials <= 0:
        return 1.0
    share = cand.trials / (cand.trials + ctrl.trials)
    return float(stats.binom.sf(cand.events - 1, total, share))


def rate_difference(cand: Counts, ctrl: Counts) -> tuple[float, float, float]:
    """Candidate minus control rate in percentage points, with Newcombe's 95 % interval."""
    rc, rk = cand.events / cand.trials, ctrl.events / ctrl.trials
    lc, hc = _wilson(cand.events, cand.trials)
    lk, hk = _wilson(ctrl.events, ctrl.trials)
    diff = rc - rk
    low = diff - math.sqrt((rc - lc) ** 2 + (hk - rk) ** 2)
    high = diff + math.sqrt((hc - rc) ** 2 + (rk - lk) ** 2)
    return 100 * diff, 100 * low, 100 * high


def fmt_value(x: float, unit: str) -> str:
    return f"{x:.4g} {unit}" if math.isfinite(x) else "n/a"


def fmt_size(x: float) -> str:
    """A band's half-width in plain digits: "6.0", "0.35", "140" (never "1.4e+02")."""
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2g}" if abs(x) < 1 else f"{x:.1f}"


def fmt_spread(x: float, unit: str, gap: str = "") -> str:
    """A log-symmetric band's half-width, "±3.3 ms" (``gap`` after the ±); ten times or more
    as a factor either way (times or divided by 85.6), not "±8459 %"."""
    if as_factor(x, unit):
        return f"{TIMES}/\u00f7{gap}{factor_number(x)}"
    return f"±{gap}{fmt_size(x)} {unit}"


def fmt_p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


# --- the gate -------------------------------------------------------------------------------

def informative_verdict(s: PairedSeries, stage: str) -> ABVerdict:
    sentence = (f"{describe(s)}: informative only, not judged (it follows the host's load "
                "more than the candidate)")
    return ABVerdict(*s.names, stage, "none",
                     Outcome.INFORMATIVE, len(s.rounds), median_of(s.candidate),
                     median_of(s.control), math.nan, math.nan, math.nan, "", math.nan, 0.0,
                     math.nan, 0.0, s.totals() if s.counted else None, 0, (), sentence)


def median_of(values: Sequence[float]) -> float:
    """The median of the finite values (NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def _gate_counts(s: PairedSeries, policy: ABPolicy, level: float) -> ABVerdict:
    cand, ctrl = s.totals()
    n = len(s.rounds)
    floor = policy.floor_for(s.suite, s.metric, policy.count_floor_pp)
    p = binomial_p(cand, ctrl)
    diff, low, high = rate_difference(cand, ctrl)
    if n < policy.min_rounds:
        outcome = Outcome.UNDECIDED
    elif p <= level and diff > floor:
        outcome = Outcome.REGRESSED
    elif high < policy.count_equivalence_pp or diff <= floor:
        # No worse than the controls by the floor: more rounds of a few packets each could not
        # tell a small loss anyway, and the soak pools every run's counts for that.
        outcome = Outcome.OK
    else:
        outcome = Outcome.UNDECIDED
    figures = counts_text(s.metric, cand, ctrl)
    rounds = f"{n} round{'s' * (n != 1)}"
    if outcome is Outcome.REGRESSED:
        sentence = (f"{describe(s)}: {figures} over {rounds} ({_fmt_signed(diff, 2)} pp, "
                    f"95 % CI {_fmt_signed(low, 2)}…{_fmt_signed(high, 2)} pp; floor "
                    f"{floor:g} pp), {fmt_p(p)} (level {level:.2g})")
    elif outcome is Outcome.UNDECIDED:
        sentence = (f"{describe(s)}: cannot decide at the gate after {rounds} ({figures}); "
                    "the soak goes on")
    else:
        sentence = f"{describe(s)}: ok, {figures} over {rounds}"
    return ABVerdict(*s.names, "gate",
                     "binomial", outcome, n, median_of(s.candidate), median_of(s.control), diff,
                     low, high, "pp", math.nan, floor, p, level, (cand, ctrl), 0, (), sentence)


def _gate_values(s: PairedSeries, policy: ABPolicy, level: float,
                 history: Sequence[Sequence[float]], last_level: float) -> ABVerdict:
    notes: list[str] = []
    scale = scale_of([s])
    d = worse_diffs(s, scale)
    if len(d) < len(s.rounds):
        notes.append(f"{len(s.rounds) - len(d)} round(s) with non-finite values left out")
    cand_med, ctrl_med = median_of(s.candidate), median_of(s.control)
    unit = shift_unit(s.unit, scale)
    min_change = policy.min_change.get(f"{s.suite}.{s.metric}")
    if scale is Scale.LOG:
        configured = policy.floor_for(s.suite, s.metric, policy.floor_pct)
        floor_shown = with_min_change(configured, min_change, ctrl_med, scale)
        floor = pct_threshold(floor_shown, s.better, scale)
        cap_shown = with_min_change(policy.cap_for(s.suite, s.metric), min_change, ctrl_med,
                                    scale)
        cap = pct_threshold(cap_shown, s.better, scale)
        equivalence = pct_threshold(max(policy.equivalence_pct, 2 * floor_shown), s.better,
                                    scale)
        prior, noise_floor = policy.prior_for(s.suite, s.metric), policy.noise_floor_pct
    else:
        configured = linear_floor(
            s, policy.floor_for(s.suite, s.metric, policy.floor_pct), policy.pp_floor, ctrl_med)
        floor = floor_shown = with_min_change(configured, min_change, ctrl_med, scale)
        ref = abs(ctrl_med) if math.isfinite(ctrl_med) else 0.0
        cap_shown = policy.cap_for(s.suite, s.metric)
        cap = max(cap_shown / 100.0 * ref, 10 * floor)
        equivalence = max(policy.equivalence_pct / 100.0 * ref, 2 * floor)
        prior = max(policy.prior_for(s.suite, s.metric) / 100.0 * ref, floor)
        noise_floor = max(policy.noise_floor_pct / 100.0 * ref, floor / 10, TINY)
    sequences = [*history, s.candidate, s.control]
    sigma, steps = noise_scale(sequences, scale, prior, policy.prior_weight, noise_floor)
    n = len(d)
    if len(s.rounds) >= policy.min_rounds and _unmoved(s):
        return _unchanged(s, policy, level, unit)
    if n == 0:
        return _no_data(s, policy, level, notes)
    df = max(1.0, steps + policy.prior_weight - 1.0)
    se = sigma * math.sqrt(HUBER_VARIANCE / n)
    mu = huber(d, sigma)
    band = t_quantile(1.0 - level, df) * se
    ok_band = t_quantile(policy.ok_confidence, df) * se
    # the cap on the noise band: every round worse than max_worse_pct regresses a noisy series
    # too, but not on two rounds, nor where the cap is within two noise scales (rtt_max)
    gross = n >= max(GROSS_ROUNDS, policy.min_rounds) and float(d.min()) > cap >= 2 * sigma
    if n < policy.min_rounds:
        outcome = Outcome.UNDECIDED
        notes.append(f"{n} round(s): at least {policy.min_rounds} needed to judge")
    elif mu - band > floor or gross:
        outcome = Outcome.REGRESSED
    elif mu + ok_band < equivalence:
        outcome = Outcome.OK
    else:
        outcome = Outcome.UNDECIDED
    shift = shown(mu, s.better, scale)
    low, high = shown_interval(mu - band, mu + band, s.better, scale)
    noise_shown = abs(shown(band, Better.LOWER, scale))
    rounds = f"{n} round{'s' * (n != 1)}"
    if outcome is Outcome.REGRESSED:
        why = (f"every round worse than {cap_shown:g} %"
               if gross and not mu - band > floor else
               f"noise band {fmt_spread(noise_shown, unit)}, "
               + floor_words(floor_shown, configured, min_change, s.unit, unit))
        sentence = (f"{describe(s)}: {fmt_value(cand_med, s.unit)} vs "
                    f"{fmt_value(ctrl_med, s.unit)} in the controls of the same {rounds} "
                    f"(medians): {fmt_change(shift, unit)} (bound "
                    f"{fmt_interval(low, high, unit)} at level {level:.2g}; {why})")
    elif outcome is Outcome.UNDECIDED:
        sentence = (f"{describe(s)}: cannot decide at the gate after {rounds} (shift "
                    f"{fmt_change(shift, unit)} {fmt_spread(noise_shown, unit, ' ')}); "
                    "the soak goes on")
    else:
        sentence = (f"{describe(s)}: ok, {fmt_change(shift, unit)} vs the controls over "
                    f"{rounds}")
    helps = outcome is Outcome.UNDECIDED and (
        n < policy.min_rounds or _decidable_by_the_cap(mu, sigma, n, steps, floor, equivalence,
                                                       policy, last_level))
    return ABVerdict(*s.names, "gate",
                     "paired-huber", outcome, n, cand_med, ctrl_med, shift, low, high, unit,
                     noise_shown, floor_shown, math.nan, level, None, 0, tuple(notes), sentence,
                     more_rounds_help=helps)


def _decidable_by_the_cap(mu: float, sigma: float, n: int, steps: int, floor: float,
                          equivalence: float, policy: ABPolicy, last_level: float) -> bool:
    """Whether the rounds left, up to ``max_rounds``, could decide a series: at the cap, with
    the same noise scale, its band would be narrower than the equivalence bound (so a shift
    near 0 could be shown ok), or its estimate so far would clear the floor (regressed). A
    series whose band is ±300 % after two rounds (a 20 µs round-trip time, a virtual disk's
    IOPS) is decided by neither in a third round, so it asks for none: the soak, with its many
    rounds, decides it."""
    last = policy.max_rounds
    if last <= n:
        return False
    df = max(1.0, steps + 2 * (last - n) + policy.prior_weight - 1.0)
    se = sigma * math.sqrt(HUBER_VARIANCE / last)
    return (t_quantile(policy.ok_confidence, df) * se < equivalence
            or mu - t_quantile(1.0 - last_level, df) * se > floor)


def _unmoved(s: PairedSeries) -> bool:
    """Every round measured the very same finite value on both sides (a longest outage of 0 ms,
    a loss of 0 %): no difference at all, which more rounds would not change."""
    values = {*s.candidate, *s.control}
    return len(values) == 1 and all(math.isfinite(v) for v in values)


def _unchanged(s: PairedSeries, policy: ABPolicy, level: float, unit: str) -> ABVerdict:
    value = s.candidate[0]
    n = len(s.rounds)
    sentence = (f"{describe(s)}: ok, {fmt_value(value, s.unit)} on both sides in all {n} "
                "rounds")
    return ABVerdict(s.key, s.suite, s.metric, dict(s.labels), s.unit, s.better, "gate",
                     "none", Outcome.OK, n, value, value, 0.0, 0.0, 0.0, unit, 0.0,
                     policy.floor_for(s.suite, s.metric, policy.floor_pct), math.nan, level,
                     None, 0, (), sentence)


def _no_data(s: PairedSeries, policy: ABPolicy, level: float, notes: list[str]) -> ABVerdict:
    notes.append("no round with usable values on both sides")
    return ABVerdict(*s.names, "gate", "none",
                     Outcome.UNDECIDED, 0, math.nan, math.nan, math.nan, math.nan, math.nan, "",
                     math.nan, 0.0, math.nan, level, None, 0, tuple(notes),
                     f"{describe(s)}: cannot decide at the gate ({'; '.join(notes)})")


def is_informative(s: PairedSeries, informative: frozenset[str]) -> bool:
    return f"{s.suite}.{s.metric}" in informative


def judge_gate(series: Iterable[PairedSeries], policy: ABPolicy | None = None,
               noise: NoiseHistory | None = None) -> ABJudgement:
    """One verdict per series of a gate run so far (see the module docstring)."""
    policy = policy or ABPolicy()
    noise = noise or NoiseHistory()
    listed = list(series)
    judged = [s for s in listed if not is_informative(s, policy.informative)]
    verdicts = []
    for s in listed:
        level = policy.level(len(judged), len(s.rounds))
        if is_informative(s, policy.informative):
            verdicts.append(informative_verdict(s, "gate"))
        elif s.counted:
            verdicts.append(_gate_counts(s, policy, level))
        else:
            verdicts.append(_gate_values(s, policy, level, noise.for_key(s.key),
                                         policy.level(len(judged), policy.max_rounds)))
    return ABJudgement(tuple(verdicts))


def needs_more_rounds(measurements: Iterable[Measurement], rounds_done: int,
                      policy: ABPolicy | None = None, noise: NoiseHistory | None = None) -> bool:
    """Whether the gate should run another round: some series is still undecided (or fewer
    than ``min_rounds`` ran), none has regressed yet, and the cap ``max_rounds`` is not reached.
    A regression found stops the rounds: the run is judged on what it has, and a regression is
    confirmed by a second run with fresh controls anyway, which costs less than more rounds."""
    policy = policy or ABPolicy()
    if rounds_done >= policy.max_rounds:
        return False
    if rounds_done < policy.min_rounds:
        return True
    return bool(undecided_suites(measurements, policy, noise))


def undecided_suites(measurements: Iterable[Measurement], policy: ABPolicy | None = None,
                     noise: NoiseHistory | None = None) -> frozenset[str]:
    """The suites whose series another round should measure
    (:meth:`ABJudgement.suites_to_remeasure` of the gate's judgement so far). A round past
    ``min_rounds`` measures only these, so one undecided round-trip time costs a second of
    pings, not every suite again, and a series too noisy for the rounds left costs none."""
    return judge_gate(paired_series(measurements), policy or ABPolicy(),
                      noise).suites_to_remeasure()
