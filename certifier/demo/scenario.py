"""The demo scenario: certify the demo's upstream heads, then push five commits that each break
something for real — bandwidth, reachability, storage writes, data across an upgrade, an
operator's setting across an upgrade — and watch each be rejected with the right excuse, then push
the fixes and watch them promoted.

It drives the *real* pipeline: a real worker process on the configured broker, real namespaces
and tools; the scenario itself only reports commits (as the API or a webhook would) and watches
the database. Culprit holds keep each rejected commit out of the next candidate, so every bad
commit is judged on its own against the same known-good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.demo import world as demo_world
from certifier.domain.clock import SystemClock
from certifier.domain.judgement import Excuse, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import components, knowngood
from certifier.pipeline.dispatch import Dispatcher, reconcile_after_commit


class DemoFailed(Exception):
    """The pipeline did not reach the state the demo expects, in time."""


@dataclass
class Rejection:
    component: str
    sha: str
    candidate: int
    excuses: list[str]


@dataclass
class DemoOutcome:
    known_good: int | None = None
    bad_sha: str | None = None  # the first bad commit (the bandwidth one)
    bad_candidate: int | None = None
    bad_excuses: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    final_known_good: int | None = None
    elapsed_s: float = 0.0


QUIET_AFTER_S = 60.0
"""After this long without news, the watcher says what it is still waiting for."""


class Watcher:
    """Prints each candidate's state changes and waits for a condition.

    It fails loudly: a run's infra error is printed with its reason as it happens, a candidate
    whose infra retries are exhausted (it waits for an operator, so the demo cannot go on) or a
    candidate ``wait`` is told must not be rejected ends the wait at once with that reason, and a
    minute without news prints what the wait is still waiting for.
    """

    def __init__(self, factory: sessionmaker[Session], say: Callable[[str], None],
                 quiet_after: float = QUIET_AFTER_S) -> None:
        self.factory = factory
        self.say = say
        self.quiet_after = quiet_after
        self.seen: dict[int, tuple[str, int]] = {}
        self.stuck: dict[int, str] = {}  # candidate id -> why it waits for an operator
        self.start = time.monotonic()
        self.last_news = self.start

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.1f} s]"

    def _tell(self, line: str) -> None:
        self.last_news = time.monotonic()
        self.say(f"{self.stamp()} {line}")

    def poll(self) -> None:
        with session_scope(self.factory) as session:
            for cand in session.scalars(select(models.Candidate).order_by(models.Candidate.id)):
                self._poll_candidate(cand)

    def _poll_candidate(self, cand: models.Candidate) -> None:
        runs_done = sum(1 for r in cand.runs if r.verdict)
        key = (cand.state, runs_done)
        if self.seen.get(cand.id) != key:
            self.seen[cand.id] = key
            last = next((r for r in reversed(cand.runs) if r.verdict), None)
            run_text = f", run {last.id} ({last.kind}) {last.verdict}" if last else ""
            if last is not None and last.verdict == Verdict.INFRA_ERROR:
                run_text += ": " + ("; ".join(_messages(last.excuses)) or "no detail")
            self._tell(f"candidate {cand.id} [{', '.join(cand.changed)}]: "
                       f"{cand.state}{run_text}")
        exhausted = [m for e, m in zip(cand.excuses, _messages(cand.excuses), strict=True)
                     if e.kind == "infra_error"]
        open_ = not CandidateState(cand.state).is_final
        if open_ and exhausted and cand.id not in self.stuck:
            self.stuck[cand.id] = exhausted[0]
            self._tell(f"candidate {cand.id} is stuck: {exhausted[0]}")
        elif not (open_ and exhausted):
            self.stuck.pop(cand.id, None)

    def _still_waiting(self, what: str, session: Session) -> None:
        open_ = session.scalars(select(models.Candidate).where(
            models.Candidate.state.not_in([str(s) for s in CandidateState if s.is_final]))
            .order_by(models.Candidate.id)).all()
        doing = "; ".join(
            f"candidate {c.id} {c.state}"
            + (f" ({' / '.join(_messages(c.excuses))})" if c.excuses else "") for c in open_)
        self._tell(f"still waiting for {what}: {doing or 'no open candidate'}")

    def wait(self, what: str, done: Callable[[Session], bool], timeout: float,
             refused: Callable[[Session], str | None] = lambda _: None) -> None:
        """Wait until ``done``; ``refused`` names a state that ``done`` can no longer follow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            with session_scope(self.factory) as session:
                if done(session):
                    return
                reason = next(iter(self.stuck.items()), None)
                why = (f"candidate {reason[0]} waits for an operator: {reason[1]}" if reason
                       else refused(session))
                if why:
                    raise DemoFailed(f"cannot reach {what}: {why}")
                if time.monotonic() - self.last_news >= self.quiet_after:
                    self._still_waiting(what, session)
            time.sleep(0.5)
        raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def _messages(excuses: Sequence[Excuse]) -> list[str]:
    return [e.message for e in excuses]


def _rejected(cand: models.Candidate | None) -> str | None:
    if cand is None or cand.state != CandidateState.REJECTED:
        return None
    return (f"candidate {cand.id} was rejected: "
            + ("; ".join(_messages(cand.excuses)) or "no excuse recorded"))


def first_rejection(session: Session) -> str | None:
    """Before the first known-good every candidate is one: any rejection ends the demo."""
    return _rejected(session.scalar(select(models.Candidate).where(
        models.Candidate.state == CandidateState.REJECTED).order_by(models.Candidate.id)))


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
        say: Callable[[str], None] = print, timeout: float = 900.0,
        bad_commits: tuple[demo_world.Push, ...] = demo_world.BAD_COMMITS,
        fixes: tuple[demo_world.Push, ...] = demo_world.FIX_COMMITS) -> DemoOutcome:
    """Drive the scenario; raises DemoFailed if the pipeline does not behave."""
    outcome = DemoOutcome()
    watcher = Watcher(factory, say)
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    say(f"{watcher.stamp()} reporting the heads of {', '.join(world.repos)}")
    report_heads(factory, world, dispatcher)
    watcher.wait("the first known-good", lambda s: knowngood.current(s) is not None, left(),
                 refused=first_rejection)
    outcome.known_good = _say_known_good(factory, watcher, say)

    for push in bad_commits:
        sha = demo_world.commit(world.repos[push.component], push.files, push.title)
        say(f"{watcher.stamp()} upstream {push.component} pushed {sha[:12]} "
            f"\"{push.title}\": {push.what}")
        report_heads(factory, world, dispatcher)
        rejection = _wait_rejected(factory, watcher, push, sha, left())
        outcome.rejections.append(rejection)
        if outcome.bad_sha is None:
            outcome.bad_sha, outcome.bad_candidate = sha, rejection.candidate
            outcome.bad_excuses = rejection.excuses

    if fixes:
        shas = {}
        for push in fixes:
            shas[push.component] = demo_world.commit(world.repos[push.component], push.files,
                                                     push.title)
            say(f"{watcher.stamp()} upstream {push.component} pushed "
                f"{shas[push.component][:12]} \"{push.title}\"")
        report_heads(factory, world, dispatcher)

        def fixed(session: Session) -> bool:
            kg = knowngood.current(session)
            if kg is None or kg.version == outcome.known_good:
                return False
            pinned = knowngood.combination_of(session, kg.combination_hash)
            return all(pinned.get(name) == sha for name, sha in shas.items())

        def fix_rejected(session: Session) -> str | None:
            return next(filter(None, (_rejected(_candidate_with(session, name, sha))
                                      for name, sha in shas.items())), None)

        watcher.wait("the fixes to be promoted", fixed, left(), refused=fix_rejected)
        outcome.final_known_good = _say_known_good(factory, watcher, say)
    outcome.elapsed_s = time.monotonic() - watcher.start
    return outcome


def _say_known_good(factory: sessionmaker[Session], watcher: Watcher,
                    say: Callable[[str], None]) -> int:
    with session_scope(factory) as session:
        kg = knowngood.current(session)
        assert kg is not None
        say(f"{watcher.stamp()} known-good #{kg.version} promoted:")
        for comp in knowngood.manifest(session, kg, SystemClock().now())["components"]:
            say(f"      {comp['name']:<10} {comp['sha'][:12]}  {comp['title']}")
        return kg.version


def _wait_rejected(factory: sessionmaker[Session], watcher: Watcher, push: demo_world.Push,
                   sha: str, timeout: float) -> Rejection:
    found: list[Rejection] = []

    def judged(session: Session) -> bool:
        cand = _candidate_with(session, push.component, sha)
        if cand is None or not CandidateState(cand.state).is_final:
            return False
        if cand.state != CandidateState.REJECTED:
            raise DemoFailed(f"the bad {push.component} commit's candidate {cand.id} ended "
                             f"{cand.state}, not rejected")
        found.append(Rejection(push.component, sha, cand.id,
                               [e.message for e in cand.excuses]))
        return True

    watcher.wait(f"the bad {push.component} commit to be rejected", judged, timeout)
    rejection = found[0]
    watcher.say(f"{watcher.stamp()} candidate {rejection.candidate} rejected:")
    for message in rejection.excuses:
        watcher.say(f"      {message}")
    text = " ".join(rejection.excuses)
    if not all(word in text for word in push.expect):
        raise DemoFailed(f"the bad {push.component} commit was rejected for another reason "
                         f"than expected ({' and '.join(push.expect)}): {text}")
    return rejection


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
