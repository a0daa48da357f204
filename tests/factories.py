"""Building pipeline state for tests through the real services: every test's ``World``.

A known-good is reached the way production reaches it: components, reported commits, reconcile
passes, finished runs and a fake clock moved past the soak.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.environment import EnvironmentPolicy
from certifier.domain.judgement import JudgementPolicy, RunJudgement
from certifier.domain.promotion import SoakPolicy
from certifier.domain.results import Better, Check, Measurement, Side, SuiteResult
from certifier.pipeline import components, runs, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ComponentConfig

# recheck_failed=0: a failed check rejects at once. These worlds serve tests of what follows a
# rejection; rechecks and flaky checks have their own (tests/domain/test_flaky.py,
# tests/pipeline/test_flaky_pipeline.py), which set ``World.policy``.
SOAK = SoakPolicy(duration=timedelta(hours=1), interval=timedelta(minutes=10), min_runs=1,
                  max_infra_retries=1, recheck_failed=0)
POLICY = scheduler.SchedulerPolicy(soak=SOAK)


def sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324 - a fake commit id, not security


def passing_results() -> list[SuiteResult]:
    return [SuiteResult(
        suite="ping",
        checks=[Check("ping", "h1 reaches h2", True, "0 % loss")],
        measurements=[Measurement("ping", "rtt_avg_ms", 0.05, "ms", Better.LOWER,
                                  {"source": "h1", "destination": "h2"})],
        tool_versions={"ping": "iputils 20221126"},
    )]


def ab_results(rounds: int, own: float = 1.0, control: float = 99.0) -> list[SuiteResult]:
    """What an A/B run of ``rounds`` rounds hands to ``finish``: ping loss h1→h2 on both sides
    (the run's own value ``own``, its control's ``control``), every round."""
    def loss(value: float, side: Side, round_: int) -> Measurement:
        return Measurement("ping", "loss_pct", value, "%", Better.LOWER,
                           {"src": "h1", "dst": "h2"}, side=side, round=round_,
                           events=int(value), trials=100)

    found = []
    for r in range(rounds):
        found.append(SuiteResult("ping", [Check("ping", "reach h1->h2", True)] if r == 0 else [],
                                 [loss(own, Side.CANDIDATE, r)]))
        found.append(SuiteResult("control.ping", [], [loss(control, Side.CONTROL, r)]))
    return found


class World:
    """Pipeline state for a test (components, commits, testbeds, runs), changed only through
    the services, on the test's fake clock."""

    def __init__(self, factory: sessionmaker[Session], clock: FakeClock) -> None:
        self.factory = factory
        self.clock = clock
        self.dispatcher = RecordingDispatcher()  # the scheduler's, not the app's
        self.policy = POLICY

    def component(self, name: str) -> None:
        with session_scope(self.factory) as session:
            components.create_component(
                session, ComponentConfig(name=name, url=f"https://git.example/{name}.git"),
                self.clock)

    def commit(self, component: str, seed: str, title: str = "") -> str:
        digest = sha(seed)
        with session_scope(self.factory) as session:
            components.report_commit(session, component, digest, self.clock,
                                     title=title or f"{component}: {seed}", seen_via="poll")
        self.clock.advance(timedelta(seconds=1))
        return digest

    def testbed(self, name: str, role: str = "gate") -> None:
        with session_scope(self.factory) as session:
            session.add(models.Testbed(name=name, driver="netns", role=role))

    def reconcile(
        self, policy: scheduler.SchedulerPolicy | None = None
    ) -> scheduler.ReconcileReport:
        """One reconcile pass, as the beat task runs it; ``policy`` instead of the world's."""
        with session_scope(self.factory) as session:
            return scheduler.reconcile(session, self.clock, policy or self.policy,
                                       self.dispatcher)

    def claim(self, run_id: int) -> None:
        with session_scope(self.factory) as session:
            claim = runs.claim(session, run_id, "worker-1", self.clock, timedelta(minutes=30))
            assert claim is runs.Claim.CLAIMED

    def finish(self, run_id: int, results: list[SuiteResult] | None = None,
               rounds: int = 0, *, setup_error: str | None = None,
               judge: JudgementPolicy | None = None,
               environment: dict[str, Any] | None = None,
               environment_policy: EnvironmentPolicy | None = None) -> RunJudgement:
        """Finish a run as the worker does (passing ping results unless ``results`` say
        otherwise); what the run was judged."""
        with session_scope(self.factory) as session:
            return runs.finish(
                session, run_id, passing_results() if results is None else results,
                self.clock, judge or JudgementPolicy(), log=f"log of run {run_id}\n",
                rounds=rounds, setup_error=setup_error, environment=environment,
                environment_policy=environment_policy)

    def promote_heads(self) -> int:
        """Carry the current heads through gate and soak to a new known-good; its version."""
        report = self.reconcile()
        assert report.runs_created, "expected a gate run"
        self.clock.advance(timedelta(minutes=1))
        self.finish(report.runs_created[-1])
        report = self.reconcile()
        assert report.started_soak and report.runs_created, "expected the soak to start"
        self.clock.advance(timedelta(minutes=1))
        self.finish(report.runs_created[-1])
        self.clock.advance(SOAK.duration)
        report = self.reconcile()
        assert report.promoted, "expected a promotion"
        self.clock.advance(timedelta(minutes=1))
        with session_scope(self.factory) as session:
            return session.execute(
                select(models.KnownGood.version)
                .where(models.KnownGood.candidate_id == report.promoted[0])
            ).scalar_one()
