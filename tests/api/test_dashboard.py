"""The dashboard page: readable HTML, untrusted text escaped, no scripts allowed."""

from fastapi.testclient import TestClient

from .factories import World

EVIL = '<script>alert("owned")</script>'


def test_an_empty_dashboard_says_so(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "No known-good yet." in response.text
    assert "No candidates yet." in response.text
    assert 'name="viewport"' in response.text


def test_a_script_in_a_commit_title_is_escaped(client: TestClient, world: World) -> None:
    world.component("nova")
    world.commit("nova", "n1", EVIL)
    world.promote_heads()  # the title now shows in the manifest and in the candidate
    world.commit("nova", "n2", EVIL + " again")
    world.reconcile()
    page = client.get("/").text
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;") >= 2


def test_the_page_forbids_scripts_and_external_assets(client: TestClient) -> None:
    headers = client.get("/").headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_the_dashboard_shows_the_manifest_and_candidates(client: TestClient, world: World) -> None:
    world.component("nova")
    head = world.commit("nova", "n1", "nova: faster boot")
    world.promote_heads()
    world.commit("nova", "n2", "nova: slower boot")
    world.reconcile()
    page = client.get("/").text
    assert "#1" in page and head[:12] in page and "nova: faster boot" in page
    assert "promoted" in page and "gating" in page
    assert "nova: slower boot" in page
    assert "gate #1" in page and "passed" in page
    assert "/api/v1/runs/" in page
