"""``certifier component pause|resume|remove`` as an operator meets it, on a real database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from certifier.db import models
from certifier.db.session import make_engine, make_session_factory, session_scope

from .test_hold_cli import _certifier, database_with_nova


def _audit(url: str) -> list[tuple[str, str]]:
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        found = [(e.action, e.actor) for e in session.scalars(select(models.AuditEvent))]
    engine.dispose()
    return found


def test_an_operator_pauses_resumes_and_removes_a_component_audited(tmp_path: Path) -> None:
    url = database_with_nova(tmp_path)
    for action, shown in (("pause", "paused"), ("resume", "tracked"), ("remove", "removed")):
        done = _certifier("component", action, "nova", "--reason", "release freeze",
                          data_dir=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"component nova: {shown}"
    assert [action for action, _ in _audit(url)] == ["pause", "resume", "remove"]
    assert all(actor.startswith("cli:") for _, actor in _audit(url))


def test_a_refused_component_action_exits_1_with_the_reason(tmp_path: Path) -> None:
    database_with_nova(tmp_path)
    done = _certifier("component", "resume", "nova", "--reason", "x", data_dir=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (1, "component 'nova' is not paused")
