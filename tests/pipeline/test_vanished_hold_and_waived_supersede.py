"""Formation's honesty about what it let go (issue #13): a hold at a commit gone upstream is
released and audited once, and a waived candidate that newer heads superseded says so.

Through the real services and reconcile loop on SQLite and PostgreSQL, with fake results.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import actions, components, knowngood
from certifier.tracking import events
from tests.factories import World


def failing() -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False,
                                                    "100 % loss")])]


@pytest.fixture
def world(world: World) -> World:
    world.component("neutron")
    return world


def _blamed(world: World) -> tuple[str, str]:
    """Known-good #1, then neutron's next commit rejected alone (blamed): (kg neutron, bad)."""
    world.commit("nova", "n1")
    good = world.commit("neutron", "q1")
    world.promote_heads()
    bad = world.commit("neutron", "q2-bad")
    report = world.reconcile()
    world.finish(report.runs_created[0], failing())
    assert len(world.reconcile().rejected) == 1
    return good, bad


def _combination(world: World, cid: int) -> dict[str, str]:
    with session_scope(world.factory) as session:
        cand = session.get_one(models.Candidate, cid)
        return dict(knowngood.combination_of(session, cand.combination_hash))


def _audits(world: World, action: str) -> list[models.AuditEvent]:
    with session_scope(world.factory) as session:
        rows = list(session.scalars(select(models.AuditEvent)
                                    .where(models.AuditEvent.action == action)))
        session.expunge_all()
        return rows


def _gone(world: World, component: str, sha: str) -> None:
    with session_scope(world.factory) as session:
        events.mark_gone(session, components.get_component(session, component), [sha],
                         world.clock.now())


def test_a_hold_at_a_known_good_commit_gone_upstream_is_released(world: World) -> None:
    good, bad = _blamed(world)
    _gone(world, "neutron", good)
    newer_nova = world.commit("nova", "n2")

    report = world.reconcile()

    assert _combination(world, report.formed[0]) == {"nova": newer_nova, "neutron": bad}
    [released] = _audits(world, "release_hold")
    assert released.subject == "component neutron"
    assert (released.detail["culprit"], released.detail["held_at"]) == (bad, good)
    assert "is gone upstream" in released.detail["reason"]
    assert _audits(world, "hold") == []


def test_a_released_hold_is_audited_once_not_on_every_pass(world: World) -> None:
    good, _ = _blamed(world)
    _gone(world, "neutron", good)
    world.commit("nova", "n2")
    world.reconcile()
    world.clock.advance(timedelta(minutes=5))
    world.reconcile()
    assert len(_audits(world, "release_hold")) == 1


def test_a_waived_candidate_superseded_by_newer_heads_says_so(world: World) -> None:
    world.commit("nova", "n1")
    world.commit("neutron", "q1")
    report = world.reconcile()
    cid = report.formed[0]
    world.finish(report.runs_created[0], failing())
    assert cid in world.reconcile().rejected
    with session_scope(world.factory) as session:
        _, requeued = actions.waive(session, world.clock, cid, "token:olga",
                                    "ping.h1 reaches h2", "known lab flake", None)
    assert requeued
    world.commit("nova", "n2")

    report = world.reconcile()

    assert report.superseded == [cid]
    with session_scope(world.factory) as session:
        [excuse] = session.get_one(models.Candidate, cid).excuses
    assert excuse.kind == "superseded"
    assert excuse.message == (
        f"superseded by candidate {report.formed[0]}, a newer combination of heads, before it "
        "ran again; its waivers (ping.h1 reaches h2) stay with it: waive on the new candidate "
        "if the failure shows again")
    [event] = _audits(world, "supersede")
    assert event.detail == {"by": report.formed[0], "waived": ["ping.h1 reaches h2"]}
