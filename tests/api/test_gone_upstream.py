"""A known-good commit upstream no longer has is flagged: the commit list and every manifest
format (issue #13, item 3); the CSV and env forms stay parseable."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certifier.db.session import session_scope
from certifier.pipeline import components
from certifier.tracking import events
from tests.factories import World


@pytest.fixture
def gone(world: World) -> dict[str, str]:
    """Known-good #1 of nova and neutron, then nova's commit force-pushed away."""
    world.component("nova")
    world.component("neutron")
    world.testbed("gate1")
    heads = {"nova": world.commit("nova", "n1"), "neutron": world.commit("neutron", "q1")}
    assert world.promote_heads() == 1
    with session_scope(world.factory) as session:
        events.mark_gone(session, components.get_component(session, "nova"), [heads["nova"]],
                         world.clock.now())
    return heads


def test_the_commit_list_marks_a_commit_gone_upstream_with_when(
    client: TestClient, world: World, gone: dict[str, str],
) -> None:
    [nova] = client.get("/api/v1/components/nova/commits").json()["items"]
    [neutron] = client.get("/api/v1/components/neutron/commits").json()["items"]
    assert (nova["sha"], nova["gone_upstream"]) == (gone["nova"], True)
    assert nova["gone_upstream_at"].startswith(world.clock.now().isoformat()[:19])
    assert (neutron["gone_upstream"], neutron["gone_upstream_at"]) == (False, None)


def test_the_json_manifest_flags_only_the_gone_component(
    client: TestClient, gone: dict[str, str],
) -> None:
    flags = {c["name"]: (c["gone_upstream"], c["gone_upstream_at"] is not None)
             for c in client.get("/api/v1/manifest").json()["components"]}
    assert flags == {"neutron": (False, False), "nova": (True, True)}


def test_the_csv_manifest_has_the_flag_as_two_more_columns(
    client: TestClient, gone: dict[str, str],
) -> None:
    rows = list(csv.DictReader(io.StringIO(
        client.get("/api/v1/manifest", params={"format": "csv"}).text)))
    flags = {r["component"]: (r["gone_upstream"], bool(r["gone_upstream_at"])) for r in rows}
    assert flags == {"neutron": ("false", False), "nova": ("true", True)}
    assert {r["sha"] for r in rows} == set(gone.values())


def test_the_env_manifest_still_sources_in_a_shell_with_the_flag(
    client: TestClient, gone: dict[str, str], tmp_path: Path,
) -> None:
    env = tmp_path / "manifest.env"
    env.write_text(client.get("/api/v1/manifest", params={"format": "env"}).text)
    shown = subprocess.run(
        ["sh", "-c", '. "$1" && echo "$CERTIFIER_NOVA_SHA $CERTIFIER_NOVA_GONE_UPSTREAM '
         '$CERTIFIER_NEUTRON_GONE_UPSTREAM ${CERTIFIER_NOVA_GONE_UPSTREAM_AT:+at}"', "sh",
         str(env)], capture_output=True, text=True, check=True, timeout=10).stdout.split()
    assert shown == [gone["nova"], "1", "0", "at"]


def test_the_yaml_manifest_carries_the_same_flags(
    client: TestClient, gone: dict[str, str],
) -> None:
    import yaml

    doc = yaml.safe_load(client.get("/api/v1/manifest", params={"format": "yaml"}).text)
    assert doc == client.get("/api/v1/manifest").json()
    assert [c["gone_upstream"] for c in doc["components"]] == [False, True]
