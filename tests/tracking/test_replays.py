"""Replays cannot move a head backwards, on every forge whose push names the old head.

A signed push can be captured and sent again under a new delivery id (the id is not signed).
The push then names a ``before`` that is not the head tracking knows: the worker asks the
source, and only a fast-forward from our head, or a sha that is the branch head upstream now (a
real force-push), moves it. Without a source, a sha seen before never moves the head.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.tracking import deliveries
from certifier.tracking.sources import source_factory

from .fakes import FakeForge, FakeGerrit, FakeGitHub, FakeGitLab, FakeRepo
from .payloads import body_of, gerrit_ref_updated, github_push, gitlab_push
from .test_polling import add, commits, head


@dataclass
class Forge:
    """One forge's fake and how it words a push from ``before`` to ``after``; ``forced``: the
    replayed GitHub push says it was forced (GitLab and Gerrit never say)."""

    name: str
    fake: FakeForge
    forced: bool = False

    @property
    def event(self) -> str:
        return {"gitlab": "Push Hook", "github": "push"}.get(self.name, "ref-updated")

    def component(self) -> dict[str, Any]:
        return {"source": self.name, "url": f"{self.fake.url}/grp/comp"}

    def push(self, before: str, after: str, shas: list[str], *, forced: bool | None = None
             ) -> dict[str, Any]:
        listed = [(s, "change") for s in shas]
        if self.name == "gitlab":
            return gitlab_push("grp/comp", after, before, commits=listed)
        if self.name == "github":
            return github_push("grp/comp", after, before, commits=listed,
                               forced=self.forced if forced is None else forced)
        return gerrit_ref_updated("grp/comp", after, before)


FORGES = ["gitlab", "github", "github-forced", "gerrit"]


@pytest.fixture(params=FORGES)
def forge(request: pytest.FixtureRequest) -> Any:
    kind = str(request.param)
    fake: FakeForge = {"gitlab": FakeGitLab, "github": FakeGitHub,
                       "gerrit": FakeGerrit}[kind.split("-")[0]]()
    with fake:
        yield Forge(kind.split("-")[0], fake, forced=kind.endswith("forced"))


def deliver(factory: sessionmaker[Session], clock: FakeClock, forge: Forge,
            payload: dict[str, Any], sources: Any) -> str:
    """Store a delivery under a fresh key (as a replay would come) and process it."""
    with session_scope(factory) as session:
        row = models.Delivery(source=forge.name, event=forge.event,
                              dedup_key=f"replay:{uuid.uuid4()}", received_at=clock.now(),
                              state="pending", body=body_of(payload).decode(), headers={},
                              attempts=0, replays=0)
        session.add(row)
        session.flush()
        delivery_id = row.id
    return deliveries.process(factory, delivery_id, sources, clock, RecordingDispatcher()).outcome


def tracked_head(factory: sessionmaker[Session]) -> str | None:
    with session_scope(factory) as session:
        return session.scalar(select(models.TrackingState.head_sha))


@dataclass
class Tracked:
    """A component tracked through three pushes, upstream c1 → c2 → c3: what a replay needs."""

    repo: FakeRepo
    shas: list[str]
    sent: list[dict[str, Any]]  # the captured payloads
    sources: Any

    def deliver(self, factory: sessionmaker[Session], clock: FakeClock, forge: Forge,
                payload: dict[str, Any]) -> str:
        return deliver(factory, clock, forge, payload, self.sources)


@pytest.fixture
def tracked(session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
            forge: Forge) -> Tracked:
    add(session_factory, clock, **forge.component())
    found = Tracked(forge.fake.repo("grp/comp"), [], [], source_factory(tmp_path, 5, 30))
    for _ in range(3):
        before = found.shas[-1] if found.shas else "0" * 40
        found.shas.append(found.repo.commit())
        found.sent.append(forge.push(before, found.shas[-1], [found.shas[-1]]))
        found.deliver(session_factory, clock, forge, found.sent[-1])
    assert tracked_head(session_factory) == found.shas[-1]
    return found


def test_a_captured_push_sent_again_does_not_move_the_head_back(
    session_factory: sessionmaker[Session], clock: FakeClock, forge: Forge, tracked: Tracked,
) -> None:
    outcome = tracked.deliver(session_factory, clock, forge, tracked.sent[1])  # c1 → c2 again
    assert "not the branch head upstream" in outcome
    assert tracked_head(session_factory) == head(session_factory) == tracked.shas[2]
    assert all(c.gone_at is None for c in commits(session_factory).values())


def test_a_captured_branch_deletion_sent_again_does_not_pause_the_component(
    session_factory: sessionmaker[Session], clock: FakeClock, forge: Forge, tracked: Tracked,
) -> None:
    outcome = tracked.deliver(session_factory, clock, forge,
                              forge.push(tracked.shas[1], "0" * 40, []))
    assert "the branch still exists upstream" in outcome
    assert tracked_head(session_factory) == tracked.shas[2]
    with session_scope(session_factory) as session:
        assert session.scalar(select(models.Component.paused)) is False


def test_a_real_force_push_still_moves_the_head(
    session_factory: sessionmaker[Session], clock: FakeClock, forge: Forge, tracked: Tracked,
) -> None:
    shas = tracked.shas
    rewritten = tracked.repo.commit(parent=shas[0])  # upstream: c1 → c2' now, c2 and c3 gone
    tracked.deliver(session_factory, clock, forge,
                    forge.push(shas[2], rewritten, [rewritten], forced=True))
    assert tracked_head(session_factory) == head(session_factory) == rewritten
    gone = {sha for sha, c in commits(session_factory).items() if c.gone_at is not None}
    assert gone == {shas[1], shas[2]}


def test_a_push_that_skips_a_missed_one_moves_the_head_forward(
    session_factory: sessionmaker[Session], clock: FakeClock, forge: Forge, tracked: Tracked,
) -> None:
    missed, latest = tracked.repo.commit(), tracked.repo.commit()  # the push of `missed` never came
    tracked.deliver(session_factory, clock, forge, forge.push(missed, latest, [latest]))
    assert tracked_head(session_factory) == head(session_factory) == latest
    assert missed in commits(session_factory)


def test_without_the_source_a_replayed_sha_seen_before_never_moves_the_head(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
) -> None:
    add(session_factory, clock, source="gitlab", url="http://127.0.0.1:9/grp/comp")
    sources = source_factory(tmp_path, 1, 5)
    forge = Forge("gitlab", FakeGitLab())
    a, b = "a" * 40, "b" * 40
    deliver(session_factory, clock, forge, forge.push("0" * 40, a, [a]), sources)
    deliver(session_factory, clock, forge, forge.push(a, b, [b]), sources)
    outcome = deliver(session_factory, clock, forge, forge.push("0" * 40, a, [a]), sources)
    assert "was seen before (a replay?): head left at" in outcome
    assert tracked_head(session_factory) == head(session_factory) == b
    with session_scope(session_factory) as session:
        state = session.scalar(select(models.TrackingState))
        assert state is not None and state.next_poll_at == clock.now()
