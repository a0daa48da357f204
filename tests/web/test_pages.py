"""The dashboard's pages as HTML: what they say, what they link, what they escape.

These run on SQLite and PostgreSQL through the TestClient; the browser tests look at the same
pages rendered and live.
"""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient

from certifier.domain.results import SuiteResult
from certifier.domain.snapshots import diff_keys
from certifier.web.dashboard import available_actions
from tests.factories import World, ab_results
from tests.web.scenes import EVIL, Scene, busy_pipeline, suite_results

ESCAPED = "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;"


def _scene(world: World) -> Scene:
    return Scene(world.factory, world.clock)


def test_an_empty_dashboard_says_so(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "No known-good yet." in response.text
    assert "Nothing queued." in response.text and "Nothing soaking." in response.text
    assert 'name="viewport"' in response.text


def test_scripts_come_from_this_origin_only(client: TestClient) -> None:
    headers = client.get("/").headers
    csp = dict(part.strip().split(" ", 1) for part in
               headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"


def test_every_script_tag_loads_a_file_of_ours(client: TestClient, world: World) -> None:
    busy = busy_pipeline(_scene(world))
    for path in ("/", f"/candidates/{busy.rejected}"):
        page = client.get(path).text
        for tag in re.findall(r"<script\b[^>]*>", page):
            assert re.search(r'src="/static/[^"]+"', tag) or 'type="application/json"' in tag


def test_a_script_in_a_commit_title_is_escaped_everywhere(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    for path in (f"/candidates/{busy.soaking}", f"/candidates/{busy.rejected}",
                 "/components/neutron"):
        page = client.get(path).text
        assert EVIL not in page
        assert ESCAPED in page, path
    # Inside the chart data it is JSON with <, > and & escaped, so it cannot end the block.
    assert "</script>alert" not in client.get(f"/candidates/{busy.rejected}").text


def test_the_overview_shows_known_good_board_decisions_and_testbeds(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get("/").text
    assert '<div class="kg-version">#2</div>' in page
    assert "Libvirt: cache domain capabilities" in page
    assert f'id="board-{busy.soaking}"' in page and f'id="board-{busy.queued}"' in page
    assert "promoted to known-good #2" in page
    assert "bandwidth throughput_gbps h1→h2" in page  # the rejection's excuse
    assert "soak1" in page and f"candidate {busy.soaking}</a> soak 3" in page
    assert 'value="http://testserver/api/v1/manifest"' in page


def test_a_soaking_candidate_has_a_progress_bar_with_time_left_and_runs(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    card = client.get("/").text.split(f'id="board-{busy.soaking}"')[1].split("</article>")[0]
    value = int(re.search(r'<progress class="soak-bar" value="(\d+)"', card).group(1))  # type: ignore[union-attr]
    assert 30 <= value <= 50  # about 25 min of the 1 h soak
    assert "of 1 h" in card and "left" in card
    assert "2 of ≥1 passing runs · 3 so far · one running" in card


def test_the_known_good_turns_stale_after_three_days_by_default(
    client: TestClient, world: World
) -> None:
    world.component("nova")
    world.commit("nova", "n1")
    world.promote_heads()
    assert "is stale" not in client.get("/").text
    world.clock.advance(timedelta(days=3, minutes=1))
    assert "The known-good is stale." in client.get("/").text


def test_the_candidate_page_lists_what_changed_with_upstream_links(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get(f"/candidates/{busy.soaking}").text
    assert "What changed against known-good #2" in page
    # neutron is on GitHub, cinder on GitLab: both get commit links; q2 lies between q1 and q3
    assert re.search(r'href="https://github.com/openstack/neutron/commit/[0-9a-f]{40}"', page)
    assert re.search(r'href="https://gitlab.com/openstack/cinder/-/commit/[0-9a-f]{40}"', page)
    changes = page.split("What changed")[1].split("<h2")[0]
    assert changes.index("Revert egress shaping") < changes.index("Shape egress at 400 Mbit/s")


def test_the_candidate_page_shows_runs_numbers_and_the_baseline_band(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get(f"/candidates/{busy.rejected}").text
    assert "Why it was rejected" in page
    assert '<span class="badge regressed">regressed</span>' in page
    row = page.split("bandwidth throughput_gbps h1→h2 (protocol=tcp,streams=1)</td>")[1]
    row = row.split("</tr>")[0]
    assert "0.3724" in row and "0.78" in row and "-52.3 %" in row
    assert 'id="chart-data"' in page and '"label": "known-good #2"' in page


def test_a_rejected_single_change_names_its_culprit(client: TestClient, world: World) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get(f"/candidates/{busy.rejected}").text
    culprit = page.split('<p class="culprit-note">')[1].split("</p>")[0]
    assert "neutron" in culprit and "Shape egress at 400 Mbit/s" in culprit


def test_an_unknown_candidate_is_an_html_404(client: TestClient) -> None:
    response = client.get("/candidates/4242")
    assert response.status_code == 404
    assert "no candidate 4242" in response.text and "<html" in response.text


def test_the_actions_are_offered_only_when_the_api_has_them(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get(f"/candidates/{busy.soaking}").text
    assert 'data-action="cancel"' in page and 'data-action="promote"' in page
    assert page.count("data-unavailable") == 0  # this app has the operator endpoints

    bare = FastAPI()

    @bare.get("/offered")
    def offered(request: Request) -> dict[str, bool]:
        return available_actions(request)

    with TestClient(bare) as probe:
        assert probe.get("/offered").json() == {"waive": False, "promote": False,
                                                "cancel": False, "mark-bad": False,
                                                "retry": False, "culprit/stop": False}
        router = APIRouter(prefix="/api/v1")

        @router.post("/candidates/{candidate_id}/cancel")
        def cancel(candidate_id: int) -> None:  # an included route of that shape
            return None

        bare.include_router(router)
        assert probe.get("/offered").json()["cancel"] is True


def test_the_waive_form_offers_the_failing_checks_and_metrics(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get(f"/candidates/{busy.rejected}").text
    form = page.split('data-action="waive"')[1].split("</form>")[0]
    assert 'value="bandwidth.throughput_gbps{dst=h2,protocol=tcp,src=h1,streams=1}"' in form
    assert 'data-action="cancel"' not in page  # a rejected candidate cannot be cancelled


def test_the_component_page_tags_commits_by_what_became_of_them(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get("/components/neutron").text
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'<td class="title">([^<]*?)(?: <span.*?)?</td>.*?<td class="tags">(.*?)</td>', page,
        re.S)}
    assert "known-good #2" in rows["OVN: skip stale port bindings"]
    assert f"blamed by #{busy.rejected}" in rows[f"Shape egress at 400 Mbit/s {ESCAPED}"]
    assert f"soaking #{busy.soaking}" in rows["Revert egress shaping"]
    assert f"queued #{busy.queued}" in rows["Revert egress shaping"]


def test_the_history_diffs_each_known_good_with_the_one_before(
    client: TestClient, world: World
) -> None:
    busy_pipeline(_scene(world))
    page = client.get("/known-good").text
    two = page.split('id="v2"')[1].split("</article>")[0]
    assert "Changes since #1" in two and "nova" in two and "neutron" not in two
    assert "Libvirt: cache domain capabilities" in two
    assert '/known-good/diff?from=1&amp;to=2' in two
    diff = client.get("/known-good/diff?from=1&to=2").text
    assert "Libvirt: cache domain capabilities" in diff and "cinder" not in diff


def test_the_audit_log_lists_decisions_newest_first_with_links(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get("/audit").text
    rows = page.split("<tbody>")[1]
    assert rows.index(f"candidate {busy.rejected}") < rows.index(">promote<")
    assert f'href="/candidates/{busy.rejected}"' in page
    only = client.get("/audit", params={"action": "promote"}).text
    assert "reject" not in only.split("<tbody>")[1]


def test_without_deliveries_the_webhook_page_says_so(client: TestClient) -> None:
    assert "No webhook deliveries recorded." in client.get("/deliveries").text


def test_stored_webhook_deliveries_are_listed(client: TestClient, world: World) -> None:
    from certifier.db import models
    from certifier.db.session import session_scope

    world.component("nova")
    with session_scope(world.factory) as session:
        session.add(models.Delivery(source="gitlab", event="push", dedup_key="k1",
                                    received_at=world.clock.now(), state="processed",
                                    outcome="2 new commits", project="openstack/nova",
                                    ref="refs/heads/main", body="{}"))
    page = client.get("/deliveries").text
    assert "2 new commits" in page and "openstack/nova" in page and "gitlab" in page


def test_static_files_are_versioned_cached_and_compressed(client: TestClient) -> None:
    page = client.get("/").text
    url = re.search(r'src="(/static/live\.js\?v=[0-9a-f]{12})"', page).group(1)  # type: ignore[union-attr]
    response = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "immutable" in response.headers["cache-control"]
    assert "EventSource" in response.text
    assert client.get("/static/../dashboard.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404


def test_the_charting_library_is_served_from_its_installed_package(
    client: TestClient, world: World
) -> None:
    busy = busy_pipeline(_scene(world))
    page = client.get(f"/candidates/{busy.soaking}").text
    url = re.search(r'src="(/static/vendor/plotly\.min\.js\?v=[^"]+)"', page).group(1)  # type: ignore[union-attr]
    body = client.get(url).text
    assert body.lstrip().startswith("/**") and "plotly.js" in body[:200]


def test_a_failing_run_shows_on_the_rejected_candidate(client: TestClient, world: World) -> None:
    scene = _scene(world)
    scene.component("nova")
    scene.testbed("gate1")
    scene.commit("nova", "n1")
    gate = scene.reconcile().runs_created[-1]
    scene.run(gate, suite_results(reach=False))
    (rejected,) = scene.reconcile().rejected
    page = client.get(f"/candidates/{rejected}").text
    assert "ping check &#39;reach h1-&gt;h2&#39; failed: 100 % loss" in page
    assert '<span class="badge failed">failed</span>' in page


def test_the_candidate_page_shows_the_state_diff_across_the_upgrade(
    client: TestClient, world: World
) -> None:
    scene = _scene(world)
    scene.component("api")
    scene.testbed("gate1")
    scene.commit("api", "a1")
    gate = scene.reconcile().runs_created[-1]
    diff = diff_keys("api", {"config.max_clients": "512", "config.port": "8774"},
                     {"config.max_clients": "64", "config.port": "8774"},
                     fresh={"config.max_clients": "64"})
    scene.run(gate, [SuiteResult("upgrade", checks=diff.checks("upgrade"), state_diffs=[diff])])
    (rejected,) = scene.reconcile().rejected
    page = client.get(f"/candidates/{rejected}").text
    section = page.split('id="state-title"')[1].split("</section>")[0]
    row = section.split("<code>config.max_clients</code>")[1].split("</tr>")[0]
    assert "<code>512</code>" in row and "<code>64</code>" in row
    assert "not declared in the candidate's upgrade notes" in row
    assert "1 unchanged" in section


def test_a_run_page_shows_an_ab_run_s_series_by_side_and_round(
    client: TestClient, world: World
) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    report = world.reconcile()
    run_id = report.runs_created[-1]
    world.claim(run_id)
    world.finish(run_id, ab_results(2, own=1.0, control=4.0), rounds=2)
    page = client.get(f"/runs/{run_id}").text
    assert "A/B: 2 rounds, candidate and the known-good's control interleaved" in page
    row = re.search(r"<td>ping loss_pct h1→h2</td>.*?</tr>", page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    values = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
    assert values[2:] == ["1, 1", "4, 4", "1", "4", "-75.0 %"]
    assert f'href="/runs/{run_id}"' in client.get(f"/candidates/{report.formed[0]}").text


def test_an_unknown_run_is_an_html_404(client: TestClient) -> None:
    response = client.get("/runs/4242")
    assert response.status_code == 404
    assert "no run 4242" in response.text
