"""The demo scenario: report the demo's upstream heads, watch the pipeline certify them, push a
commit that halves bandwidth, and watch it get rejected with an excuse that names the metric.

It drives the *real* pipeline: a real worker process on the configured broker, real namespaces
and tools; the scenario itself only reports commits (as the API or a webhook would) and watches
the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.demo import world as demo_world
from certifier.domain.clock import SystemClock
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import components, knowngood
from certifier.pipeline.dispatch import Dispatcher, reconcile_after_commit


class DemoFailed(Exception):
    """The pipeline did not reach the state the demo expects, in time."""


@dataclass
class DemoOutcome:
    known_good: int | None = None
    bad_sha: str | None = None
    bad_candidate: int | None = None
    bad_excuses: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


class Watcher:
    """Prints each candidate's state changes and waits for a condition."""

    def __init__(self, factory: sessionmaker[Session], say: Callable[[str], None]) -> None:
        self.factory = factory
        self.say = say
        self.seen: dict[int, tuple[str, int]] = {}
        self.start = time.monotonic()

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f} s]"

    def poll(self) -> None:
        with session_scope(self.factory) as session:
            for cand in session.scalars(select(models.Candidate).order_by(models.Candidate.id)):
                runs_done = sum(1 for r in cand.runs if r.verdict)
                key = (cand.state, runs_done)
                if self.seen.get(cand.id) == key:
                    continue
                self.seen[cand.id] = key
                last = next((r for r in reversed(cand.runs) if r.verdict), None)
                run_text = f", run {last.id} ({last.kind}) {last.verdict}" if last else ""
                self.say(f"{self.stamp()} candidate {cand.id} [{', '.join(cand.changed)}]: "
                         f"{cand.state}{run_text}")

    def wait(self, what: str, done: Callable[[Session], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            with session_scope(self.factory) as session:
                if done(session):
                    return
            time.sleep(0.5)
        raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def report_heads(factory: sessionmaker[Session], world: demo_world.DemoWorld,
                 dispatcher: Dispatcher) -> None:
    clock = SystemClock()
    with session_scope(factory) as session:
        for name, repo in world.repos.items():
            sha, title = demo_world.head(repo)
            components.report_commit(session, name, sha, clock, title=title,
                                     author="Demo Upstream", seen_via="demo")
        reconcile_after_commit(session, dispatcher)


def run(factory: sessionmaker[Session], world: demo_world.DemoWorld, dispatcher: Dispatcher,
        say: Callable[[str], None] = print, timeout: float = 170.0) -> DemoOutcome:
    """Drive the scenario; raises DemoFailed if the pipeline does not behave."""
    outcome = DemoOutcome()
    watcher = Watcher(factory, say)
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    say(f"{watcher.stamp()} reporting the heads of {', '.join(world.repos)}")
    report_heads(factory, world, dispatcher)
    watcher.wait("the first known-good", lambda s: knowngood.current(s) is not None, left())
    with session_scope(factory) as session:
        kg = knowngood.current(session)
        assert kg is not None
        outcome.known_good = kg.version
        say(f"{watcher.stamp()} known-good #{kg.version} promoted:")
        for comp in knowngood.manifest(session, kg)["components"]:
            say(f"      {comp['name']:<10} {comp['sha'][:12]}  {comp['title']}")

    repo = world.repos["netpolicy"]
    bad = demo_world.commit(
        repo, {"netpolicy.conf": f"egress_rate_mbit = {demo_world.BAD_RATE_MBIT}\n"},
        "Lower the default egress rate to leave headroom for tenants")
    outcome.bad_sha = bad
    say(f"{watcher.stamp()} upstream netpolicy pushed {bad[:12]}: egress "
        f"{demo_world.GOOD_RATE_MBIT} → {demo_world.BAD_RATE_MBIT} Mbit/s")
    report_heads(factory, world, dispatcher)

    def bad_rejected(session: Session) -> bool:
        cand = _candidate_with(session, "netpolicy", bad)
        if cand is None or not CandidateState(cand.state).is_final:
            return False
        outcome.bad_candidate = cand.id
        outcome.bad_excuses = [str(e["message"]) for e in cand.excuses]
        if cand.state != CandidateState.REJECTED:
            raise DemoFailed(f"the bad commit's candidate {cand.id} ended {cand.state}, "
                             "not rejected")
        return True

    watcher.wait("the bad commit to be rejected", bad_rejected, left())
    say(f"{watcher.stamp()} candidate {outcome.bad_candidate} rejected:")
    for message in outcome.bad_excuses:
        say(f"      {message}")
    outcome.elapsed_s = time.monotonic() - watcher.start
    return outcome


def _candidate_with(session: Session, component: str, sha: str) -> models.Candidate | None:
    return session.scalar(
        select(models.Candidate)
        .join(models.CombinationItem,
              models.CombinationItem.combination_hash == models.Candidate.combination_hash)
        .join(models.Commit, models.Commit.id == models.CombinationItem.commit_id)
        .join(models.Component, models.Component.id == models.Commit.component_id)
        .where(models.Component.name == component, models.Commit.sha == sha)
        .order_by(models.Candidate.id.desc())
        .limit(1)
    )


def default_root() -> Path:
    return Path("certifier-demo")
