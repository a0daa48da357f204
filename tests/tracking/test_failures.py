"""Tracking failures are never silent, and one bad commit never stops a component's tracking.

Every exception in a poll or in processing a delivery is counted (``poll_failures``,
``last_error``, the delivery's outcome) and shown on the component page and in ``/metrics``;
commit dates out of range or unreadable are stored as unknown with a note; errors shown through
the API never repeat a forge's answer body or say whether a local path exists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from certifier.sourcepolicy import SourcePolicy
from certifier.tracking import deliveries, events, polling
from certifier.tracking.sources import source_factory

from .conftest import Upstream
from .fakes import FakeGitLab
from .payloads import body_of, gitlab_headers, gitlab_push
from .test_polling import (
    add,
    commits,
    gitlab_component,
    head,
    poll,
    state,
    store_gitlab_push,
)

SECRET = "gitlab-webhook-secret-for-failures"
# 9999-12-31T23:59:59Z, the last second a datetime can hold (and 2200-01-01, the first refused).
LAST_SECOND = "@253402300799 +0000"



def delivery(factory: sessionmaker[Session], delivery_id: int) -> models.Delivery:
    with session_scope(factory) as session:
        row = session.get_one(models.Delivery, delivery_id)
        session.expunge(row)
        return row


def explode(*_: Any, **__: Any) -> Any:
    raise RuntimeError("a bug in applying what the source said")


# Dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("date", [LAST_SECOND, "@253402300799 -1200", "@7258118400 +0000"])
def test_a_git_commit_dated_out_of_range_is_stored_undated_and_polling_goes_on(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    upstream: Upstream, date: str,
) -> None:
    cid = add(session_factory, clock, source="git", url=str(upstream.bare))
    upstream.commit()
    assert poll(session_factory, cid, clock, tmp_path).ok
    odd = upstream.commit(date=date)
    result = poll(session_factory, cid, clock, tmp_path)
    assert result.ok, result.outcome
    assert f"commit {odd[:12]}: commit date" in result.outcome
    assert commits(session_factory)[odd].committed_at is None
    later = upstream.commit()
    assert poll(session_factory, cid, clock, tmp_path).ok
    assert head(session_factory) == later
    assert state(session_factory, cid).poll_failures == 0


@pytest.mark.parametrize("date", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                  "yesterday", "1899-12-31T23:59:59+00:00"])
def test_a_gitlab_commit_with_an_impossible_date_is_stored_undated_with_a_note(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path, date: str,
) -> None:
    repo, _, cid = gitlab_component(session_factory, clock, gitlab_fake)
    assert poll(session_factory, cid, clock, tmp_path).ok
    odd = repo.commit()
    repo.commits[odd].date_text = date
    result = poll(session_factory, cid, clock, tmp_path)
    assert result.ok, result.outcome
    assert f"commit {odd[:12]}:" in result.outcome and "stored as unknown" in result.outcome
    assert commits(session_factory)[odd].committed_at is None
    assert head(session_factory) == odd


def test_a_gitlab_commit_dated_in_range_keeps_its_date_in_utc(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    repo, sha, cid = gitlab_component(session_factory, clock, gitlab_fake)
    repo.commits[sha].date = datetime(2199, 12, 31, 22, 0, tzinfo=timezone(timedelta(hours=-1)))
    assert poll(session_factory, cid, clock, tmp_path).ok
    assert commits(session_factory)[sha].committed_at == datetime(2199, 12, 31, 23, tzinfo=UTC)


def test_a_signed_webhook_with_a_year_1_commit_is_stored_and_processed_not_a_500(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CERTIFIER_GITLAB_WEBHOOK_SECRET", SECRET)
    add(session_factory, clock, source="gitlab", url="https://gitlab.example/grp/comp")
    sha = "c" * 40
    payload = gitlab_push("grp/comp", sha, commits=[(sha, "from the year 1")])
    payload["commits"][0]["timestamp"] = "0001-01-01T00:00:00+01:00"
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=session_factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/api/v1/webhooks/gitlab", content=body_of(payload),
                             headers=gitlab_headers(SECRET, key="year-1"))
    assert answer.status_code == 202, answer.text
    processed = deliveries.process(session_factory, answer.json()["delivery"], None, clock,
                                   RecordingDispatcher())
    assert f"commit {sha[:12]}: unreadable commit date" in processed.outcome
    assert commits(session_factory)[sha].committed_at is None
    assert head(session_factory) == sha


# Unexpected exceptions -------------------------------------------------------------------------


def test_an_exception_while_applying_a_poll_is_counted_and_backs_off(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = add(session_factory, clock, source="git", url=str(upstream.bare), poll_interval="1m")
    upstream.commit()
    monkeypatch.setattr(events, "apply", explode)
    result = poll(session_factory, cid, clock, tmp_path)
    assert not result.ok and result.next_poll_in == timedelta(minutes=2)
    row = state(session_factory, cid)
    assert row.poll_failures == 1
    assert row.last_error == ("internal error while recording the poll (RuntimeError); the "
                              "worker log has the details")
    assert commits(session_factory) == {}


def test_an_exception_while_asking_the_source_is_counted(
    session_factory: sessionmaker[Session], clock: FakeClock,
) -> None:
    cid = add(session_factory, clock, source="git", url="/srv/x.git")

    def broken(_spec: object) -> Any:
        raise KeyError("a bug in building the source")

    result = polling.poll(session_factory, cid, broken, clock, RecordingDispatcher())
    assert not result.ok
    row = state(session_factory, cid)
    assert (row.poll_failures, row.last_error.split(" (")[0]) == (
        1, "internal error while asking the source")


def test_an_exception_while_processing_a_delivery_is_recorded_on_it_and_the_component(
    session_factory: sessionmaker[Session], clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cid = add(session_factory, clock, source="gitlab", url="https://gitlab.example/grp/comp")
    stored = store_gitlab_push(session_factory, clock, gitlab_push("grp/comp", "a" * 40))
    monkeypatch.setattr(events, "apply", explode)
    processed = deliveries.process(session_factory, stored, None, clock, RecordingDispatcher())
    assert processed.outcome.startswith("error: internal error while processing delivery")
    row = delivery(session_factory, stored)
    assert row.state == "pending" and row.outcome.startswith("error (attempt 1): internal error")
    assert state(session_factory, cid).last_error.startswith(f"webhook delivery {stored}: ")


def test_a_delivery_that_keeps_failing_ends_failed_with_its_error(
    session_factory: sessionmaker[Session], clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    add(session_factory, clock, source="gitlab", url="https://gitlab.example/grp/comp")
    stored = store_gitlab_push(session_factory, clock, gitlab_push("grp/comp", "a" * 40))
    monkeypatch.setattr(events, "apply", explode)
    for _ in range(deliveries.MAX_ATTEMPTS):
        deliveries.process(session_factory, stored, None, clock, RecordingDispatcher())
    row = delivery(session_factory, stored)
    assert row.state == "processed"
    assert row.outcome.startswith(f"failed: internal error while processing delivery {stored}")


def test_tracking_failures_show_in_metrics_and_on_the_component_page(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add(session_factory, clock, source="git", url=str(tmp_path / "missing.git"))
    with session_scope(session_factory) as session:
        [cid] = polling.due(session, clock)
    poll(session_factory, cid, clock, tmp_path)
    stored = store_gitlab_push(session_factory, clock, gitlab_push("grp/comp", "a" * 40))
    with session_scope(session_factory) as session:
        row = session.get_one(models.Delivery, stored)
        row.state, row.outcome = "processed", "failed: internal error"
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(), clock=clock,
                     session_factory=session_factory)
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
        page = client.get("/components/comp").text
    assert 'certifier_tracking_poll_failures{component="comp"} 1.0' in metrics
    assert 'certifier_tracking_error{component="comp"} 1.0' in metrics
    assert 'certifier_webhook_deliveries_failing{state="processed"} 1.0' in metrics
    assert "Tracking is failing" in page and "1 failed poll in a row" in page
    assert "git ls-remote of the component&#39;s URL failed" in page


# What errors may say ---------------------------------------------------------------------------


def test_a_poll_error_never_repeats_the_forges_answer_body(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    _, _, cid = gitlab_component(session_factory, clock, gitlab_fake)
    gitlab_fake.limit_status, gitlab_fake.rate_limit_next = 500, 1  # answers {"message": …}
    assert not poll(session_factory, cid, clock, tmp_path).ok
    error = state(session_factory, cid).last_error
    assert error == ("GitLab project grp/comp: HTTP 500 (details in the worker log)")


def test_a_git_poll_error_does_not_say_whether_a_local_path_exists(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
) -> None:
    (tmp_path / "exists").mkdir()
    errors = []
    for name, url in (("here", tmp_path / "exists"), ("gone", tmp_path / "gone")):
        cid = add(session_factory, clock, source="git", url=str(url), name=name)
        assert not poll(session_factory, cid, clock, tmp_path).ok
        errors.append(state(session_factory, cid).last_error)
    assert errors[0] == errors[1]
    assert str(tmp_path) not in errors[0]


def test_a_delivery_outcome_never_repeats_the_forges_answer_body(
    session_factory: sessionmaker[Session], clock: FakeClock, gitlab_fake: FakeGitLab,
    tmp_path: Path,
) -> None:
    repo, first, _ = gitlab_component(session_factory, clock, gitlab_fake)
    sources = source_factory(tmp_path, 5, 5)
    stored = store_gitlab_push(session_factory, clock, gitlab_push("grp/comp", first))
    deliveries.process(session_factory, stored, sources, clock, RecordingDispatcher())
    second = repo.commit()
    gitlab_fake.limit_status, gitlab_fake.rate_limit_next = 500, 5
    stored = store_gitlab_push(session_factory, clock, gitlab_push(
        "grp/comp", second, first, commits=[(second, "next")]))
    outcome = deliveries.process(session_factory, stored, sources, clock,
                                 RecordingDispatcher()).outcome
    assert "source unavailable (GitLab project grp/comp: HTTP 500" in outcome
    assert "rate limited" not in outcome
    with session_scope(session_factory) as session:
        assert session.scalar(select(models.Delivery.outcome).where(
            models.Delivery.id == stored)) == outcome


def test_the_worker_refuses_a_stored_url_the_policy_does_not_allow(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    upstream: Upstream,
) -> None:
    upstream.commit()
    cid = add(session_factory, clock, source="git", url=str(upstream.bare))  # stored long ago
    sources = source_factory(tmp_path, 5, 30, SourcePolicy())
    result = polling.poll(session_factory, cid, sources, clock, RecordingDispatcher())
    assert not result.ok
    assert state(session_factory, cid).last_error.startswith(
        "refused by the config's sources policy: url: local paths")
    assert commits(session_factory) == {}


def test_a_huge_stored_poll_interval_does_not_stop_polling_of_any_component(
    session_factory: sessionmaker[Session], clock: FakeClock, tmp_path: Path,
    upstream: Upstream,
) -> None:
    huge = add(session_factory, clock, source="git", url=str(upstream.bare), name="huge")
    other = add(session_factory, clock, source="git", url=str(upstream.bare), name="other")
    with session_scope(session_factory) as session:  # stored before inputs were bounded
        sqlite = session.get_bind().dialect.name == "sqlite"  # PostgreSQL's column is 32 bits
        session.get_one(models.Component, huge).poll_interval_s = \
            3_000_000 * 86_400 if sqlite else 2**31 - 1
    upstream.commit()
    with session_scope(session_factory) as session:
        assert polling.due(session, clock) == [huge, other]
    assert poll(session_factory, huge, clock, tmp_path).next_poll_in == polling.MAX_INTERVAL
    assert poll(session_factory, other, clock, tmp_path).ok
