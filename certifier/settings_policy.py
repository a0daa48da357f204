"""The configuration sections that become the pipeline's policies: soak, thresholds, the
detector, the suites, culprit finding, the environment check and A/B runs.

Split from :mod:`certifier.settings`, which re-exports every name here, so a config section is
still ``certifier.settings.SoakConfig`` to its readers.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from certifier.domain.absoak import SoakPolicy as ABSoakPolicy
from certifier.domain.abtest import DEFAULT_MIN_CHANGE, ABPolicy
from certifier.domain.bisection import BisectPolicy
from certifier.domain.detector import DetectorPolicy
from certifier.domain.environment import FIGURES as ENVIRONMENT_FIGURES
from certifier.domain.environment import EnvironmentPolicy
from certifier.domain.judgement import FixedLimit, JudgementPolicy, Margin
from certifier.domain.promotion import SoakPolicy
from certifier.limits import (
    Duration,
)


class Strict(BaseModel):
    """Every config section: unknown keys are errors, and a parsed section never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SoakConfig(Strict):
    duration: Duration = timedelta(days=7)
    interval: Duration = timedelta(hours=6)
    min_runs: int = Field(default=4, ge=1)
    max_infra_retries: int = Field(default=2, ge=0, le=20)
    infra_backoff: Duration = timedelta(seconds=30)  # first retry; doubles per retry after
    infra_backoff_max: Duration = timedelta(minutes=10)
    # Runs of the same kind a failed check or a regression gets before it rejects (0: none); a
    # check that passes on its recheck is flaky and blocks promotion until waived.
    recheck_failed: int = Field(default=1, ge=0, le=5)
    # Soak runs added after the planned soak while the A/B statistics cannot decide some series
    # yet (too few runs for the level): the soak is extended, never cut short (0: no extension).
    max_extra_runs: int = Field(default=8, ge=0, le=100)

    def planned_runs(self) -> int:
        return max(1, math.ceil(self.duration / self.interval), self.min_runs)

    def policy(self) -> SoakPolicy:
        return SoakPolicy(duration=self.duration, interval=self.interval, min_runs=self.min_runs,
                          max_infra_retries=self.max_infra_retries,
                          infra_backoff=self.infra_backoff,
                          infra_backoff_max=self.infra_backoff_max,
                          recheck_failed=self.recheck_failed,
                          max_extra_runs=self.max_extra_runs)


_V = TypeVar("_V")


def _metric_keyed(v: dict[str, _V], example: str) -> dict[str, _V]:
    """``v`` if every key is written suite.metric (``example`` shows one), else a ValueError."""
    bad = [k for k in v if not re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", k)]
    if bad:
        raise ValueError(f"metric keys are written suite.metric, e.g. {example}: {bad}")
    return v


class MarginConfig(Strict):
    max_worse_pct: float = Field(default=20.0, ge=0)
    min_abs: float = Field(default=0.0, ge=0)


class ThresholdsConfig(Strict):
    default: MarginConfig = MarginConfig()
    metrics: dict[str, MarginConfig] = Field(default_factory=dict)
    limits: tuple[str, ...] = ()

    @field_validator("metrics")
    @classmethod
    def _metric_keys(cls, v: dict[str, MarginConfig]) -> dict[str, MarginConfig]:
        return _metric_keyed(v, "ping.rtt_avg_ms")

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for text in v:
            FixedLimit.parse(text)
        return v

    def policy(self) -> JudgementPolicy:
        return JudgementPolicy(
            default_margin=Margin(self.default.max_worse_pct, self.default.min_abs),
            margins={k: Margin(m.max_worse_pct, m.min_abs) for k, m in self.metrics.items()},
            limits=tuple(FixedLimit.parse(t) for t in self.limits),
        )


class DetectorConfig(Strict):
    """The statistical regression detector (``certifier/domain/detector.py``) during soak.

    Each soak run tests the candidate's runs so far against the known-good's newest
    ``baseline_window`` runs on the same testbed, for every series with at least
    ``min_baseline_runs`` of them (fewer: the margin in ``thresholds`` is the only numeric
    gate). ``false_reject_target`` is the chance that a good candidate's whole soak is rejected
    by noise; ``floor_pct`` the smallest shift that counts (per metric in ``floors``).
    ``baseline_every``: a control run of the known-good after every N soak runs, so the baseline
    follows the testbed's drift (0: none).
    """

    enabled: bool = True
    false_reject_target: float = Field(default=0.05, gt=0, lt=0.5)
    min_baseline_runs: int = Field(default=20, ge=5, le=1000)
    min_candidate_runs: int = Field(default=5, ge=2, le=100)
    baseline_window: int = Field(default=40, ge=5, le=1000)
    floor_pct: float = Field(default=1.0, ge=0, le=100)
    floors: dict[str, float] = Field(default_factory=dict)
    min_change: dict[str, float] = Field(default_factory=dict)
    baseline_every: int = Field(default=4, ge=0, le=1000)

    @field_validator("min_change")
    @classmethod
    def _min_change(cls, v: dict[str, float]) -> dict[str, float]:
        negative = [k for k, f in _metric_keyed(v, "bandwidth.udp_jitter_ms").items()
                    if not (f >= 0 and math.isfinite(f))]
        if negative:
            raise ValueError(f"min_change is a size in the metric's unit, 0 or more: {negative}")
        return v

    def min_changes(self) -> dict[str, float]:
        """The built-in smallest changes that matter, overridden by ``min_change``."""
        return {**DEFAULT_MIN_CHANGE, **self.min_change}

    @field_validator("floors")
    @classmethod
    def _floor_keys(cls, v: dict[str, float]) -> dict[str, float]:
        negative = [k for k, f in _metric_keyed(v, "ping.rtt_p99_ms").items()
                    if not 0 <= f <= 100]
        if negative:
            raise ValueError(f"floors are percentages between 0 and 100: {negative}")
        return v

    @model_validator(mode="after")
    def _window(self) -> DetectorConfig:
        if self.baseline_window < self.min_baseline_runs:
            raise ValueError(f"baseline_window ({self.baseline_window}) is smaller than "
                             f"min_baseline_runs ({self.min_baseline_runs})")
        return self

    def policy(self, soak: SoakConfig) -> DetectorPolicy | None:
        if not self.enabled:
            return None
        planned = max(1, math.ceil(soak.duration / soak.interval), self.min_candidate_runs)
        return DetectorPolicy.soak(
            runs=planned, false_reject_target=self.false_reject_target,
            min_runs=self.min_candidate_runs, min_baseline=self.min_baseline_runs,
            baseline_window=self.baseline_window, floor_pct=self.floor_pct,
            floors=dict(self.floors))


class PingSuiteConfig(Strict):
    """``count`` pings at ``interval`` per pair and network; pairs run ``concurrency`` at once.

    ``mtu_check`` also sends one full-size ``ping -M do`` per pair and network (a host with a
    wrong MTU still answers small pings)."""

    count: int = Field(default=20, ge=1, le=10000)
    interval: float = Field(default=0.05, ge=0.002, le=10)
    mtu_check: bool = True
    concurrency: int = Field(default=8, ge=1, le=64)


PAIR_RE = r"^[a-z][a-z0-9]{0,7}->[a-z][a-z0-9]{0,7}(@[a-z][a-z0-9]{0,7})?$"


class BandwidthSuiteConfig(Strict):
    """iperf3 tests per pair, each ``duration_s`` long: TCP with ``streams`` streams, the same
    in reverse (``reverse``), TCP with ``parallel_streams`` (0: skip) and UDP at
    ``udp_rate_mbit`` (0: skip). ``pairs``: ``first``, ``all`` or a list like
    ``["compute1->compute2@tenant"]``."""

    duration_s: float = Field(default=3, gt=0, le=600)
    streams: int = Field(default=1, ge=1, le=128)
    pairs: Literal["first", "all"] | tuple[Annotated[str, Field(pattern=PAIR_RE)], ...] = "first"
    reverse: bool = True
    parallel_streams: int = Field(default=4, ge=0, le=128)
    udp_rate_mbit: float = Field(default=100, ge=0, le=100_000)
    omit_s: float = Field(default=0, ge=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)


StorageJob = Literal["seq_write", "seq_read", "rand_write", "rand_read"]


class StorageSuiteConfig(Strict):
    """fio on a loop-mounted ext4 in the testbed's state folder; ``size`` per job file,
    ``runtime_s`` per job."""

    size: str = Field(default="64M", pattern=r"^[1-9][0-9]{0,5}[KMG]$")
    runtime_s: float = Field(default=2, gt=0, le=600)
    jobs: tuple[StorageJob, ...] = ("seq_write", "seq_read", "rand_write", "rand_read")
    direct: bool = True
    iodepth: int = Field(default=16, ge=1, le=1024)


class UpgradeSuiteConfig(Strict):
    """The upgrade-preservation suite (``docs/recipes.md``): known-good deployed, resources
    created, upgraded in place to the candidate under a continuous ping, resources verified.

    ``run_kinds``: the run kinds it runs in (it needs a known-good to start from). The ping goes
    from ``ping_from`` to ``ping_to`` (default: the testbed's first two hosts) every
    ``ping_interval`` seconds, from ``settle_s`` before the first ``upgrade`` hook to ``settle_s``
    after the last. ``max_outage_s``, when set, is also a check (tripleo-upgrade's loss limit).
    """

    enabled: bool = True
    run_kinds: tuple[Literal["gate", "soak", "baseline", "bisect"], ...] = (
        "gate", "soak", "bisect")
    ping_interval: float = Field(default=0.05, ge=0.002, le=1)
    ping_from: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]{0,7}$")
    ping_to: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]{0,7}$")
    settle_s: float = Field(default=0.5, ge=0, le=60)
    max_outage_s: float | None = Field(default=None, gt=0)


SuiteName = Literal["ping", "bandwidth", "storage"]


class SuitesConfig(Strict):
    enabled: tuple[SuiteName, ...] = ("ping", "bandwidth", "storage")
    ping: PingSuiteConfig = PingSuiteConfig()
    bandwidth: BandwidthSuiteConfig = BandwidthSuiteConfig()
    storage: StorageSuiteConfig = StorageSuiteConfig()
    upgrade: UpgradeSuiteConfig = UpgradeSuiteConfig()


class BisectionConfig(Strict):
    """Culprit finding after a rejection (docs/architecture.md, "Culprit finding"): bisect runs
    on the gate testbed, at most ``max_steps`` of them per rejection, infra retries as in
    ``soak``. Turned off, a rejection that changed several components leads to isolation, and a
    running culprit finding stops at the next reconcile pass."""

    enabled: bool = True
    max_steps: int = Field(default=16, ge=1, le=200)
    # A failing step counts only once a second run of the same combination fails the same way.
    confirm_failures: bool = True

    def policy(self, soak: SoakConfig) -> BisectPolicy | None:
        if not self.enabled:
            return None
        return BisectPolicy(max_steps=self.max_steps, confirm_failures=self.confirm_failures,
                            max_infra_retries=soak.max_infra_retries,
                            infra_backoff=soak.infra_backoff,
                            infra_backoff_max=soak.infra_backoff_max)


class EnvironmentConfig(Strict):
    """The environment check (``certifier/domain/environment.py``): a run whose host pressure or
    calibration probe is out of the testbed's usual range is ``infra_error``, not the
    candidate's fault. Usual range: the median of the newest ``window`` runs with figures on the
    same testbed plus ``mad_k`` scaled MADs, at least ``floors`` away (per figure); ``ceilings``
    refuse whatever the history, and are the only test below ``min_history`` runs.
    ``probe`` runs the calibration probe at the start and end of each run; ``probe_fio`` its
    fio part. ``controlled``: how a run with contemporaneous controls (an A/B run) is judged:
    ``ceilings`` (default: the controls share the load, so only a ceiling refuses it; figures
    out of the usual range are noted and keep the run out of the history) or ``usual`` (as a
    single-sided run)."""

    enabled: bool = True
    window: int = Field(default=20, ge=3, le=1000)
    min_history: int = Field(default=5, ge=3, le=1000)
    mad_k: float = Field(default=4.0, gt=0, le=100)
    floors: dict[str, float] = Field(default_factory=dict)
    ceilings: dict[str, float | None] = Field(default_factory=dict)
    probe: bool = True
    probe_fio: bool = True
    controlled: Literal["ceilings", "usual"] = "ceilings"

    @field_validator("floors", "ceilings")
    @classmethod
    def _figures(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in v if k not in ENVIRONMENT_FIGURES)
        if unknown:
            raise ValueError(f"unknown figures {unknown}; known: "
                             f"{', '.join(ENVIRONMENT_FIGURES)}")
        negative = sorted(k for k, x in v.items() if x is not None and not 0 <= x < math.inf)
        if negative:
            raise ValueError(f"must be 0 or more: {negative}")
        return v

    @model_validator(mode="after")
    def _history(self) -> EnvironmentConfig:
        if self.window < self.min_history:
            raise ValueError(f"window ({self.window}) is smaller than min_history "
                             f"({self.min_history})")
        return self

    def policy(self) -> EnvironmentPolicy:
        return EnvironmentPolicy(enabled=self.enabled, window=self.window,
                                 min_history=self.min_history, mad_k=self.mad_k,
                                 floors=dict(self.floors), ceilings=dict(self.ceilings),
                                 controlled=self.controlled)


class AbConfig(Strict):
    """A/B runs with contemporaneous controls (issue #12): a run of a kind in ``run_kinds`` that
    has a known-good to compare with also deploys that known-good on a twin testbed (the
    *control*) and runs every enabled suite on both, interleaved in rounds whose order
    alternates (candidate first in even rounds, control first in odd ones).

    Gate and bisect runs measure ``min_rounds`` rounds, then one more while the statistics ask
    for it, ``max_rounds`` at most; soak runs measure ``soak_rounds`` rounds. Baseline runs (the
    known-good itself) and runs before the first known-good stay single-sided.

    ``round_time``: ``split`` (default) gives each round its share of the suites' configured
    measuring time (ping ``count``, bandwidth ``duration_s``, storage ``runtime_s``, divided by
    ``min_rounds``, or ``soak_rounds`` in soak runs, in whole pings or seconds rounded down; at
    least 5 pings, 1 s), so the first rounds measure each side about as long as a single-sided
    run does and an A/B gate costs about twice a single-sided one, not ``2 * min_rounds``
    times; ``full`` runs every round at the configured time.

    ``lean_pct``: a series the soak still cannot decide whose estimate over every round is worse
    than this (percent; for counts the soak's equivalence bound in points), with its rounds
    pointing worse consistently (one-sided p over every round below 0.05 divided among the
    candidate's judged series: 0.001 for 50), *leans worse*: it
    extends the soak to ``soak.max_extra_runs`` and then holds the candidate for a person
    instead of promoting it undecided.
    """

    enabled: bool = True
    run_kinds: tuple[Literal["gate", "soak", "bisect"], ...] = ("gate", "soak", "bisect")
    min_rounds: int = Field(default=2, ge=1, le=50)
    max_rounds: int = Field(default=3, ge=1, le=50)
    soak_rounds: int = Field(default=4, ge=1, le=50)
    round_time: Literal["split", "full"] = "split"
    lean_pct: float = Field(default=20.0, gt=0, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> AbConfig:
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) is more than max_rounds "
                             f"({self.max_rounds})")
        return self

    def gate_policy(self, detector: DetectorConfig) -> ABPolicy:
        """The gate's statistics (rounds, floors) for gate and bisect runs."""
        return ABPolicy(min_rounds=self.min_rounds, max_rounds=self.max_rounds,
                        floor_pct=detector.floor_pct, floors=dict(detector.floors),
                        min_change=detector.min_changes())

    def soak_policy(self, detector: DetectorConfig, soak: SoakConfig) -> ABSoakPolicy:
        """The soak's statistics: calibrated for the planned soak and its extension, with the
        rounds a soak run measures."""
        return ABSoakPolicy(false_reject_target=detector.false_reject_target,
                            planned_runs=soak.planned_runs(),
                            max_extra_runs=soak.max_extra_runs,
                            min_runs=detector.min_candidate_runs,
                            rounds_per_run=self.soak_rounds, floor_pct=detector.floor_pct,
                            floors=dict(detector.floors), lean_pct=self.lean_pct,
                            min_change=detector.min_changes())


