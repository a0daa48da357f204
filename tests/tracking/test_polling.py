"""Polling and history events through the database, against real HTTP fakes and real git.

Polling and webhooks agree (one commit seen both ways is one row), polling catches a push whose
webhook never came, force-pushes mark the lost commits gone, a deleted branch pauses, errors back
off and rate limits are waited out.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline import components
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import ComponentConfig
from certifier.tracking import deliveries, polling
from certifier.tracking.sources import source_factory
from certifier.tracking.webhooks import dedup_key

from .conftest import Upstream
from .fakes import FakeGitLab, FakeRepo
from .payloads import body_of, gitlab_push


def add(factory: sessionmaker[Session], clock: FakeClock, **config: object) -> int:
    with session_scope(factory) as session:
        return components.create_component(
            session, ComponentConfig.model_validate({"name": "comp", **config}), clock).id


def gitlab_component(factory: sessionmaker[Session], clock: FakeClock, gitlab: FakeGitLab,
                     url_suffix: str = "", **config: object) -> tuple[FakeRepo, str, int]:
    """Project grp/comp on the fake GitLab with one commit, and component "comp" tracking it
    (``url_suffix`` ".git" names it as a clone URL would): the project, the commit, the id."""
    repo = gitlab.repo("grp/comp")
    first = repo.commit()
    cid = add(factory, clock, source="gitlab", url=f"{gitlab.url}/grp/comp{url_suffix}", **config)
    return repo, first, cid


def poll(factory: sessionmaker[Session], cid: int, clock: FakeClock, tmp_path: Path,
         dispatcher: RecordingDispatcher | None = None) -> polling.PollResult:
    return polling.poll(factory, cid, source_factory(tmp_path / "mirrors", 5, 30), clock,
                        dispatcher or RecordingDispatcher())


def commits(factory: sessionmaker[Session]) -> dict[str, models.Commit]:
    with session_scope(factory) as session:
        rows = list(session.scalars(select(models.Commit)))
        for row in rows:
            session.expunge(row)
        return {r.sha: r for r in rows}


def head(factory: sessionmaker[Session]) -> str | None:
    with session_scope(factory) as session:
        found = components.heads(session).get("comp")
        return found.sha if found else None


def store_gitlab_push(factory: sessionmaker[Session], clock: FakeClock, payload: dict[str, object]
                      ) -> int:
    body = body_of(payload)
    with session_scope(factory) as session:
        delivery = models.Delivery(
            source="gitlab", event="Push Hook", dedup_key=dedup_key("gitlab", {}, body),
            received_at=clock.now(), state="pending", body=body.decode(), headers={},
            attempts=0, replays=0)
        session.add(delivery)
        session.flush()
        return delivery.id


def test_polling_gitlab_finds_new_commits_and_asks_for_a_reconcile(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    repo, first, cid = gitlab_component(session_factory, clock, gitlab_fake, ".git")
    dispatcher = RecordingDispatcher()
    result = poll(session_factory, cid, clock, tmp_path, dispatcher)
    assert result.ok and result.new_commits == [first] and dispatcher.reconciles == 1
    later = [repo.commit() for _ in range(3)]
    result = poll(session_factory, cid, clock, tmp_path, dispatcher)
    assert result.new_commits == later and head(session_factory) == later[-1]
    assert {c.seen_via for c in commits(session_factory).values()} == {"poll"}
    again = poll(session_factory, cid, clock, tmp_path, dispatcher)
    assert again.new_commits == [] and dispatcher.reconciles == 2


def test_a_webhook_and_a_poll_seeing_the_same_commit_make_one_commit(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    repo, first, cid = gitlab_component(session_factory, clock, gitlab_fake, ".git")
    poll(session_factory, cid, clock, tmp_path)
    second = repo.commit(title="pushed")
    delivery = store_gitlab_push(session_factory, clock, gitlab_push(
        "grp/comp", second, first, commits=[(second, "pushed")]))
    sources = source_factory(tmp_path / "mirrors", 5, 30)
    outcome = deliveries.process(session_factory, delivery, sources, clock,
                                 RecordingDispatcher()).outcome
    assert outcome.startswith("1 new commits")
    assert poll(session_factory, cid, clock, tmp_path).new_commits == []
    rows = commits(session_factory)
    assert sorted(rows) == sorted([first, second])
    assert rows[second].seen_via == "webhook"


def test_polling_catches_a_push_whose_webhook_never_came(
    session_factory: sessionmaker[Session], clock: FakeClock, upstream: Upstream,
    tmp_path: Path,
) -> None:
    upstream.commit()
    cid = add(session_factory, clock, source="git", url=str(upstream.bare))
    poll(session_factory, cid, clock, tmp_path)
    missed = [upstream.commit(f"missed {i}") for i in range(2)]
    result = poll(session_factory, cid, clock, tmp_path)
    assert result.new_commits == missed and head(session_factory) == missed[-1]


def test_a_force_push_is_recorded_and_the_lost_commits_are_gone(
    session_factory: sessionmaker[Session], clock: FakeClock, upstream: Upstream,
    tmp_path: Path,
) -> None:
    base = upstream.commit()
    cid = add(session_factory, clock, source="git", url=str(upstream.bare))
    poll(session_factory, cid, clock, tmp_path)
    lost = [upstream.commit(), upstream.commit()]
    poll(session_factory, cid, clock, tmp_path)
    upstream.reset(base)
    rewritten = upstream.commit("rewritten", push=False)
    upstream.push("--force")
    clock.advance(timedelta(minutes=5))
    result = poll(session_factory, cid, clock, tmp_path)
    assert result.outcome.startswith("force-push") and "2 commits gone" in result.outcome
    rows = commits(session_factory)
    assert all(rows[s].gone_at is not None for s in lost)
    assert rows[base].gone_at is None and head(session_factory) == rewritten
    with session_scope(session_factory) as session:
        event = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "force_push")).one()
        assert sorted(event.detail["gone"]) == sorted(lost)


def test_a_force_push_back_to_an_older_commit_makes_it_the_head_again(
    session_factory: sessionmaker[Session], clock: FakeClock, upstream: Upstream,
    tmp_path: Path,
) -> None:
    base = upstream.commit()
    cid = add(session_factory, clock, source="git", url=str(upstream.bare))
    poll(session_factory, cid, clock, tmp_path)
    upstream.commit()
    clock.advance(timedelta(minutes=5))
    poll(session_factory, cid, clock, tmp_path)
    upstream.reset(base)
    upstream.push("--force")
    clock.advance(timedelta(minutes=5))
    poll(session_factory, cid, clock, tmp_path)
    assert head(session_factory) == base


def test_a_deleted_branch_pauses_the_component_and_its_return_resumes_it(
    session_factory: sessionmaker[Session], clock: FakeClock, upstream: Upstream,
    tmp_path: Path,
) -> None:
    upstream.commit()
    upstream.push(branch="stable")
    cid = add(session_factory, clock, source="git", url=str(upstream.bare), branch="stable")
    poll(session_factory, cid, clock, tmp_path)
    upstream.git("push", "--quiet", "origin", "--delete", "stable")
    result = poll(session_factory, cid, clock, tmp_path)
    assert "component paused" in result.outcome
    with session_scope(session_factory) as session:
        component = session.get(models.Component, cid)
        assert component is not None and component.paused
        assert components.heads(session) == {}
    upstream.commit(push=False)
    upstream.push(branch="stable")
    assert "resumed" in poll(session_factory, cid, clock, tmp_path).outcome
    with session_scope(session_factory) as session:
        component = session.get(models.Component, cid)
        assert component is not None and not component.paused


def test_an_operator_pause_is_never_lifted_by_tracking(
    session_factory: sessionmaker[Session], clock: FakeClock, upstream: Upstream,
    tmp_path: Path,
) -> None:
    upstream.commit()
    cid = add(session_factory, clock, source="git", url=str(upstream.bare))
    with session_scope(session_factory) as session:
        component = session.get(models.Component, cid)
        assert component is not None
        component.paused = True
    upstream.commit()
    poll(session_factory, cid, clock, tmp_path)
    with session_scope(session_factory) as session:
        component = session.get(models.Component, cid)
        assert component is not None and component.paused


def state(factory: sessionmaker[Session], cid: int) -> models.TrackingState:
    with session_scope(factory) as session:
        row = session.get(models.TrackingState, cid)
        assert row is not None
        session.expunge(row)
        return row


def test_errors_back_off_exponentially_and_a_success_resets_the_count(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    upstream: Upstream,
) -> None:
    cid = add(session_factory, clock, source="git", url=str(tmp_path / "missing.git"),
              poll_interval="1m")
    delays = []
    for _ in range(3):
        result = poll(session_factory, cid, clock, tmp_path)
        assert not result.ok
        delays.append(result.next_poll_in)
    assert delays == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]
    row = state(session_factory, cid)
    assert row.poll_failures == 3 and "ls-remote" in row.last_error
    assert row.next_poll_at == clock.now() + timedelta(minutes=8)
    upstream.commit()
    with session_scope(session_factory) as session:
        component = session.get(models.Component, cid)
        assert component is not None
        component.url = str(upstream.bare)
    assert poll(session_factory, cid, clock, tmp_path).ok
    assert state(session_factory, cid).poll_failures == 0


def test_a_rate_limited_poll_waits_for_the_retry_after_it_was_given(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    _, _, cid = gitlab_component(session_factory, clock, gitlab_fake)
    gitlab_fake.rate_limit_next, gitlab_fake.retry_after = 1, 900
    result = poll(session_factory, cid, clock, tmp_path)
    assert not result.ok and result.next_poll_in == timedelta(seconds=900)
    assert state(session_factory, cid).next_poll_at == clock.now() + timedelta(seconds=900)


def test_an_exhausted_rate_limit_window_delays_the_next_poll_to_its_reset(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    _, _, cid = gitlab_component(session_factory, clock, gitlab_fake, poll_interval="30s")
    gitlab_fake.remaining = 0
    result = poll(session_factory, cid, clock, tmp_path)
    assert result.ok and result.next_poll_in > timedelta(minutes=5)


def test_due_claims_each_component_once_per_interval(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    cid = add(session_factory, clock, source="git", url="/srv/x.git", poll_interval="5m")
    with session_scope(session_factory) as session:
        components.create_component(session, ComponentConfig(
            name="quiet", url="/srv/y.git", poll_interval=None), clock)
    with session_scope(session_factory) as session:
        assert polling.due(session, clock) == [cid]
    with session_scope(session_factory) as session:
        assert polling.due(session, clock) == []
    clock.advance(timedelta(minutes=5))
    with session_scope(session_factory) as session:
        assert polling.due(session, clock) == [cid]


def test_a_gitlab_webhook_without_a_reachable_source_applies_the_payload(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
) -> None:
    add(session_factory, clock, source="gitlab", url="http://127.0.0.1:9/grp/comp")
    a, b = "a" * 40, "b" * 40
    first = store_gitlab_push(session_factory, clock, gitlab_push("grp/comp", a))
    sources = source_factory(tmp_path, 1, 5)
    deliveries.process(session_factory, first, sources, clock, RecordingDispatcher())
    second = store_gitlab_push(session_factory, clock, gitlab_push("grp/comp", b, a,
                                                                   commits=[(b, "next")]))
    outcome = deliveries.process(session_factory, second, sources, clock,
                                 RecordingDispatcher()).outcome
    assert "source unavailable" in outcome and head(session_factory) == b


def test_the_migration_keeps_commits_when_downgraded_one_step(empty_database_url: str) -> None:
    from certifier.db import migrate
    from certifier.db.session import make_engine

    migrate.upgrade(empty_database_url, "d30a68275558")
    engine = make_engine(empty_database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO components (id, name, source, url, branch, run_in, paused, created_at)"
            " VALUES (1, 'c', 'git', 'u', 'main', 'controller', false, '2026-01-01 00:00:00')")
        connection.exec_driver_sql(
            "INSERT INTO commits (component_id, sha, title, author, first_seen_at, seen_via)"
            " VALUES (1, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '', '',"
            " '2026-01-01 00:00:00', 'api')")
    engine.dispose()
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "d30a68275558")
    engine = make_engine(empty_database_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM commits").scalar() == 1
    engine.dispose()
