"""Excuses and culprit finding as they are stored: the JSON shape round-trips unchanged, and any
other shape reads back as something a page can show, never an error."""

from __future__ import annotations

from datetime import UTC, datetime

from certifier.domain.bisection_state import UNREADABLE, Record
from certifier.domain.judgement import Excuse

# What pipeline/bisection.py stored before the column was typed: a found culprit, with one
# step judged (``failures``), one unfinished and one withdrawn.
STORED = {
    "status": "found", "known_good": 3, "failed_run": 41,
    "started_at": "2026-03-01T10:00:00+00:00", "finished_at": "2026-03-01T12:30:00+00:00",
    "ranges": {"neutron": ["a1", "a2", "a3"]},
    "steps": [
        {"run": 42, "phase": "reproduce", "component": "", "sha": "",
         "combination": {"neutron": "a3", "nova": "b1"}, "verdict": "failed",
         "finished_at": "2026-03-01T11:00:00+00:00", "retry": 0,
         "purpose": "the rejected candidate's own combination",
         "failures": ["check:ping.h1 reaches h2"]},
        {"run": 43, "phase": "bisect", "component": "neutron", "sha": "a2",
         "combination": {"neutron": "a2", "nova": "b1"}, "verdict": None,
         "finished_at": None, "retry": 1, "purpose": "neutron at a2"},
        {"run": 44, "phase": "bisect", "component": "neutron", "sha": "a1",
         "combination": {"neutron": "a1", "nova": "b1"}, "verdict": None,
         "finished_at": None, "retry": 0, "purpose": "neutron at a1", "withdrawn": True},
    ],
    "result": {"component": "neutron", "sha": "a2", "last_good": "a1", "evidence": [43, 42],
               "explanation": "a2 broke it", "together": [], "carriers": ["a2", "a3"]},
    "reason": None,
}


def test_a_stored_culprit_finding_reads_back_typed_and_writes_the_same_json() -> None:
    record = Record.read(STORED)
    assert record.status == "found" and record.known_good == 3
    assert record.started_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert record.ranges == {"neutron": ("a1", "a2", "a3")}
    assert [s.run for s in record.steps] == [42, 43, 44]
    assert record.steps[0].failures == ("check:ping.h1 reaches h2",)
    assert record.steps[1].failures is None and record.steps[2].withdrawn
    assert record.result is not None and record.result.carriers == ("a2", "a3")
    assert record.as_dict() == STORED


def test_a_culprit_finding_of_no_known_shape_reads_as_unreadable_with_the_reason() -> None:
    for raw in ("garbage", [1, 2], 7):
        record = Record.read(raw)
        assert record.status == UNREADABLE and not record.running
        assert record.reason is not None and "cannot be read" in record.reason
    partial = Record.read({"status": "running", "steps": ["x", {"run": "nine"}],
                           "result": "?", "started_at": "yesterday"})
    assert partial.running and partial.known_good is None and partial.started_at is None
    assert [s.run for s in partial.steps] == [0] and partial.result is None


def test_a_stored_excuse_round_trips_and_an_unknown_shape_becomes_a_readable_excuse() -> None:
    stored = {"kind": "check", "subject": "ping.h1 reaches h2", "message": "100 % loss",
              "data": {"loss": 1.0}}
    assert Excuse.read(stored) == Excuse("check", "ping.h1 reaches h2", "100 % loss",
                                         {"loss": 1.0})
    assert Excuse.read(stored).as_dict() == stored
    assert Excuse.read({"kind": "gating", "message": "gate run in progress"}).subject == ""
    for raw in ("a bare string", {"kind": 3, "message": "m"}, {"message": "no kind"}, None):
        excuse = Excuse.read(raw)
        assert excuse.kind == "unreadable"
        assert excuse.message.startswith("an excuse stored in a shape this version cannot read")
        assert repr(raw)[:20] in excuse.message
