"""A person stops a running culprit search (``actions.stop_culprit_finding``), on SQLite and
PostgreSQL, through the worlds of ``test_bisection``.

While a search runs no queued candidate boards, and a search that waits for a busy testbed
waits as long as the testbed stays busy. The stop ends it the way the scheduler's own stops do:
pending bisect runs withdrawn, status ``stopped`` with the person's reason, the candidate still
rejected; the audit event names the person. The train then moves on as after an inconclusive
search. Nothing running is a ``Conflict`` that says what became of the search.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import migrate, models
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.pipeline import actions, scheduler
from certifier.pipeline.errors import Conflict, NotFound
from tests.pipeline.test_bisection import OFF, Upstreams, _reject, _until_rejected, stored

ACTOR = "token:olga"
WHY = "gate1 stays busy all week"


@pytest.fixture
def up(session_factory: sessionmaker[Session]) -> Upstreams:
    return Upstreams(session_factory)


def _stop(up: Upstreams, cid: int, actor: str = ACTOR, reason: str = WHY) -> models.Candidate:
    with session_scope(up.factory) as session:
        return actions.stop_culprit_finding(session, up.clock, cid, actor, reason)


def _status(up: Upstreams, cid: int) -> str | None:
    state = up.candidate(cid).bisection
    return state.status if state is not None else None


def _wait_for_busy(up: Upstreams, passes: int = 3) -> None:
    """Let the search retry on a busy testbed for a while: it never ends by itself."""
    for _ in range(passes):
        up.until_quiet()
        up.clock.advance(timedelta(minutes=10))


def test_a_person_stops_a_running_search_and_its_pending_run_is_withdrawn(
    up: Upstreams,
) -> None:
    cid, _, rejecting = _reject(up)
    pending = rejecting.runs_created
    assert len(pending) == 1  # the reproducing run, not claimed yet

    cand = _stop(up, cid)

    assert cand.state == "rejected"
    state = stored(up.candidate(cid).bisection)
    assert state is not None and state["status"] == "stopped"
    assert state["reason"] == f"stopped by {ACTOR}: {WHY}"
    assert state["steps"][0]["withdrawn"] is True
    with session_scope(up.factory) as session:
        assert session.scalars(select(models.Run).where(
            models.Run.candidate_id == cid, models.Run.kind == "bisect")).all() == []
    [event] = up.audit("culprit")
    assert (event.actor, event.subject) == (ACTOR, f"candidate {cid}")
    assert event.detail == {"status": "stopped", "reason": f"stopped by {ACTOR}: {WHY}",
                            "withdrawn_runs": pending}
    excuses = up.candidate(cid).excuses
    assert excuses[0].kind == "check"  # the rejection's own reason stays first
    assert [(e.kind, e.message) for e in excuses if e.kind == "bisection"] == [
        ("bisection", f"culprit finding stopped by {ACTOR}: {WHY}")]


def test_the_schedulers_own_stops_are_still_audited_as_the_scheduler(up: Upstreams) -> None:
    cid, _, _ = _reject(up)
    up.reconcile(OFF)  # culprit finding turned off: the next pass stops the search
    [event] = up.audit("culprit")
    assert event.actor == "scheduler"
    assert event.detail["reason"] == "culprit finding was turned off (bisection.enabled)"
    assert any(e.message == "culprit finding stopped: culprit finding was turned off "
               "(bisection.enabled)" for e in up.candidate(cid).excuses)


def test_after_the_stop_the_queued_candidate_that_waited_boards(up: Upstreams) -> None:
    """One component moved by several commits: the search waits for a busy testbed, the next
    candidate (neutron held at its known-good commit, nova moved on) waits for the search, and
    boards at the first pass after a person stops it."""
    up.push("neutron", "neutron-1", "neutron-2", "neutron-3", breaks_from="neutron-2")
    cid, rejecting = _until_rejected(up)
    up.busy.add(up.combination(cid)["neutron"])  # every run of the rejected head: too busy
    up.execute(rejecting.runs_created)
    _wait_for_busy(up)
    up.push("nova", "nova-2")
    [queued] = up.reconcile().formed
    _wait_for_busy(up)
    assert _status(up, cid) == "running"
    assert up.candidate(queued).state == "queued"
    assert any(e.kind == "culprit_wait" for e in up.candidate(queued).excuses)

    _stop(up, cid)
    moved = up.reconcile()

    assert moved.boarded == [queued] and moved.superseded == []
    assert up.candidate(queued).state == "gating"
    assert not any(e.kind == "culprit_wait" for e in up.candidate(queued).excuses)
    assert up.candidate(cid).state == "rejected"


def test_after_the_stop_formation_isolates_as_after_an_inconclusive_search(
    up: Upstreams,
) -> None:
    """Several components moved: a stopped search names no culprit, so the waiting candidate
    gives way to one that isolates a changed component, and that one boards."""
    up.busy.add(up.good["cinder"])  # the first swap-back (cinder at known-good) is refused
    cid, _, rejecting = _reject(up)
    up.execute(rejecting.runs_created)
    _wait_for_busy(up)
    up.push("nova", "nova-2")
    [waiting] = up.reconcile().formed

    _stop(up, cid)
    moved = up.reconcile()

    assert moved.superseded == [waiting] and moved.boarded == moved.formed
    [isolating] = moved.formed
    assert up.candidate(isolating).state == "gating"
    assert up.audit("isolate")[-1].detail == {"candidate": isolating}
    assert up.audit("isolate")[-1].subject == "component cinder"


def test_an_isolation_a_person_cancels_gives_way_to_the_next_suspect(up: Upstreams) -> None:
    """After the stop, formation isolates one changed component; cancelled (the testbed stays
    busy), that isolation is never formed again, so the next pass isolates the next suspect
    instead of asking for the cancelled one for ever (the noise harness stalled on this)."""
    up.busy.add(up.good["cinder"])
    cid, _, rejecting = _reject(up)
    up.execute(rejecting.runs_created)
    _wait_for_busy(up)
    _stop(up, cid)
    [first] = up.reconcile().formed
    first_suspect = up.audit("isolate")[-1].subject
    with session_scope(up.factory) as session:
        actions.cancel(session, up.clock, first, ACTOR, WHY)

    [second] = up.reconcile().formed

    assert up.audit("isolate")[-1].detail == {"candidate": second}
    assert up.audit("isolate")[-1].subject not in (first_suspect, "")
    assert up.candidate(second).state == "gating"
    assert len(up.candidate(second).changed) == 1


def test_a_candidate_without_a_culprit_search_has_nothing_to_stop(up: Upstreams) -> None:
    up.push("neutron", "neutron-1", breaks_from="neutron-1")
    cid, _ = _until_rejected(up)  # one commit: the rejection names it, no search
    with pytest.raises(Conflict, match=f"candidate {cid} has no culprit finding running: "
                                       "none was started"):
        _stop(up, cid)
    assert up.audit("culprit") == []


def test_a_search_stopped_once_cannot_be_stopped_again(up: Upstreams) -> None:
    cid, _, _ = _reject(up)
    _stop(up, cid)
    with pytest.raises(Conflict, match=r"it was already stopped \(stopped by token:olga: "):
        _stop(up, cid, reason="twice")
    assert len(up.audit("culprit")) == 1


def test_a_search_that_found_the_culprit_has_nothing_to_stop(up: Upstreams) -> None:
    cid, neutron, rejecting = _reject(up)
    up.execute(rejecting.runs_created)
    up.until_quiet()
    with pytest.raises(Conflict, match=f"it already found the culprit \\(neutron "
                                       f"{neutron[2][:12]}\\)"):
        _stop(up, cid)
    assert _status(up, cid) == "found"


def test_an_inconclusive_search_has_nothing_to_stop(up: Upstreams) -> None:
    cid, _, rejecting = _reject(up)
    up.broken.clear()  # the failure does not reproduce: the search ends inconclusive
    up.execute(rejecting.runs_created)
    up.until_quiet()
    with pytest.raises(Conflict, match="it ended inconclusive \\(the failure did not reproduce"):
        _stop(up, cid)


def test_stopping_an_unknown_candidate_is_not_found(up: Upstreams) -> None:
    with pytest.raises(NotFound, match="no candidate 4242"):
        _stop(up, 4242)


def test_an_operator_stops_culprit_finding_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'certifier.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    up = Upstreams(make_session_factory(engine))
    cid, _, rejecting = _reject(up)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    environ["CERTIFIER_DATA_DIR"] = str(tmp_path)

    def certifier(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "certifier", "candidate",
                               "stop-culprit-finding", *args], capture_output=True, text=True,
                              env=environ, timeout=60, check=False)

    blank = certifier(str(cid), "--reason", "  ")
    missing = certifier(str(cid))
    done = certifier(str(cid), "--reason", WHY)
    again = certifier(str(cid), "--reason", "twice")
    unknown = certifier("4242", "--reason", "x")

    assert blank.returncode == 2 and "--reason must say why" in blank.stderr
    assert missing.returncode == 2 and "--reason" in missing.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"candidate {cid}: rejected; culprit finding stopped")
    actor = f"cli:{getpass.getuser()}"
    [event] = up.audit("culprit")
    assert event.actor == actor
    assert event.detail == {"status": "stopped", "reason": f"stopped by {actor}: {WHY}",
                            "withdrawn_runs": rejecting.runs_created}
    assert again.returncode == 1 and "it was already stopped" in again.stderr
    assert "Traceback" not in again.stderr
    assert unknown.returncode == 1 and "no candidate 4242" in unknown.stderr
    engine.dispose()


# Racing the scheduler: a pass and a person's stop take turns (the passes' lock) -------------


def test_a_pass_that_starts_while_a_person_stops_the_search_waits_and_adds_no_run(
    factory: sessionmaker[Session],
) -> None:
    """Without a lock the pass would read the search as running, add its next run, and write
    the record back over the stop once the person's transaction committed. The stop takes the
    passes' lock (``toolbox.pass_lock``) before it locks the candidate's row, so the pass waits
    at its first statement."""
    up = Upstreams(factory)
    cid, _, rejecting = _reject(up)
    up.execute(rejecting.runs_created)  # the reproducing run fails: the next pass adds a step
    with session_scope(factory) as person:
        actions.stop_culprit_finding(person, up.clock, cid, ACTOR, WHY)
        person.flush()
        passing = _in_thread(up.reconcile)
        wait([passing], timeout=1.0)
        assert not passing.done()  # it waits for the person's commit
    report = passing.result(timeout=60)
    assert report.bisections_ended == []  # the person ended it; the pass found it stopped
    state = stored(up.candidate(cid).bisection)
    assert state is not None and state["status"] == "stopped"
    assert len(state["steps"]) == 1  # the reproducing run only
    assert not any(r.kind == "bisect" and r.state == "pending" for r in up.candidate(cid).runs)
    assert report.boarded == report.formed and len(report.formed) == 1  # the train moved on


def _in_thread(work: Callable[[], scheduler.ReconcileReport],
               ) -> Future[scheduler.ReconcileReport]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future
