"""Runs: claiming one for a worker, leasing a testbed, recording what the suites found, judging it.

Claiming is a conditional update (``pending → running``), so a redelivered or duplicated task finds
nothing to do and creates no second run. A testbed lease is a row in the database with an expiry:
it survives worker restarts, and an expired lease can be taken over.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, or_, select, update
from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.abtest import NoiseHistory, PairedSeries, paired_series
from certifier.domain.clock import Clock
from certifier.domain.detector import DetectorPolicy
from certifier.domain.environment import UNUSUAL, EnvironmentPolicy, assess, judged_figures
from certifier.domain.environment import apply as apply_environment
from certifier.domain.judgement import (
    ABEvidence,
    Baseline,
    Excuse,
    JudgementPolicy,
    RunHistory,
    RunJudgement,
    RunKind,
    Verdict,
    judge_run,
)
from certifier.domain.results import Better, Measurement, Side, SuiteResult
from certifier.pipeline import knowngood, runstats
from certifier.pipeline.errors import NotFound


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"


class Claim(StrEnum):
    CLAIMED = "claimed"
    NOT_PENDING = "not_pending"  # already taken or finished: a duplicate delivery
    BUSY = "busy"  # no testbed free: try again later


@dataclass(frozen=True, slots=True)
class ComponentPlan:
    name: str
    url: str
    branch: str
    sha: str
    recipe: str | None
    run_in: str


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything a worker needs to execute a run, loaded by id, free of ORM objects.

    ``base`` is the known-good the candidate was formed on (``base_version``), component by
    component: the upgrade suite deploys it first and upgrades it in place to ``components``.
    Empty before the first known-good (bootstrap), when there is nothing to upgrade from.
    """

    run_id: int
    candidate_id: int
    kind: RunKind
    testbed: str
    components: tuple[ComponentPlan, ...]
    base_version: int | None = None
    base: tuple[ComponentPlan, ...] = ()


def get_run(session: Session, run_id: int) -> models.Run:
    run = session.get(models.Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


def role_for(kind: str) -> str:
    """The testbed role a run of ``kind`` belongs on.

    Control (baseline) runs go where the soak runs go: they exist to give the detector the
    known-good's recent runs, and ``history`` compares runs on the same testbed only.
    """
    return "soak" if kind in (RunKind.SOAK, RunKind.BASELINE) else "gate"


def _testbed_for(session: Session, kind: str, only: str | None = None) -> list[models.Testbed]:
    """The testbeds a run of ``kind`` may lease, in the order to try them.

    Those of the run's role whenever one exists, busy or not: a soak or control run that fell
    back to a free gate testbed would scatter the known-good's history over testbeds the detector
    never compares. Only when no testbed has the role does any testbed do. ``only`` (a worker
    bound with ``--testbed``) keeps just that one, so a bound worker whose testbed has the wrong
    role leases nothing and the run is left for the worker of the right testbed.
    """
    beds = list(session.scalars(select(models.Testbed).order_by(models.Testbed.name)))
    wanted = role_for(kind)
    fitting = [bed for bed in beds if bed.role == wanted] or beds
    return [bed for bed in fitting if only is None or bed.name == only]


def claim(
    session: Session, run_id: int, worker: str, clock: Clock, lease: timedelta,
    *, testbed: str | None = None,
) -> Claim:
    """Take a pending run and lease a testbed for it, atomically; flushes.

    A run takes a testbed of its role (``role_for``) while one exists, else any. ``testbed``
    binds the claim to that one testbed (a worker started with ``--testbed``): a run that finds
    it busy, or that belongs on another testbed's role, stays pending for another worker (BUSY:
    the task is retried, by whichever worker takes it then). Taking over an expired lease
    finishes the run that held it as ``infra_error``: its worker is gone or hung (a run task is
    killed before its lease runs out), and the testbed is now someone else's.
    """
    run = session.get(models.Run, run_id)
    if run is None or run.state != RunState.PENDING:
        return Claim.NOT_PENDING
    now = clock.now()
    for bed in _testbed_for(session, run.kind, testbed):
        holder = bed.leased_by_run_id  # before the update: an expired lease is taken over
        taken = _rowcount(session.execute(
            update(models.Testbed)
            .where(
                models.Testbed.name == bed.name,
                or_(
                    models.Testbed.leased_by_run_id.is_(None),
                    models.Testbed.lease_expires_at < now,
                ),
            )
            .values(leased_by_run_id=run_id, lease_expires_at=now + lease)
            .execution_options(synchronize_session=False)
        ))
        if not taken:
            continue
        started = _rowcount(session.execute(
            update(models.Run)
            .where(models.Run.id == run_id, models.Run.state == RunState.PENDING)
            .values(state=RunState.RUNNING, started_at=now, worker=worker, testbed=bed.name)
            .execution_options(synchronize_session=False)
        ))
        if not started:
            _release(session, run_id)
            return Claim.NOT_PENDING
        if holder is not None and holder != run_id:
            lost_worker(session, holder, clock,
                        f"its lease on testbed {bed.name} expired and run {run_id} took the "
                        "testbed over; its worker was lost or hung")
        session.flush()
        session.expire_all()
        return Claim.CLAIMED
    # A live message is waiting for a testbed (a long soak run, a held testbed): say so, so the
    # reconcile loop does not mistake it for a lost message and send copies every minute.
    run.dispatched_at = now
    session.flush()
    return Claim.BUSY


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _component_plans(combo: models.Combination) -> tuple[ComponentPlan, ...]:
    return tuple(
        ComponentPlan(
            name=item.component.name,
            url=item.component.url,
            branch=item.component.branch,
            sha=item.commit.sha,
            recipe=item.component.recipe,
            run_in=item.component.run_in,
        )
        for item in sorted(combo.items, key=lambda i: i.component.name)
    )


def plan(session: Session, run_id: int) -> RunPlan:
    run = get_run(session, run_id)
    # A bisect run tests a combination of its own (one component swapped back, or a commit
    # inside a component's range); every other run tests its candidate's.
    comps = _component_plans(run.combination or run.candidate.combination)
    base_version = run.candidate.base_version
    base: tuple[ComponentPlan, ...] = ()
    if base_version is not None:
        kg = session.get(models.KnownGood, base_version)
        if kg is not None:
            base = _component_plans(kg.combination)
    return RunPlan(run.id, run.candidate_id, RunKind(run.kind), run.testbed or "", comps,
                   base_version if base else None, base)


# A run's own measurements: in an A/B run the control rows are the known-good's, measured beside
# it, so every reader of a run's (or the known-good's) own numbers keeps to this side.
CANDIDATE_SIDE = models.MeasurementRow.side == Side.CANDIDATE.value


def measurement_of(row: models.MeasurementRow) -> Measurement:
    """A stored measurement as the domain's record again (side, round and counts included)."""
    return Measurement(suite=row.suite, metric=row.metric, value=row.value, unit=row.unit,
                       better=Better(row.better), labels={str(k): str(v) for k, v in
                                                          (row.labels or {}).items()},
                       side=Side(row.side), round=row.round, events=row.events,
                       trials=row.trials)


def measurements(session: Session, run_id: int) -> list[Measurement]:
    """Everything run ``run_id`` measured, both sides, in the order it was stored."""
    rows = session.scalars(select(models.MeasurementRow)
                           .where(models.MeasurementRow.run_id == run_id)
                           .order_by(models.MeasurementRow.id))
    return [measurement_of(row) for row in rows]


def baseline(session: Session) -> Baseline | None:
    """The current known-good's samples from its passing runs, per series (their own side
    only: a control row in one of them would be an older known-good's)."""
    kg = knowngood.current(session)
    if kg is None:
        return None
    rows = session.execute(
        select(models.MeasurementRow.series, models.MeasurementRow.value)
        .join(models.Run, models.Run.id == models.MeasurementRow.run_id)
        .where(models.Run.candidate_id == kg.candidate_id, models.Run.verdict == Verdict.PASSED,
               models.Run.combination_hash.is_(None),  # bisect runs test other combinations
               CANDIDATE_SIDE)
    ).all()
    samples: dict[str, list[float]] = defaultdict(list)
    for series, value in rows:
        samples[series].append(value)
    return Baseline(label=f"known-good #{kg.version}", samples=dict(samples))


def _per_run_values(session: Session, run_ids: list[int]) -> dict[str, tuple[float, ...]]:
    """Each series' value per run (the median where a run measured it several times), in the
    order of ``run_ids``."""
    if not run_ids:
        return {}
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run_id, series, value in session.execute(
            select(models.MeasurementRow.run_id, models.MeasurementRow.series,
                   models.MeasurementRow.value)
            .where(models.MeasurementRow.run_id.in_(run_ids), CANDIDATE_SIDE)):
        values[(series, run_id)].append(value)
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    per_series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (series, run_id), vs in values.items():
        per_series[series].append((order[run_id], statistics.median(vs)))
    return {series: tuple(v for _, v in sorted(pairs)) for series, pairs in per_series.items()}


def history(session: Session, run: models.Run, policy: DetectorPolicy) -> RunHistory | None:
    """The statistical detector's view of ``run``: the known-good's newest passing runs on the
    same testbed (its soak, and control runs interleaved with later soaks) and the candidate's
    earlier passing soak runs there. None before the first known-good."""
    kg = knowngood.current(session)
    if kg is None or run.testbed is None:
        return None
    window = max(policy.min_baseline, policy.baseline_window)
    base_ids = list(session.scalars(
        select(models.Run.id)
        .where(models.Run.candidate_id == kg.candidate_id, models.Run.testbed == run.testbed,
               models.Run.verdict == Verdict.PASSED, models.Run.id != run.id,
               models.Run.combination_hash.is_(None))
        .order_by(models.Run.finished_at.desc(), models.Run.id.desc()).limit(window)))
    cand_ids = list(session.scalars(
        select(models.Run.id)
        .where(models.Run.candidate_id == run.candidate_id, models.Run.testbed == run.testbed,
               models.Run.kind == RunKind.SOAK, models.Run.verdict == Verdict.PASSED,
               models.Run.id != run.id)
        .order_by(models.Run.finished_at, models.Run.id)))
    return RunHistory(label=f"known-good #{kg.version} on {run.testbed}",
                      baseline=_per_run_values(session, base_ids[::-1]),
                      candidate=_per_run_values(session, cand_ids))


def _release(session: Session, run_id: int) -> None:
    session.execute(
        update(models.Testbed)
        .where(models.Testbed.leased_by_run_id == run_id)
        .values(leased_by_run_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def judge(
    session: Session,
    run_id: int,
    results: list[SuiteResult],
    policy: JudgementPolicy,
    *,
    setup_error: str | None = None,
) -> RunJudgement:
    """The verdict of these results now (before the environment is taken into account); reads,
    never writes.

    The runner asks before it tears the testbed down, so that a failed run's testbed can be
    kept for a person to inspect (an autohold), and hands the answer to :func:`finish`.
    """
    if setup_error is not None:
        return RunJudgement(
            Verdict.INFRA_ERROR, (Excuse("infra_error", f"run {run_id}", setup_error),)
        )
    run = get_run(session, run_id)
    if run.kind == RunKind.BASELINE:
        # A control run of the known-good measures the testbed, not a change: only its checks
        # and fixed limits count, so that a drifting testbed moves the baseline instead of being
        # rejected by it.
        return judge_run(results, None, policy)
    evidence = ab_evidence(session, run) if policy.ab is not None else None
    if run.kind == RunKind.SOAK and policy.detector is not None:
        return judge_run(results, baseline(session), policy, history(session, run, policy.detector),
                         ab=evidence)
    return judge_run(results, baseline(session), policy, ab=evidence)


NOISE_RUNS = 5  # earlier A/B runs on a testbed that tell each series' short-term spread


def _paired_runs(session: Session, run_ids: list[int]) -> tuple[tuple[PairedSeries, ...], ...]:
    return tuple(tuple(paired_series(measurements(session, run_id))) for run_id in run_ids)


def noise_history(session: Session, testbed: str | None, exclude: int | None = None,
                  candidate: int | None = None) -> NoiseHistory:
    """Each series' values side by side and round by round in the newest finished A/B runs
    on ``testbed`` (other candidates' too: the spread belongs to the testbed and the metric),
    leaving out ``candidate``'s own runs, so that a breakage that makes the candidate jumpy
    never widens the band of its own confirmation."""
    if testbed is None:
        return NoiseHistory()
    ids = list(session.scalars(
        select(models.Run.id)
        .where(models.Run.testbed == testbed, models.Run.rounds > 0,
               models.Run.state == RunState.FINISHED,
               models.Run.verdict.in_((Verdict.PASSED, Verdict.REGRESSED)),
               models.Run.id != (exclude or -1),
               models.Run.candidate_id != (candidate or -1))
        .order_by(models.Run.finished_at.desc(), models.Run.id.desc()).limit(NOISE_RUNS)))
    return NoiseHistory.from_runs(_paired_runs(session, ids[::-1]))


def ab_evidence(session: Session, run: models.Run) -> ABEvidence | None:
    """What an A/B run is judged with besides its own rounds (None: a baseline run, which has
    no controls). A soak run takes the candidate's earlier A/B soak runs on its testbed that
    were judged (passed or regressed), oldest first."""
    if run.kind == RunKind.BASELINE:
        return None
    noise = noise_history(session, run.testbed, exclude=run.id, candidate=run.candidate_id)
    if run.kind != RunKind.SOAK:
        return ABEvidence(noise)
    earlier = list(session.scalars(
        select(models.Run.id)
        .where(models.Run.candidate_id == run.candidate_id, models.Run.kind == RunKind.SOAK,
               models.Run.testbed == run.testbed, models.Run.rounds > 0,
               models.Run.verdict.in_((Verdict.PASSED, Verdict.REGRESSED)),
               models.Run.id != run.id)
        .order_by(models.Run.finished_at, models.Run.id)))
    return ABEvidence(noise, _paired_runs(session, earlier))


def finish(
    session: Session,
    run_id: int,
    results: list[SuiteResult],
    clock: Clock,
    policy: JudgementPolicy,
    *,
    log: str = "",
    setup_error: str | None = None,
    environment: Mapping[str, Any] | None = None,
    environment_policy: EnvironmentPolicy | None = None,
    rounds: int = 0,
    judged: RunJudgement | None = None,
) -> RunJudgement:
    """Store a run's checks and measurements, judge it against the baseline, release its testbed.

    ``judged``: what :func:`judge` already said of these results (the runner asks before its
    teardown, to decide a hold); it is recorded as it is, so a run is judged once. Without it
    (or with a ``setup_error``, which decides the verdict by itself) the run is judged here.

    ``setup_error`` (deploy or testbed failure before the suites) makes the run ``infra_error``
    unless it was the candidate's own deploy hook that failed (then it is a failed check, which
    the caller reports as a result instead). ``environment`` (the host's state during the run)
    is stored, and judged against the testbed's history when ``environment_policy`` is given.
    ``rounds``: the A/B rounds measured (0: single-
    sided); every measurement is stored with its side, round and counts.
    """
    run = get_run(session, run_id)
    if run.state == RunState.FINISHED:
        return RunJudgement(Verdict(run.verdict or Verdict.INFRA_ERROR),
                            run.excuses)
    if judged is None or setup_error is not None:
        judged = judge(session, run_id, results, policy, setup_error=setup_error)
    judgement = judged
    if environment is not None:
        run.environment = dict(environment)
        if environment_policy is not None:
            excuse, noted = environment_excuse(session, run, environment, environment_policy,
                                               controlled=rounds > 0)
            run.too_busy = excuse is not None
            if noted:
                run.environment = {**run.environment, UNUSUAL: noted}
            judgement = apply_environment(judgement, excuse)
    versions: dict[str, str] = {}
    for result in results:
        versions.update(result.tool_versions)
        for c in result.checks:
            session.add(models.CheckRow(run_id=run_id, suite=c.suite, name=c.name[:200],
                                        passed=c.passed, message=c.message))
        for m in result.measurements:
            session.add(models.MeasurementRow(
                run_id=run_id, suite=m.suite, metric=m.metric, series=m.key[:400],
                labels=dict(m.labels), value=m.value, unit=m.unit, better=str(m.better),
                side=str(m.side), round=m.round, events=m.events, trials=m.trials))
    run.state = RunState.FINISHED
    run.verdict = judgement.verdict
    run.excuses = tuple(judgement.excuses)
    run.tool_versions = versions
    diffs = [d.as_dict() for result in results for d in result.state_diffs]
    run.state_diff = diffs or None
    run.rounds = rounds
    run.log = log[-200_000:]
    run.finished_at = clock.now()
    runstats.record_finished(session, run)
    _release(session, run_id)
    session.flush()
    return judgement


def environment_history(session: Session, run: models.Run,
                        window: int) -> list[dict[str, float]]:
    """The judged environment figures of the newest ``window`` finished runs on ``run``'s
    testbed that have them, newest first.

    Runs refused as too busy are left out, and so are runs judged against their controls
    despite figures out of the usual range (``environment.unusual``), so a busy spell never
    becomes the usual state by repetition; a lasting change of the machine is the operator's to
    accept (floors, ceilings).
    """
    if run.testbed is None:
        return []
    query = (select(models.Run.environment)
             .where(models.Run.testbed == run.testbed, models.Run.id != run.id,
                    models.Run.state == RunState.FINISHED, models.Run.too_busy.is_(False),
                    models.Run.environment.is_not(None))
             .order_by(models.Run.finished_at.desc(), models.Run.id.desc()))
    page = window * 4  # some hold no judged figure (a probe skipped) or were unusual
    found: list[dict[str, float]] = []
    for offset in itertools.count(0, page):  # page back until the window is full
        rows = session.scalars(query.limit(page).offset(offset)).all()
        for environment in rows:
            figures = judged_figures(environment)
            if figures and not (isinstance(environment, dict) and environment.get(UNUSUAL)):
                found.append(figures)
                if len(found) == window:
                    return found
        if len(rows) < page:
            break
    return found


def environment_excuse(session: Session, run: models.Run, environment: Mapping[str, Any],
                       policy: EnvironmentPolicy, *, controlled: bool = False,
                       ) -> tuple[Excuse | None, list[str]]:
    """The ``infra_error`` excuse for ``run`` if its environment is out of its testbed's usual
    range (:mod:`certifier.domain.environment`), else None; and the figures out of that range
    that the check notes instead of refusing it (``controlled``: a run with contemporaneous
    controls, judged by the ceilings only), in words."""
    if not policy.enabled:
        return None, []
    excuse, noted = assess(judged_figures(environment),
                           environment_history(session, run, policy.window), policy, controlled)
    return excuse, [d.describe() for d in noted]


def expire_stale(session: Session, clock: Clock, run_timeout: timedelta) -> list[int]:
    """Finish runs whose worker vanished (running far longer than allowed) as ``infra_error``."""
    cutoff = clock.now() - run_timeout
    stale = list(
        session.scalars(
            select(models.Run.id).where(
                models.Run.state == RunState.RUNNING, models.Run.started_at < cutoff
            )
        )
    )
    for run_id in stale:
        lost_worker(session, run_id, clock, f"run exceeded the run timeout of {run_timeout}; "
                    "its worker was lost or hung")
    return stale


def lost_worker(session: Session, run_id: int, clock: Clock, message: str) -> None:
    finish(session, run_id, [], clock, JudgementPolicy(), setup_error=message)


def withdraw_pending(session: Session, run_ids: list[int]) -> list[int]:
    """Delete those of ``run_ids`` that are still pending; the ids actually deleted.

    The ids were read a moment ago, and a worker may have claimed one since: the condition on
    ``state`` is checked by the ``DELETE`` itself, so a run that started is left to finish, with
    its testbed lease, instead of vanishing mid-run.
    """
    if not run_ids:
        return []
    deleted = session.scalars(
        delete(models.Run)
        .where(models.Run.id.in_(run_ids), models.Run.state == RunState.PENDING)
        .returning(models.Run.id)
        .execution_options(synchronize_session="fetch"))
    return sorted(deleted)
