"""The environment check's figures where people and Prometheus read them: the run detail of the
API, the candidate page's run rows, and ``/metrics``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from certifier.domain.environment import EnvironmentPolicy
from tests.factories import World

from .test_metrics import scrape, value

ENVIRONMENT: dict[str, Any] = {
    "version": 1,
    "host": {"seconds": 12.0, "cpu_pressure_pct": 30.5, "io_pressure_pct": None},
    "spans": {"ping": {"seconds": 12.0, "cpu_pressure_pct": 30.5}},
    "probes": {"start": {"probe_tcp_gbps": 9.5, "background": {"cpu_pressure_pct": 63.0}}},
}


def _too_busy_run(world: World) -> int:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    (run_id,) = world.reconcile().runs_created
    world.claim(run_id)
    world.clock.advance(timedelta(minutes=1))
    world.finish(run_id, environment=ENVIRONMENT, environment_policy=EnvironmentPolicy())
    return run_id


def test_the_run_detail_carries_the_figures_and_what_was_judged(client: TestClient,
                                                                world: World) -> None:
    body = client.get(f"/api/v1/runs/{_too_busy_run(world)}").json()
    assert body["verdict"] == "infra_error" and body["too_busy"] is True
    assert body["environment"]["spans"] == ENVIRONMENT["spans"]
    assert body["environment"]["judged"] == {
        "cpu_pressure_pct": 30.5, "probe_tcp_gbps": 9.5, "background_cpu_pressure_pct": 63.0}
    assert body["excuses"][0]["subject"] == "environment"


def test_a_run_without_figures_shows_none(client: TestClient, world: World) -> None:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    (run_id,) = world.reconcile().runs_created
    body = client.get(f"/api/v1/runs/{run_id}").json()
    assert body["environment"] is None and body["too_busy"] is False


def test_the_candidate_page_shows_each_runs_host_figures(client: TestClient,
                                                         world: World) -> None:
    candidate = client.get(f"/api/v1/runs/{_too_busy_run(world)}").json()["candidate_id"]
    page = client.get(f"/candidates/{candidate}").text
    assert "host: cpu pressure 63 %, cpu pressure during the suites 30 %" in page
    assert "testbed too busy: cpu pressure 63 % (ceiling 50 %)" in page


def test_metrics_show_the_last_figures_and_count_runs_refused_as_too_busy(
        client: TestClient, world: World) -> None:
    _too_busy_run(world)
    samples = scrape(client)
    assert value(samples, "certifier_testbed_environment", testbed="gate1",
                 figure="background_cpu_pressure_pct", unit="%") == 63.0
    assert value(samples, "certifier_testbed_environment", testbed="gate1",
                 figure="probe_tcp_gbps", unit="Gbit/s") == 9.5
    assert value(samples, "certifier_runs_too_busy_total", testbed="gate1") == 1.0
