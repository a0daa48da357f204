"""``GET /metrics``: the pipeline's state in the Prometheus text format, read at scrape time.

Nothing is counted in process memory. The pipeline's state lives in the database, shared by the
API, the workers and beat, so one :class:`PipelineCollector` asks the database at every scrape and
any API replica reports the same numbers, across restarts too. The queries are aggregates (GROUP
BY in SQL), so a scrape costs a handful of queries whatever the number of runs.

Each app gets its own :class:`CollectorRegistry` (made on its first scrape, kept on
``app.state``): no import-time global registry, so tests build as many apps as they like. The
registry also carries prometheus-client's process, platform and GC collectors.

Names follow the Prometheus conventions: prefix ``certifier_``, base units in the name, counters
ending ``_total``, no sha labels. Two deliberate exceptions to "base units":
``certifier_known_good_measurement`` mirrors the suites' numbers in the suites' own units (the
``unit`` label says which), because the same value is shown in the API and the excuses. Its
series are bounded by the configuration (host pairs and metrics), not by time or commits, and
capped at :data:`MAX_MEASUREMENT_SERIES` as a safety net.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import product
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import certifier
from certifier.api.deps import AppContext, ContextDep
from certifier.db import models
from certifier.domain.environment import FIGURES, judged_figures
from certifier.domain.judgement import RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import knowngood, runstats
from certifier.pipeline.runs import CANDIDATE_SIDE, RunState

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# Runs take seconds (a failed deploy) to an hour or two (a full soak round on real hardware).
RUN_DURATION_BUCKETS_S = runstats.DURATION_BUCKETS_S
MAX_MEASUREMENT_SERIES = 2000
UNFINISHED_RUN_STATES = (RunState.PENDING.value, RunState.RUNNING.value)

_REGISTRY_LOCK = threading.Lock()  # guards the first scrape's registry creation, nothing else


class PipelineCollector(Collector):
    """Reads the pipeline's state from the database when Prometheus scrapes."""

    def __init__(self, context: AppContext) -> None:
        self._context = context

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("certifier_build_info", "The running certifier's version.",
                                  labels=["version"])
        build.add_metric([certifier.__version__], 1)
        yield build
        up = GaugeMetricFamily("certifier_database_up",
                               "1 if the database answered this scrape's queries, else 0.")
        try:
            with self._context.session_factory() as session:
                families = list(self._from_database(session))
        except SQLAlchemyError:
            # Keep serving the process metrics and say why the pipeline's are missing.
            log.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_database(self, session: Session) -> Iterator[Metric]:
        now = self._context.clock.now()
        yield _candidates(session)
        yield _runs(session)
        yield _unfinished_runs(session)
        yield _run_durations(session)
        yield _soak_left(session, now, self._context.settings.config.soak.duration)
        yield _testbeds(session, now)
        yield from _tracking(session)
        yield from _environment(session)
        yield from _known_good(session, now)


def _candidates(session: Session) -> Metric:
    counts = dict(session.execute(
        select(models.Candidate.state, func.count()).group_by(models.Candidate.state)
    ).all())
    family = GaugeMetricFamily("certifier_candidates", "Candidates in each lifecycle state.",
                               labels=["state"])
    for state in CandidateState:
        family.add_metric([state.value], counts.get(state.value, 0))
    return family


def _runs(session: Session) -> Metric:
    stats = models.RunStat
    counts = {(str(kind), str(verdict)): int(n) for kind, verdict, n in session.execute(
        select(stats.kind, stats.verdict, func.sum(stats.runs))
        .group_by(stats.kind, stats.verdict)
    )}
    # Every known (kind, verdict) is present from the start: rate() then sees the first run.
    keys = set(product([k.value for k in RunKind], [v.value for v in Verdict])) | set(counts)
    family = CounterMetricFamily("certifier_runs", "Finished runs by kind and verdict.",
                                 labels=["kind", "verdict"])
    for kind, verdict in sorted(keys):
        family.add_metric([kind, verdict], counts.get((kind, verdict), 0))
    return family


def _unfinished_runs(session: Session) -> Metric:
    counts = {(str(kind), str(state)): n for kind, state, n in session.execute(
        select(models.Run.kind, models.Run.state, func.count())
        .where(models.Run.state.in_(UNFINISHED_RUN_STATES))
        .group_by(models.Run.kind, models.Run.state)
    )}
    keys = set(product([k.value for k in RunKind], UNFINISHED_RUN_STATES)) | set(counts)
    family = GaugeMetricFamily("certifier_runs_unfinished",
                               "Runs waiting for a testbed (pending) or executing (running).",
                               labels=["kind", "state"])
    for kind, state in sorted(keys):
        family.add_metric([kind, state], counts.get((kind, state), 0))
    return family


def _run_durations(session: Session) -> Metric:
    stats = models.RunStat
    rows = session.execute(
        select(stats.kind, stats.bucket, func.sum(stats.runs), func.sum(stats.seconds))
        .where(stats.bucket != runstats.NO_DURATION)
        .group_by(stats.kind, stats.bucket)
    ).all()
    per_bucket: dict[str, list[int]] = {}
    totals: dict[str, float] = {}
    for kind, index, count, total in rows:
        counts = per_bucket.setdefault(str(kind), [0] * (len(RUN_DURATION_BUCKETS_S) + 1))
        counts[int(index)] += int(count)
        totals[str(kind)] = totals.get(str(kind), 0.0) + float(total)
    family = HistogramMetricFamily(
        "certifier_run_duration_seconds",
        "Wall time of finished runs, from claiming a testbed to the verdict.",
        labels=["kind"],
    )
    for kind in sorted({k.value for k in RunKind} | set(per_bucket)):
        counts = per_bucket.get(kind, [0] * (len(RUN_DURATION_BUCKETS_S) + 1))
        cumulative = list(itertools.accumulate(counts))
        buckets = [(str(bound), float(n))
                   for bound, n in zip(RUN_DURATION_BUCKETS_S, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        family.add_metric([kind], buckets, totals.get(kind, 0.0))
    return family


def _soak_left(session: Session, now: datetime, duration: timedelta) -> Metric:
    family = GaugeMetricFamily(
        "certifier_soak_seconds_left",
        "Seconds until a soaking candidate has soaked for the configured duration.",
        labels=["candidate"],
    )
    for candidate_id, started in session.execute(
        select(models.Candidate.id, models.Candidate.soak_started_at)
        .where(models.Candidate.state == CandidateState.SOAKING.value)
        .order_by(models.Candidate.id)
    ):
        if started is not None:
            left = max(0.0, (started + duration - now).total_seconds())
            family.add_metric([str(candidate_id)], left)
    return family


def _testbeds(session: Session, now: datetime) -> Metric:
    family = GaugeMetricFamily("certifier_testbed_leased",
                               "1 while a run holds the testbed's lease, else 0.",
                               labels=["testbed"])
    for name, run_id, expires in session.execute(
        select(models.Testbed.name, models.Testbed.leased_by_run_id,
               models.Testbed.lease_expires_at).order_by(models.Testbed.name)
    ):
        # Same rule as claiming: an expired lease is free for the taking.
        leased = run_id is not None and (expires is None or expires >= now)
        family.add_metric([name], 1 if leased else 0)
    return family


def _tracking(session: Session) -> Iterable[Metric]:
    """Tracking failures, so that no component stops being tracked unnoticed (an alert on
    ``certifier_tracking_poll_failures > 0`` for a while, or on failing deliveries)."""
    failures = GaugeMetricFamily(
        "certifier_tracking_poll_failures",
        "Polls of the component that failed in a row (0: the last poll worked).",
        labels=["component"])
    erring = GaugeMetricFamily(
        "certifier_tracking_error",
        "1 while the component's tracking shows an error (a failed poll or delivery), else 0.",
        labels=["component"])
    for name, count, error in session.execute(
        select(models.Component.name, models.TrackingState.poll_failures,
               models.TrackingState.last_error)
        .outerjoin(models.TrackingState,
                   models.TrackingState.component_id == models.Component.id)
        .where(models.Component.removed_at.is_(None)).order_by(models.Component.name)
    ):
        failures.add_metric([name], count or 0)
        erring.add_metric([name], 1 if error else 0)
    failing = GaugeMetricFamily(
        "certifier_webhook_deliveries_failing",
        "Webhook deliveries whose processing raised an error: still being retried (pending) "
        "or given up (processed).", labels=["state"])
    counts = dict(session.execute(
        select(models.Delivery.state, func.count())
        .where(models.Delivery.outcome.like("error (%") | models.Delivery.outcome.like("failed:%"))
        .group_by(models.Delivery.state)).all())
    for state in ("pending", "processed"):
        failing.add_metric([state], counts.get(state, 0))
    return failures, erring, failing


def _environment(session: Session) -> Iterable[Metric]:
    """The environment check: each testbed's last figures, and its runs refused as too busy.

    The figures are in their own units (the ``unit`` label: percent, Gbit/s, …), like
    ``certifier_known_good_measurement``, because the same numbers appear in the excuses.
    One indexed query per testbed for the newest run with figures.
    """
    figure = GaugeMetricFamily(
        "certifier_testbed_environment",
        "The environment figures of the newest finished run on each testbed that has them "
        "(host pressure, calibration probe), in the unit the label names.",
        labels=["testbed", "figure", "unit"])
    refused = CounterMetricFamily(
        "certifier_runs_too_busy",
        "Runs the environment check refused as too busy (out of the testbed's usual range, "
        "or beyond a ceiling for runs with controls; infra_error unless a check failed: "
        "retried, never counted against the candidate).",
        labels=["testbed"])
    counts = dict(session.execute(
        select(models.Run.testbed, func.count())
        .where(models.Run.too_busy.is_(True)).group_by(models.Run.testbed)).all())
    for name in session.scalars(select(models.Testbed.name).order_by(models.Testbed.name)):
        refused.add_metric([name], counts.get(name, 0))
        stored = session.scalar(
            select(models.Run.environment)
            .where(models.Run.testbed == name, models.Run.state == RunState.FINISHED.value,
                   models.Run.environment.is_not(None))
            .order_by(models.Run.finished_at.desc(), models.Run.id.desc()).limit(1))
        for key, value in judged_figures(stored).items():
            figure.add_metric([name, key, FIGURES[key].unit or "1"], value)
    return figure, refused


def _known_good(session: Session, now: datetime) -> Iterable[Metric]:
    version = GaugeMetricFamily("certifier_known_good_version",
                                "The current known-good's version number.")
    age = GaugeMetricFamily("certifier_known_good_age_seconds",
                            "Seconds since the current known-good was promoted.")
    promoted = GaugeMetricFamily("certifier_known_good_promotion_timestamp_seconds",
                                 "When the current known-good was promoted (Unix time).")
    measurement = GaugeMetricFamily(
        "certifier_known_good_measurement",
        "The last value of each series measured by the current known-good's passing runs, in "
        "the unit the label names.",
        labels=["suite", "metric", "unit", "series"],
    )
    kg = knowngood.current(session)
    if kg is not None:
        version.add_metric([], kg.version)
        age.add_metric([], (now - kg.promoted_at).total_seconds())
        promoted.add_metric([], kg.promoted_at.timestamp())
        for suite, metric, unit, labels, value in _last_measurements(session, kg.candidate_id):
            series = ",".join(f"{k}={labels[k]}" for k in sorted(labels or {}))
            measurement.add_metric([suite, metric, unit, series], value)
    return version, age, promoted, measurement


def _last_measurements(
    session: Session, candidate_id: int
) -> list[tuple[str, str, str, dict[str, Any], float]]:
    """Per series, the newest row from the candidate's passing runs.

    Rows are written when a run finishes, so the highest id of a series is its latest value.
    Only the runs' own side: a control row is an older known-good's, measured beside them.
    """
    m = models.MeasurementRow
    newest = (
        select(func.max(m.id))
        .join(models.Run, models.Run.id == m.run_id)
        .where(models.Run.candidate_id == candidate_id,
               models.Run.verdict == Verdict.PASSED.value, CANDIDATE_SIDE)
        .group_by(m.series)
    )
    rows = session.execute(
        select(m.suite, m.metric, m.unit, m.labels, m.value)
        .where(m.id.in_(newest))
        .order_by(m.suite, m.metric, m.series)
        .limit(MAX_MEASUREMENT_SERIES + 1)
    ).all()
    if len(rows) > MAX_MEASUREMENT_SERIES:
        log.warning("metrics: the known-good has more than %d measurement series; exporting "
                    "the first %d", MAX_MEASUREMENT_SERIES, MAX_MEASUREMENT_SERIES)
    return list(rows[:MAX_MEASUREMENT_SERIES])


def create_registry(context: AppContext) -> CollectorRegistry:
    """A registry with the pipeline collector and prometheus-client's process collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(context))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)  # registers nothing off CPython
    return registry


def _registry(request: Request, context: AppContext) -> CollectorRegistry:
    state = request.app.state
    with _REGISTRY_LOCK:
        registry: CollectorRegistry | None = getattr(state, "metrics_registry", None)
        if registry is None:
            registry = create_registry(context)
            state.metrics_registry = registry
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}},
                     "description": "metrics in the Prometheus text format 0.0.4"}},
)
def metrics(request: Request, context: ContextDep) -> Response:
    """The Prometheus scrape target."""
    body = generate_latest(_registry(request, context))
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
