"""The manifest: formats, ETags, history and time travel."""

from datetime import datetime, timedelta

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.factories import World


def two_known_goods(world: World) -> dict[str, str]:
    """Known-good #1 on nova n1 + neutron q1, then #2 with nova n2; returns #2's heads."""
    world.component("nova")
    world.component("neutron")
    world.commit("nova", "n1")
    neutron = world.commit("neutron", "q1")
    assert world.promote_heads() == 1
    nova = world.commit("nova", "n2", "nova: second")
    assert world.promote_heads() == 2
    return {"nova": nova, "neutron": neutron}


@pytest.fixture
def one_known_good(world: World) -> dict[str, str]:
    world.component("my-nova")
    world.component("neutron")
    heads = {"my-nova": world.commit("my-nova", "n1", "nova: <b>bold</b>"),
             "neutron": world.commit("neutron", "q1")}
    assert world.promote_heads() == 1
    return heads


def test_no_known_good_yet_is_a_404(client: TestClient) -> None:
    response = client.get("/api/v1/manifest")
    assert (response.status_code, response.json()) == (
        404, {"detail": "no known-good yet", "errors": []})


def test_the_manifest_is_json_by_default(
    client: TestClient, one_known_good: dict[str, str]
) -> None:
    response = client.get("/api/v1/manifest")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["version"] == 1
    assert doc["promoted_at"].startswith("2026-01-01T")
    assert len(doc["combination"]) == 64
    assert doc["revoked_at"] is None
    assert [(c["name"], c["sha"]) for c in doc["components"]] == sorted(one_known_good.items())
    nova = next(c for c in doc["components"] if c["name"] == "my-nova")
    assert nova == {"name": "my-nova", "source": "git", "url": "https://git.example/my-nova.git",
                    "branch": "main", "sha": one_known_good["my-nova"],
                    "title": "nova: <b>bold</b>", "committed_at": None,
                    "gone_upstream": False, "gone_upstream_at": None}


def test_the_manifest_as_yaml_is_the_same_document(
    client: TestClient, one_known_good: dict[str, str]
) -> None:
    response = client.get("/api/v1/manifest", params={"format": "yaml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/yaml")
    assert yaml.safe_load(response.text) == client.get("/api/v1/manifest").json()


def test_the_manifest_as_env_lines(client: TestClient, one_known_good: dict[str, str]) -> None:
    response = client.get("/api/v1/manifest", params={"format": "env"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "CERTIFIER_MANIFEST_VERSION=1" in lines
    assert f"CERTIFIER_MY_NOVA_SHA={one_known_good['my-nova']}" in lines
    assert f"CERTIFIER_NEUTRON_SHA={one_known_good['neutron']}" in lines


def test_an_unknown_format_is_a_422(client: TestClient, one_known_good: dict[str, str]) -> None:
    response = client.get("/api/v1/manifest", params={"format": "xml"})
    assert response.status_code == 422
    assert response.json()["errors"]


def test_a_matching_etag_gets_a_bodiless_304(
    client: TestClient, one_known_good: dict[str, str]
) -> None:
    first = client.get("/api/v1/manifest")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = client.get("/api/v1/manifest", headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    listed = client.get("/api/v1/manifest", headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    stale = client.get("/api/v1/manifest", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200


def test_each_format_has_its_own_etag(client: TestClient, one_known_good: dict[str, str]) -> None:
    tags = {fmt: client.get("/api/v1/manifest", params={"format": fmt}).headers["etag"]
            for fmt in ("json", "yaml", "env")}
    assert len(set(tags.values())) == 3
    json_tag = tags["json"]
    response = client.get("/api/v1/manifest", params={"format": "yaml"},
                          headers={"If-None-Match": json_tag})
    assert response.status_code == 200


def test_the_etag_changes_when_a_new_known_good_is_promoted(
    client: TestClient, world: World
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    etag = client.get("/api/v1/manifest").headers["etag"]
    world.commit("nova", "n2")
    world.promote_heads()
    response = client.get("/api/v1/manifest", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.headers["etag"] != etag


def test_at_answers_what_was_known_good_then(client: TestClient, world: World) -> None:
    start = world.clock.now()
    heads = two_known_goods(world)
    v2, v1 = (datetime.fromisoformat(h["promoted_at"])
              for h in client.get("/api/v1/manifests").json()["items"])

    def version_at(when: str) -> object:
        return client.get("/api/v1/manifest", params={"at": when}).json().get("version")

    assert version_at((v2 - timedelta(seconds=1)).isoformat()) == 1
    assert version_at(v2.isoformat()) == 2
    assert version_at(v1.strftime("%Y-%m-%dT%H:%M:%SZ")) == 1
    assert version_at(v1.replace(tzinfo=None).isoformat()) == 1  # no offset: UTC
    at_v2 = client.get("/api/v1/manifest", params={"at": v2.isoformat()}).json()
    assert {c["name"]: c["sha"] for c in at_v2["components"]} == heads
    before = client.get("/api/v1/manifest", params={"at": start.isoformat()})
    assert before.status_code == 404
    assert before.json()["detail"].startswith("no known-good at ")


@pytest.mark.parametrize("at", ["last tuesday", "9999-12-31T23:59:59-05:00"])
def test_a_bad_at_is_a_422(client: TestClient, at: str) -> None:
    assert client.get("/api/v1/manifest", params={"at": at}).status_code == 422


def test_history_lists_every_version_newest_first(client: TestClient, world: World) -> None:
    two_known_goods(world)
    items = client.get("/api/v1/manifests").json()["items"]
    assert [(i["version"], i["reason"], i["revoked_at"]) for i in items] == [
        (2, "soak passed", None), (1, "soak passed", None)]
    assert items[0]["candidate"] != items[1]["candidate"]
    assert items[0]["combination"] != items[1]["combination"]


def test_no_history_is_an_empty_list(client: TestClient) -> None:
    assert client.get("/api/v1/manifests").json() == {"items": []}


def test_one_version_is_the_same_document_as_the_manifest_was(
    client: TestClient, world: World
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    v1 = client.get("/api/v1/manifest")
    world.commit("nova", "n2")
    world.promote_heads()
    response = client.get("/api/v1/manifests/1")
    assert response.json() == v1.json()
    assert response.headers["etag"] == v1.headers["etag"]
    env = client.get("/api/v1/manifests/2", params={"format": "env"}).text
    assert "CERTIFIER_MANIFEST_VERSION=2" in env.splitlines()
    cached = client.get("/api/v1/manifests/1", headers={"If-None-Match": v1.headers["etag"]})
    assert cached.status_code == 304


def test_an_unknown_version_is_a_404(client: TestClient) -> None:
    response = client.get("/api/v1/manifests/7")
    assert (response.status_code, response.json()) == (
        404, {"detail": "no known-good version 7", "errors": []})
    assert client.get("/api/v1/manifests/zero").status_code == 422
