"""Services register their own after-commit work; the boundary that opened the session only says
where it goes (``dispatch.bind``). So an action asks for a reconcile pass whoever commits it (the
API here; the CLI in ``tests/test_cli.py``), and the manifest cache is cleared only once a
change of the known-good has committed."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.deps import AppContext
from certifier.db.session import session_scope
from certifier.pipeline import actions
from certifier.pipeline.dispatch import RecordingDispatcher, bind, reconcile_after_commit
from tests.factories import World

from .conftest import ADMIN


class Abandoned(Exception):
    """Raised inside a unit of work to roll it back."""


def test_pausing_a_component_over_the_api_asks_for_one_pass_after_the_commit(
    client: TestClient, world: World, dispatcher: RecordingDispatcher
) -> None:
    world.component("nova")
    answer = client.post("/api/v1/components/nova/pause", json={"reason": "flaky"},
                         headers=ADMIN)
    assert answer.status_code == 200
    assert dispatcher.reconciles == 1


def test_a_transaction_asks_for_one_pass_however_many_services_ask(
    db_factory: sessionmaker[Session], world: World
) -> None:
    world.component("nova")
    sent = RecordingDispatcher()
    with session_scope(db_factory) as session:
        bind(session, sent)
        reconcile_after_commit(session)
        reconcile_after_commit(session)
        assert sent.reconciles == 0  # not before the commit
    assert sent.reconciles == 1


def test_a_rolled_back_revocation_leaves_the_manifest_cache_and_a_committed_one_clears_it(
    app: FastAPI, client: TestClient, world: World, db_factory: sessionmaker[Session]
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    assert world.promote_heads() == 1
    assert client.get("/api/v1/manifest").status_code == 200
    context: AppContext = app.state.certifier
    cache, sent = context.manifest_cache, RecordingDispatcher()
    assert cache.get("json")[0]

    with pytest.raises(Abandoned), session_scope(db_factory) as session:
        bind(session, sent, cache.clear)
        actions.revoke(session, world.clock, 1, "token:test", "bad")
        assert cache.get("json")[0], "cleared before the commit"
        raise Abandoned
    assert cache.get("json")[0], "a rolled-back revocation cleared the cache"
    assert sent.reconciles == 0

    with session_scope(db_factory) as session:
        bind(session, sent, cache.clear)
        actions.revoke(session, world.clock, 1, "token:test", "bad")
        assert cache.get("json")[0], "cleared before the commit"
    assert not cache.get("json")[0]
    assert sent.reconciles == 1
    assert client.get("/api/v1/manifest").status_code == 404
