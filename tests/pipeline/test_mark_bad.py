"""Marking a combination bad: never formed or promoted again, audited; on SQLite and PostgreSQL.

State is built through the real services (``World``): reported commits, reconcile passes and
finished runs with fake results. The CLI test runs ``certifier candidate mark-bad`` as a
process, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain import formation
from certifier.domain.clock import FakeClock
from certifier.domain.combination import Combination
from certifier.domain.lifecycle import CandidateState
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import actions, knowngood, runs
from certifier.pipeline.errors import Conflict, NotFound
from tests.factories import SOAK, World

ACTOR = "token:olga"



def soaking(world: World, seed: str = "n1") -> int:
    """A candidate of nova's head ``seed`` whose gate passed: soaking, its first soak run
    pending."""
    world.commit("nova", seed)
    report = world.reconcile()
    cid = report.formed[0]
    world.finish(report.runs_created[-1])
    assert cid in world.reconcile().started_soak
    return cid


def candidate(world: World, cid: int) -> models.Candidate:
    with session_scope(world.factory) as session:
        cand = session.get_one(models.Candidate, cid)
        session.refresh(cand, ["combination", "runs"])
        session.expunge_all()
        return cand


def mark(world: World, cid: int, reason: str = "corrupts volumes on upgrade") -> None:
    with session_scope(world.factory) as session:
        actions.mark_bad(session, world.clock, ACTOR, cid, reason)


def audit(world: World, action: str) -> list[models.AuditEvent]:
    with session_scope(world.factory) as session:
        rows = list(session.scalars(select(models.AuditEvent)
                                    .where(models.AuditEvent.action == action)
                                    .order_by(models.AuditEvent.id)))
        session.expunge_all()
        return rows


def test_marking_an_open_candidate_bad_cancels_it_and_is_audited(world: World) -> None:
    cid = soaking(world)
    with session_scope(world.factory) as session:
        pending = [r.id for r in session.get_one(models.Candidate, cid).runs
                   if r.state == "pending"]
    assert pending  # the first soak run, withdrawn below
    mark(world, cid)
    cand = candidate(world, cid)
    assert cand.state == CandidateState.CANCELLED
    assert [e.kind for e in cand.excuses] == ["marked_bad"]
    assert "corrupts volumes on upgrade" in cand.excuses[0].message
    assert not [r for r in cand.runs if r.id in pending]
    combo = cand.combination
    assert (combo.bad_by, combo.bad_reason) == (ACTOR, "corrupts volumes on upgrade")
    assert combo.bad_at == world.clock.now()
    (event,) = audit(world, "mark_bad")
    assert (event.actor, event.subject) == (ACTOR, f"candidate {cid}")
    assert event.detail == {"reason": "corrupts volumes on upgrade",
                            "combination": combo.hash, "state": "soaking",
                            "withdrawn_runs": pending}


def test_a_finished_candidate_keeps_its_state_when_marked_bad(world: World) -> None:
    cid = soaking(world)
    with session_scope(world.factory) as session:
        actions.cancel(session, world.clock, cid, ACTOR, "wrong branch")
    mark(world, cid)
    cand = candidate(world, cid)
    assert cand.state == CandidateState.CANCELLED
    assert [e.kind for e in cand.excuses] == ["cancelled"]
    assert cand.combination.bad_at is not None


def test_marking_twice_or_an_unknown_candidate_is_refused(world: World) -> None:
    cid = soaking(world)
    mark(world, cid)
    with pytest.raises(Conflict, match="marked bad by token:olga"):
        mark(world, cid, "again")
    with pytest.raises(NotFound):
        mark(world, 999)
    assert len(audit(world, "mark_bad")) == 1


def test_formation_skips_a_bad_combination_and_the_train_waits_for_a_new_head(
    world: World,
) -> None:
    cid = soaking(world)
    mark(world, cid)
    assert world.reconcile().formed == []  # the heads still make the bad combination
    assert world.reconcile().formed == []
    (said,) = audit(world, "skip_bad")  # once, not on every pass
    assert said.subject == f"combination {candidate(world, cid).combination_hash}"
    assert "waiting for a new head" in said.detail["reason"]
    world.commit("nova", "n2")
    report = world.reconcile()
    assert len(report.formed) == 1 and report.boarded == report.formed


def test_the_formation_plan_never_forms_a_bad_combination() -> None:
    desired = Combination.of({"nova": "a" * 40})
    refused = formation.plan(desired, None, [], bad={desired.hash})
    assert (refused.create, refused.refused_bad) == (None, desired.hash)
    assert formation.plan(desired, None, []).create == desired


def test_a_bad_combination_is_never_promoted_even_by_force(world: World) -> None:
    cid = soaking(world)
    with session_scope(world.factory) as session:  # marked by hand, past mark_bad's cancel
        cand = session.get_one(models.Candidate, cid)
        combo = session.get_one(models.Combination, cand.combination_hash)
        combo.bad_at, combo.bad_by, combo.bad_reason = world.clock.now(), ACTOR, "data loss"
    with pytest.raises(knowngood.MarkedBad, match="data loss"), \
            session_scope(world.factory) as session:
        actions.promote(session, world.clock, cid, "token:adam", "ship it", SOAK, force=True)
    with session_scope(world.factory) as session:  # the scheduler's own promotion, too
        for run in session.get_one(models.Candidate, cid).runs:
            if run.state == "pending":
                world.finish(run.id)
    world.clock.advance(SOAK.duration)
    report = world.reconcile()
    assert report.promoted == []
    cand = candidate(world, cid)
    assert cand.state == CandidateState.CANCELLED
    assert cand.excuses[0].kind == "marked_bad" and "data loss" in cand.excuses[0].message
    (event,) = audit(world, "cancel")  # the scheduler says what it did, as for every decision
    assert (event.actor, event.subject) == ("scheduler", f"candidate {cid}")
    assert "data loss" in event.detail["reason"]
    with session_scope(world.factory) as session:
        assert knowngood.current(session) is None


@pytest.mark.parametrize("action", ["mark_bad", "cancel"])
def test_a_run_claimed_while_its_candidate_is_ended_keeps_running_and_its_testbed(
    world: World, action: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mark-bad and cancel read the candidate's pending runs, then withdraw them: a worker that
    claims one in between keeps it, and the audit lists only the runs really withdrawn."""
    cid = soaking(world)
    claimed: list[int] = []
    withdraw = runs.withdraw_pending

    def a_worker_claims_first(session: Session, run_ids: list[int]) -> list[int]:
        with session_scope(world.factory) as worker:  # after the read, before the delete
            assert runs.claim(worker, run_ids[0], "w:1", world.clock,
                              timedelta(minutes=30)) is runs.Claim.CLAIMED
        claimed.append(run_ids[0])
        return withdraw(session, run_ids)

    monkeypatch.setattr(runs, "withdraw_pending", a_worker_claims_first)
    with session_scope(world.factory) as session:
        if action == "mark_bad":
            actions.mark_bad(session, world.clock, ACTOR, cid, "eats data")
        else:
            actions.cancel(session, world.clock, cid, ACTOR, "wrong branch")
    assert len(claimed) == 1  # the first soak run, read as pending
    with session_scope(world.factory) as session:
        run = session.get_one(models.Run, claimed[0])
        assert (run.state, run.testbed) == (runs.RunState.RUNNING, "gate1")
        assert session.get_one(models.Testbed, "gate1").leased_by_run_id == run.id
    assert candidate(world, cid).state == CandidateState.CANCELLED
    (event,) = audit(world, action)
    assert event.detail["withdrawn_runs"] == []


def test_a_served_known_good_must_be_revoked_before_it_is_marked_bad(world: World) -> None:
    world.commit("nova", "n1")
    version = world.promote_heads()
    with session_scope(world.factory) as session:
        cid = session.get_one(models.KnownGood, version).candidate_id
    with pytest.raises(Conflict, match="revoke it first"):
        mark(world, cid)
    with session_scope(world.factory) as session:
        actions.revoke(session, world.clock, version, "token:adam", "breaks upgrades")
    mark(world, cid)
    cand = candidate(world, cid)
    assert cand.state == CandidateState.PROMOTED and cand.combination.bad_at is not None


def test_a_rejected_bad_candidate_cannot_be_waived_back_into_the_queue(world: World) -> None:
    world.commit("nova", "n1")
    report = world.reconcile()
    cid = report.formed[0]
    world.finish(report.runs_created[-1], [SuiteResult(
        "ping", checks=[Check("ping", "h1 reaches h2", False, "100 % loss")])])
    assert cid in world.reconcile().rejected  # the world's policy does not recheck
    mark(world, cid)
    with pytest.raises(knowngood.MarkedBad), session_scope(world.factory) as session:
        actions.waive(session, world.clock, cid, ACTOR, "ping.h1 reaches h2", "lab", None)
    assert candidate(world, cid).state == CandidateState.REJECTED


def test_unmarking_lifts_the_mark_and_is_audited(world: World) -> None:
    cid = soaking(world)
    mark(world, cid)
    world.clock.advance(timedelta(minutes=5))
    with session_scope(world.factory) as session:
        actions.unmark_bad(session, world.clock, "token:adam", cid, "it was the lab's disk")
    cand = candidate(world, cid)
    assert cand.combination.bad_at is None and cand.combination.bad_by is None
    assert cand.state == CandidateState.CANCELLED  # a final state stays final
    (event,) = audit(world, "unmark_bad")
    assert event.detail["was_marked_by"] == ACTOR
    assert event.detail["reason"] == "it was the lab's disk"
    with pytest.raises(Conflict, match="not marked bad"), \
            session_scope(world.factory) as session:
        actions.unmark_bad(session, world.clock, "token:adam", cid, "twice")


def _certifier(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    environ["CERTIFIER_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "certifier", *args], capture_output=True,
                          text=True, env=environ, timeout=60, check=False)


def test_an_operator_marks_and_unmarks_a_candidate_bad_from_the_command_line(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'certifier.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    world = World(make_session_factory(engine), FakeClock())
    world.component("nova")
    world.testbed("gate1")
    cid = soaking(world)

    missing = _certifier("candidate", "mark-bad", str(cid), data_dir=tmp_path)
    assert missing.returncode == 2 and "--reason" in missing.stderr
    marked = _certifier("candidate", "mark-bad", str(cid), "--reason", "eats data",
                        data_dir=tmp_path)
    assert marked.returncode == 0, marked.stderr
    assert marked.stdout.startswith(f"candidate {cid}: cancelled; combination ")
    cand = candidate(world, cid)
    assert cand.combination.bad_reason == "eats data"
    assert cand.combination.bad_by is not None and cand.combination.bad_by.startswith("cli:")

    again = _certifier("candidate", "mark-bad", str(cid), "--reason", "x", data_dir=tmp_path)
    assert again.returncode == 1 and "marked bad by cli:" in again.stderr
    unknown = _certifier("candidate", "mark-bad", "77", "--reason", "x", data_dir=tmp_path)
    assert unknown.returncode == 1 and "no candidate 77" in unknown.stderr

    unmarked = _certifier("candidate", "unmark-bad", str(cid), data_dir=tmp_path)
    assert unmarked.returncode == 0, unmarked.stderr
    assert "no longer marked bad" in unmarked.stdout
    assert candidate(world, cid).combination.bad_at is None
    engine.dispose()
