"""Candidates, runs and testbeds, as the scheduler and workers leave them."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from certifier.domain.results import Check, SuiteResult
from certifier.domain.snapshots import diff_keys
from tests.factories import World, ab_results


def gating_candidate(world: World) -> tuple[dict[str, str], int]:
    """One candidate gating on nova+neutron heads; returns the heads and its gate run id."""
    world.component("nova")
    world.component("neutron")
    heads = {"nova": world.commit("nova", "n1", "nova: faster boot"),
             "neutron": world.commit("neutron", "q1", "neutron: new router")}
    report = world.reconcile()
    return heads, report.runs_created[0]


def test_no_candidates_is_an_empty_list(client: TestClient) -> None:
    assert client.get("/api/v1/candidates").json() == {"items": []}


def test_a_gating_candidate_is_listed_with_its_excuses(client: TestClient, world: World) -> None:
    gating_candidate(world)
    (cand,) = client.get("/api/v1/candidates").json()["items"]
    assert cand["state"] == "gating"
    assert cand["base_version"] is None
    assert sorted(cand["changed"]) == ["neutron", "nova"]
    assert len(cand["combination"]) == 64
    assert cand["gating_started_at"] is not None
    assert cand["soak_started_at"] is None
    assert cand["excuses"][0]["kind"] == "gating"
    assert {"kind", "subject", "message", "data"} == set(cand["excuses"][0])


def test_candidates_filter_by_state_and_come_newest_first(
    client: TestClient, world: World
) -> None:
    gating_candidate(world)
    world.commit("nova", "n2")
    world.reconcile()  # a second candidate queues behind the gating one
    items = client.get("/api/v1/candidates").json()["items"]
    assert [c["state"] for c in items] == ["queued", "gating"]
    queued = client.get("/api/v1/candidates", params={"state": "queued"}).json()["items"]
    assert [c["id"] for c in queued] == [items[0]["id"]]
    assert len(client.get("/api/v1/candidates", params={"limit": 1}).json()["items"]) == 1
    assert client.get("/api/v1/candidates", params={"state": "soaking"}).json() == {"items": []}


@pytest.mark.parametrize("params", [{"state": "happy"}, {"limit": 0}, {"limit": 501}])
def test_a_bad_candidate_filter_is_a_422(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/api/v1/candidates", params=params).status_code == 422


def test_a_candidate_shows_its_combination_runs_and_excuses(
    client: TestClient, world: World
) -> None:
    heads, gate_run = gating_candidate(world)
    cand_id = client.get("/api/v1/candidates").json()["items"][0]["id"]
    body = client.get(f"/api/v1/candidates/{cand_id}").json()
    assert body["components"] == [
        {"name": "neutron", "sha": heads["neutron"], "title": "neutron: new router"},
        {"name": "nova", "sha": heads["nova"], "title": "nova: faster boot"},
    ]
    (run,) = body["runs"]
    assert (run["id"], run["kind"], run["attempt"], run["state"], run["verdict"]) == (
        gate_run, "gate", 1, "pending", None)
    assert body["excuses"][0]["message"].startswith("gating: ")


def test_a_rejected_candidate_carries_the_failing_runs_excuses(
    client: TestClient, world: World
) -> None:
    _, gate_run = gating_candidate(world)
    world.clock.advance(timedelta(minutes=1))
    world.finish(gate_run, [SuiteResult("ping", checks=[
        Check("ping", "h1 reaches h2", False, "100 % loss from h1 to h2")])])
    world.reconcile()
    (cand,) = client.get("/api/v1/candidates", params={"state": "rejected"}).json()["items"]
    detail = client.get(f"/api/v1/candidates/{cand['id']}").json()
    assert detail["runs"][0]["verdict"] == "failed"
    assert any("100 % loss" in e["message"] for e in detail["excuses"])


def test_an_unknown_candidate_is_a_404(client: TestClient) -> None:
    response = client.get("/api/v1/candidates/999")
    assert (response.status_code, response.json()) == (
        404, {"detail": "no candidate 999", "errors": []})


def test_a_run_shows_checks_measurements_tools_and_log(client: TestClient, world: World) -> None:
    _, gate_run = gating_candidate(world)
    world.finish(gate_run)
    body = client.get(f"/api/v1/runs/{gate_run}").json()
    assert (body["state"], body["verdict"], body["kind"]) == ("finished", "passed", "gate")
    assert body["checks"] == [
        {"suite": "ping", "name": "h1 reaches h2", "passed": True, "message": "0 % loss"}]
    assert body["measurements"] == [{
        "suite": "ping", "metric": "rtt_avg_ms", "labels": {"source": "h1", "destination": "h2"},
        "value": 0.05, "unit": "ms", "better": "lower", "side": "candidate", "round": 0,
        "events": None, "trials": None}]
    assert body["rounds"] == 0
    assert body["tool_versions"] == {"ping": "iputils 20221126"}
    assert body["log"] == f"log of run {gate_run}\n"
    assert body["excuses"] == []
    assert body["finished_at"] is not None


def test_a_run_shows_the_state_diff_across_the_upgrade(client: TestClient, world: World) -> None:
    _, gate_run = gating_candidate(world)
    diff = diff_keys("api", {"config.max_clients": "512"}, {"config.max_clients": "64"},
                     fresh={"config.max_clients": "64"})
    world.finish(gate_run, [SuiteResult("upgrade", checks=diff.checks("upgrade"),
                                        state_diffs=[diff])])
    body = client.get(f"/api/v1/runs/{gate_run}").json()
    assert body["state_diff"] == [{
        "component": "api", "source": "hook", "unchanged": 0, "files": [], "problems": [],
        "changes": [{"key": "config.max_clients", "kind": "changed", "before": "512",
                     "after": "64", "fresh": "64", "note": None}]}]
    assert body["excuses"][0]["message"] == (
        "upgrade check 'state api/config.max_clients' failed: upgrade changed api "
        "config.max_clients: 512 → 64 (not declared in the candidate's upgrade notes)")


def test_a_run_without_an_upgrade_has_an_empty_state_diff(client: TestClient,
                                                          world: World) -> None:
    _, gate_run = gating_candidate(world)
    world.finish(gate_run)
    assert client.get(f"/api/v1/runs/{gate_run}").json()["state_diff"] == []


def test_an_ab_run_shows_each_series_by_side_and_round(client: TestClient, world: World) -> None:
    _, gate_run = gating_candidate(world)
    world.finish(gate_run, ab_results(2, own=1.0, control=3.0), rounds=2)
    body = client.get(f"/api/v1/runs/{gate_run}").json()
    assert body["rounds"] == 2
    assert body["series"] == [{
        "key": "ping.loss_pct{dst=h2,src=h1}", "suite": "ping", "metric": "loss_pct",
        "labels": {"src": "h1", "dst": "h2"}, "unit": "%", "better": "lower",
        "rounds": [0, 1], "candidate": [1.0, 1.0], "control": [3.0, 3.0]}]
    assert [(m["side"], m["round"], m["events"], m["trials"]) for m in body["measurements"]] == [
        ("candidate", 0, 1, 100), ("control", 0, 3, 100), ("candidate", 1, 1, 100),
        ("control", 1, 3, 100)]


def test_an_unknown_run_is_a_404(client: TestClient) -> None:
    response = client.get("/api/v1/runs/12345")
    assert (response.status_code, response.json()) == (
        404, {"detail": "no run 12345", "errors": []})


@pytest.mark.parametrize("path", ["/api/v1/runs/abc", "/api/v1/candidates/0"])
def test_a_malformed_id_is_a_422(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 422


def test_testbeds_are_listed_with_their_leases(client: TestClient, world: World) -> None:
    world.testbed("gate1")
    world.testbed("soak1", role="soak")
    items = client.get("/api/v1/testbeds").json()["items"]
    assert items == [
        {"name": "gate1", "driver": "netns", "role": "gate", "leased_by_run_id": None,
         "lease_expires_at": None},
        {"name": "soak1", "driver": "netns", "role": "soak", "leased_by_run_id": None,
         "lease_expires_at": None},
    ]


def test_a_leased_testbed_names_its_run(client: TestClient, world: World) -> None:
    world.testbed("gate1")
    _, gate_run = gating_candidate(world)
    world.claim(gate_run)
    (bed,) = client.get("/api/v1/testbeds").json()["items"]
    assert bed["leased_by_run_id"] == gate_run
    assert bed["lease_expires_at"] is not None
