"""The dashboard shows a known-good commit that upstream no longer has (issue #13, item 3)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from certifier.db.session import session_scope
from certifier.pipeline import components
from certifier.tracking import events
from tests.factories import World


def _known_good(world: World) -> str:
    world.component("nova")
    world.testbed("gate1")
    sha = world.commit("nova", "n1")
    assert world.promote_heads() == 1
    return sha


def _gone_known_good(world: World) -> str:
    sha = _known_good(world)
    with session_scope(world.factory) as session:
        events.mark_gone(session, components.get_component(session, "nova"), [sha],
                         world.clock.now())
    return sha


def test_the_known_good_page_says_which_commit_is_gone_upstream(
    client: TestClient, world: World,
) -> None:
    sha = _gone_known_good(world)
    page = client.get("/known-good").text
    assert "gone upstream" in page
    assert sha[:12] in page.split("gone upstream", 1)[1].split("</p>", 1)[0]
    assert "deploy it from Certifier's archive" in page


def test_the_component_page_marks_the_gone_commit(client: TestClient, world: World) -> None:
    _gone_known_good(world)
    page = client.get("/components/nova").text
    assert 'class="badge gone-upstream"' in page
    assert "kept in Certifier's mirror and archive" in page


def test_nothing_is_flagged_while_upstream_has_the_commit(
    client: TestClient, world: World,
) -> None:
    _known_good(world)
    assert "gone upstream" not in client.get("/known-good").text
    assert "gone-upstream" not in client.get("/components/nova").text
