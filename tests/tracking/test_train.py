"""The train policy: culprits blamed, components held, isolation, and two weeks of daily commits.

Formation is pure (``certifier.domain.formation``); the simulation drives the real services —
tracking applies each day's pushes, the reconcile loop forms, boards and judges candidates, and
runs are claimed and finished — with a fake clock, so two weeks take seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.combination import Combination
from certifier.domain.formation import PastCandidate, culprits, holds, next_desired
from certifier.domain.judgement import JudgementPolicy
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import SoakPolicy
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import components, knowngood, runs, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.tracking import events
from certifier.tracking.sources import CommitInfo
from tests.factories import World, passing_results, sha

S = CandidateState
A, B, C, D = "a" * 40, "b" * 40, "c" * 40, "d" * 40
KG = Combination.of({"nova": A, "neutron": A, "cinder": A})


def past(cid: int, state: CandidateState, combo: dict[str, str], changed: tuple[str, ...],
         base: int | None = 1) -> PastCandidate:
    return PastCandidate(cid, state, Combination.of(combo), changed, base)


def test_a_rejection_that_changed_one_component_blames_its_commit() -> None:
    history = [past(5, S.REJECTED, {"nova": A, "neutron": B, "cinder": A}, ("neutron",)),
               past(6, S.REJECTED, {"nova": B, "neutron": B, "cinder": B}, ("cinder", "nova")),
               past(7, S.PROMOTED, {"nova": C, "neutron": A, "cinder": A}, ("nova",))]
    assert culprits(history) == {("neutron", B): 5}


def test_a_blamed_head_is_held_at_the_known_good_until_a_newer_commit_arrives() -> None:
    history = [past(5, S.REJECTED, {"nova": A, "neutron": B, "cinder": A}, ("neutron",))]
    held = holds({"nova": C, "neutron": B, "cinder": A}, KG, history)
    assert list(held) == ["neutron"] and held["neutron"].at == A
    assert held["neutron"].blamed_by == 5
    wanted = next_desired({"nova": C, "neutron": B, "cinder": A}, KG, 1, history)
    assert wanted.combination == Combination.of({"nova": C, "neutron": A, "cinder": A})
    newer = next_desired({"nova": C, "neutron": D, "cinder": A}, KG, 1, history)
    assert newer.combination == Combination.of({"nova": C, "neutron": D, "cinder": A})
    assert newer.holds == ()


def test_nothing_is_held_without_a_known_good_to_hold_at() -> None:
    history = [past(5, S.REJECTED, {"nova": B}, ("nova",), None)]
    assert holds({"nova": B}, None, history) == {}


def test_a_rejection_that_changed_several_components_isolates_one_on_the_known_good() -> None:
    heads = {"nova": B, "neutron": B, "cinder": B}
    history = [past(6, S.REJECTED, dict(heads), ("cinder", "neutron", "nova"))]
    wanted = next_desired(heads, KG, 1, history)
    assert wanted.isolating == "cinder"
    assert wanted.combination == Combination.of({"nova": A, "neutron": A, "cinder": B})


def test_isolation_ends_once_it_named_a_culprit_or_the_known_good_moved() -> None:
    heads = {"nova": B, "neutron": B, "cinder": B}
    several = past(6, S.REJECTED, dict(heads), ("cinder", "neutron", "nova"))
    blamed = past(7, S.REJECTED, {"nova": A, "neutron": A, "cinder": B}, ("cinder",))
    wanted = next_desired(heads, KG, 1, [several, blamed])
    assert wanted.isolating is None
    assert wanted.combination == Combination.of({"nova": B, "neutron": B, "cinder": A})
    moved = next_desired(heads, KG, 2, [several])
    assert moved.isolating is None and moved.combination == Combination.of(heads)


def test_the_scheduler_holds_a_blamed_component_in_the_next_candidate(
    session_factory: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    world = World(session_factory, clock)
    for name in ("nova", "neutron"):
        world.component(name)
    world.testbed("gate1")
    good_nova, good_neutron = world.commit("nova", "n1"), world.commit("neutron", "q1")
    world.promote_heads()
    bad = world.commit("neutron", "q2-bad")
    report = world.reconcile()
    world.finish(report.runs_created[0], failing())
    assert len(world.reconcile().rejected) == 1
    newer_nova = world.commit("nova", "n2")
    report = world.reconcile()
    assert len(report.formed) == 1
    with session_scope(session_factory) as session:
        cand = session.get(models.Candidate, report.formed[0])
        assert cand is not None
        combo = knowngood.combination_of(session, cand.combination_hash)
        assert dict(combo) == {"nova": newer_nova, "neutron": good_neutron}
        hold = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "hold")).one()
        assert hold.detail["culprit"] == bad and hold.detail["held_at"] == good_neutron
    assert good_nova != newer_nova


def failing() -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False,
                                                    "100 % loss")])]


# recheck_failed=0: a failed check rejects at once, so each breakage costs one gate run here
# (rechecks have their own tests: tests/domain/test_flaky.py).
SOAK = SoakPolicy(duration=timedelta(days=2), interval=timedelta(hours=12), min_runs=2,
                  max_infra_retries=1, recheck_failed=0)
NAMES = ("cinder", "neutron", "nova")


class Simulation:
    """Three upstreams committing every morning; one breaks things for two days."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        self.clock = FakeClock()
        self.world = World(factory, self.clock)
        for name in NAMES:
            self.world.component(name)
        self.world.testbed("gate1")
        self.broken: set[str] = set()
        self.promotions: list[datetime] = []
        self.rejections: list[int] = []

    def push(self, name: str, day: int, *, breaks: bool) -> str:
        """One upstream push, applied the way tracking applies a webhook or a poll."""
        digest = sha(f"{name}-day{day}")
        with session_scope(self.factory) as session:
            component = components.get_component(session, name)
            known = events.tracking_state(session, component.id).head_sha
            obs = events.Observation(known, digest, (CommitInfo(digest, f"{name} day {day}"),))
            events.apply(session, component, obs, self.clock, "poll")
        if breaks:
            self.broken.add(digest)
        return digest

    def results(self, run_id: int) -> list[SuiteResult]:
        with session_scope(self.factory) as session:
            shas = {c.sha for c in runs.plan(session, run_id).components}
        return failing() if shas & self.broken else passing_results()

    def hour(self) -> None:
        with session_scope(self.factory) as session:
            report = scheduler.reconcile(session, self.clock,
                                         scheduler.SchedulerPolicy(soak=SOAK),
                                         RecordingDispatcher())
        self.promotions += [self.clock.now()] * len(report.promoted)
        self.rejections += report.rejected
        for run_id in report.runs_created:
            with session_scope(self.factory) as session:
                assert runs.claim(session, run_id, "w", self.clock, timedelta(hours=1)) \
                    is runs.Claim.CLAIMED
            with session_scope(self.factory) as session:
                runs.finish(session, run_id, self.results(run_id), self.clock,
                            JudgementPolicy())

    def run(self, days: int, bad: dict[int, str]) -> None:
        start = self.clock.now()
        for step in range(days * 24):
            if step % 24 == 9:  # every morning, each upstream pushes one commit
                day = step // 24
                for name in NAMES:
                    self.push(name, day, breaks=bad.get(day) == name)
            self.hour()
            self.clock.set(start + timedelta(hours=step + 1))


@pytest.mark.parametrize("culprit", ["cinder", "neutron"])
def test_two_weeks_of_daily_commits_promote_regularly_around_a_culprit(
    session_factory: sessionmaker[Session], culprit: str,
) -> None:
    sim = Simulation(session_factory)
    start = sim.clock.now()
    # The culprit's day-5 commit breaks the gate, and its day-6 commit still carries the bug.
    sim.run(14, {5: culprit, 6: culprit})
    end = sim.clock.now()

    assert sim.rejections, "the broken commits must have been caught"
    print(f"{culprit}: promotions on days",
          [round((p - start) / timedelta(days=1), 1) for p in sim.promotions])
    assert len(sim.promotions) >= 4
    first = sim.promotions[0]
    assert first - start <= timedelta(days=3)
    marks = [*sim.promotions, end]
    gaps = [later - earlier for earlier, later in pairwise(marks)]
    assert max(gaps) <= timedelta(days=7), gaps  # at least one promotion per 7 days
    with session_scope(session_factory) as session:
        promoted = [knowngood.combination_of(session, kg.combination_hash)
                    for kg in knowngood.history(session)]
        bad_shas = {sha(f"{culprit}-day5"), sha(f"{culprit}-day6")}
        assert not any(set(combo.values()) & bad_shas for combo in promoted)
        # nobody was blocked for long by the culprit: each component reached day 10 or later
        reached = {name: max(day for day in range(14) if any(
            combo[name] == sha(f"{name}-day{day}") for combo in promoted)) for name in NAMES}
        assert all(day >= 10 for day in reached.values()), reached
        held = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "hold")).all()
    if culprit == "cinder":  # isolation tries cinder first: it is blamed, then held
        assert {h.detail["culprit"] for h in held} & bad_shas
