"""Excuses and culprit finding go through typed columns over JSON: rows an earlier version wrote
read back typed and are written back in the same shape; a row of any other shape reads back as
an ``unreadable`` excuse or search instead of raising."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from certifier.db import models
from certifier.db.session import session_scope
from certifier.domain.judgement import Excuse
from tests.domain.test_stored_records import STORED

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
EXCUSES = [{"kind": "check", "subject": "ping.h1 reaches h2", "message": "100 % loss",
            "data": {"loss": 1.0}}]


def _candidate(factory: sessionmaker[Session], excuses: str, bisection: str) -> int:
    with session_scope(factory) as session:
        session.add(models.Combination(hash="c" * 64, created_at=NOW))
        session.flush()
        session.execute(text(
            "INSERT INTO candidates (id, combination_hash, state, changed, excuses, bisection, "
            "created_at, updated_at) VALUES (7, :hash, 'rejected', '[]', :excuses, :bisection, "
            ":now, :now)"), {"hash": "c" * 64, "excuses": excuses, "bisection": bisection,
                             "now": NOW.replace(tzinfo=None)})
    return 7


def _raw(factory: sessionmaker[Session]) -> tuple[object, object]:
    """The candidate's excuses and bisection as stored, bypassing the column types."""
    with session_scope(factory) as session:
        row = session.execute(text("SELECT CAST(excuses AS TEXT), CAST(bisection AS TEXT) "
                                   "FROM candidates WHERE id = 7")).one()
    return json.loads(row[0]), json.loads(row[1])


def test_rows_in_the_stored_shape_read_back_typed_and_write_back_the_same(
        session_factory: sessionmaker[Session]) -> None:
    cid = _candidate(session_factory, json.dumps(EXCUSES), json.dumps(STORED))
    with session_scope(session_factory) as session:
        cand = session.get_one(models.Candidate, cid)
        assert cand.excuses == (Excuse("check", "ping.h1 reaches h2", "100 % loss",
                                       {"loss": 1.0}),)
        assert cand.bisection is not None and cand.bisection.status == "found"
        cand.excuses = tuple(cand.excuses)  # written back through the column types
        cand.bisection = cand.bisection
        session.flush()
        session.expire(cand, ["excuses", "bisection"])
        assert cand.bisection is not None and cand.bisection.as_dict() == STORED
    assert _raw(session_factory) == (EXCUSES, STORED)


def test_rows_of_no_known_shape_read_back_as_unreadable_not_as_an_error(
        session_factory: sessionmaker[Session]) -> None:
    cid = _candidate(session_factory, json.dumps(["a bare string", {"kind": 1}, EXCUSES[0]]),
                     json.dumps([1, 2, 3]))
    with session_scope(session_factory) as session:
        cand = session.get_one(models.Candidate, cid)
        assert [e.kind for e in cand.excuses] == ["unreadable", "unreadable", "check"]
        assert "'a bare string'" in cand.excuses[0].message
        assert cand.bisection is not None and cand.bisection.status == "unreadable"
