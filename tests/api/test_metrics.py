"""``GET /metrics``: the pipeline's state for Prometheus, read from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import prometheus_client
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from certifier.api.app import create_app
from certifier.db.session import make_engine, make_session_factory
from certifier.domain.clock import FakeClock
from certifier.domain.lifecycle import CandidateState
from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from tests.factories import SOAK, World

CONFIGURED_SOAK = Settings().config.soak.duration  # the app fixture's settings: the defaults


def scrape(client: TestClient) -> list[Sample]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return [s for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample with exactly this name and these labels, or None."""
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
    return found[0] if found else None


def names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


def result(suite: str, *measurements: Measurement) -> list[SuiteResult]:
    return [SuiteResult(suite=suite, checks=[Check(suite, "works", True)],
                        measurements=list(measurements))]


def failing() -> list[SuiteResult]:
    return [SuiteResult(suite="ping", checks=[Check("ping", "h1 reaches h2", False, "100 % loss")])]


def rtt(ms: float) -> Measurement:
    return Measurement("ping", "rtt_avg_ms", ms, "ms", Better.LOWER, {"src": "h1", "dst": "h2"})


def started_world(world: World) -> World:
    world.component("nova")
    world.testbed("gate1")
    world.commit("nova", "n1")
    return world


def test_metrics_are_prometheus_text_that_parses(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert families["certifier_candidates"] == "gauge"
    assert families["certifier_runs"] == "counter"  # exposed as certifier_runs_total
    assert families["certifier_run_duration_seconds"] == "histogram"
    assert families["certifier_build_info"] == "gauge"
    assert "process_cpu_seconds" in families  # the process collector is registered too


def test_every_candidate_state_is_reported_even_at_zero(client: TestClient) -> None:
    samples = scrape(client)
    assert {state.value: value(samples, "certifier_candidates", state=state.value)
            for state in CandidateState} == {state.value: 0.0 for state in CandidateState}


def test_no_known_good_means_no_known_good_samples(client: TestClient) -> None:
    found = names(scrape(client))
    assert not found & {"certifier_known_good_version", "certifier_known_good_age_seconds",
                        "certifier_known_good_measurement"}


def test_a_promoted_known_good_reports_its_version_and_age_from_the_app_clock(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    started_world(world)
    assert world.promote_heads() == 1
    promoted_at = clock.now() - timedelta(minutes=1)  # promote_heads moves on a minute after
    clock.advance(timedelta(hours=2))
    samples = scrape(client)
    assert value(samples, "certifier_known_good_version") == 1.0
    assert value(samples, "certifier_known_good_age_seconds") == 2 * 3600 + 60
    assert value(samples, "certifier_known_good_promotion_timestamp_seconds") == (
        promoted_at.timestamp())
    assert value(samples, "certifier_candidates", state="promoted") == 1.0
    assert value(samples, "certifier_candidates", state="soaking") == 0.0


def test_runs_total_counts_finished_runs_by_kind_and_verdict(
    client: TestClient, world: World
) -> None:
    started_world(world)
    world.promote_heads()
    world.commit("nova", "n2-broken")
    gate = world.reconcile().runs_created[-1]
    world.finish(gate, failing())
    samples = scrape(client)
    assert value(samples, "certifier_runs_total", kind="gate", verdict="passed") == 1.0
    assert value(samples, "certifier_runs_total", kind="soak", verdict="passed") == 1.0
    assert value(samples, "certifier_runs_total", kind="gate", verdict="failed") == 1.0
    assert value(samples, "certifier_runs_total", kind="bisect", verdict="infra_error") == 0.0


def test_unfinished_runs_are_counted_by_kind_and_state(
    client: TestClient, world: World
) -> None:
    started_world(world)
    gate = world.reconcile().runs_created[-1]
    assert value(scrape(client), "certifier_runs_unfinished", kind="gate", state="pending") == 1
    world.claim(gate)
    samples = scrape(client)
    assert value(samples, "certifier_runs_unfinished", kind="gate", state="pending") == 0.0
    assert value(samples, "certifier_runs_unfinished", kind="gate", state="running") == 1.0
    assert value(samples, "certifier_runs_total", kind="gate", verdict="passed") == 0.0


def test_run_duration_histogram_is_built_from_started_and_finished_times(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    started_world(world)
    gate = world.reconcile().runs_created[-1]
    world.claim(gate)
    clock.advance(timedelta(seconds=90))
    world.finish(gate)
    soak = world.reconcile().runs_created[-1]
    world.claim(soak)
    clock.advance(timedelta(minutes=45))
    world.finish(soak)

    samples = scrape(client)

    def bucket(kind: str, le: str) -> float | None:
        return value(samples, "certifier_run_duration_seconds_bucket", kind=kind, le=le)

    assert (bucket("gate", "60.0"), bucket("gate", "120.0"), bucket("gate", "+Inf")) == (0, 1, 1)
    assert (bucket("soak", "1800.0"), bucket("soak", "3600.0")) == (0, 1)
    assert value(samples, "certifier_run_duration_seconds_sum", kind="gate") == 90.0
    assert value(samples, "certifier_run_duration_seconds_sum", kind="soak") == 2700.0
    assert value(samples, "certifier_run_duration_seconds_count", kind="soak") == 1.0
    assert value(samples, "certifier_run_duration_seconds_count", kind="bisect") == 0.0


def test_runs_finished_without_being_claimed_are_counted_but_not_timed(
    client: TestClient, world: World
) -> None:
    started_world(world)
    world.promote_heads()  # finishes its runs straight from pending: no started_at
    samples = scrape(client)
    assert value(samples, "certifier_runs_total", kind="gate", verdict="passed") == 1.0
    assert value(samples, "certifier_run_duration_seconds_count", kind="gate") == 0.0


def test_soak_seconds_left_counts_down_from_the_configured_duration(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    started_world(world)
    world.finish(world.reconcile().runs_created[-1])
    report = world.reconcile()
    (candidate,) = report.started_soak
    clock.advance(timedelta(hours=1))
    samples = scrape(client)
    left = CONFIGURED_SOAK - timedelta(hours=1)
    assert value(samples, "certifier_soak_seconds_left", candidate=str(candidate)) == (
        left.total_seconds())
    assert value(samples, "certifier_candidates", state="soaking") == 1.0
    clock.advance(CONFIGURED_SOAK)
    assert value(scrape(client), "certifier_soak_seconds_left", candidate=str(candidate)) == 0


def test_testbed_leased_is_one_while_a_run_holds_the_lease(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    started_world(world)
    world.testbed("soak1", role="soak")
    gate = world.reconcile().runs_created[-1]
    world.claim(gate)
    samples = scrape(client)
    assert value(samples, "certifier_testbed_leased", testbed="gate1") == 1.0
    assert value(samples, "certifier_testbed_leased", testbed="soak1") == 0.0
    world.finish(gate)
    assert value(scrape(client), "certifier_testbed_leased", testbed="gate1") == 0.0


def test_an_expired_lease_counts_as_free(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    started_world(world)
    world.claim(world.reconcile().runs_created[-1])  # leased for 30 minutes
    clock.advance(timedelta(minutes=31))
    assert value(scrape(client), "certifier_testbed_leased", testbed="gate1") == 0.0


def test_known_good_measurements_are_the_last_passing_value_per_series(
    client: TestClient, world: World, clock: FakeClock
) -> None:
    started_world(world)
    bandwidth = Measurement("bandwidth", "throughput_gbps", 9.4, "Gbit/s", Better.HIGHER,
                            {"src": "h1", "dst": "h2", "protocol": "tcp", "streams": "1"})
    world.finish(world.reconcile().runs_created[-1],
                 result("ping", rtt(0.05)) + result("bandwidth", bandwidth))
    world.finish(world.reconcile().runs_created[-1], result("ping", rtt(0.07)))
    clock.advance(SOAK.duration)
    assert world.reconcile().promoted

    measured = {(tuple(sorted(s.labels.items())), s.value) for s in scrape(client)
                if s.name == "certifier_known_good_measurement"}
    assert measured == {
        ((("metric", "rtt_avg_ms"), ("series", "dst=h2,src=h1"), ("suite", "ping"),
          ("unit", "ms")), 0.07),
        ((("metric", "throughput_gbps"), ("series", "dst=h2,protocol=tcp,src=h1,streams=1"),
          ("suite", "bandwidth"), ("unit", "Gbit/s")), 9.4),
    }


def test_measurements_of_a_later_candidate_do_not_leak_into_the_known_goods(
    client: TestClient, world: World
) -> None:
    started_world(world)
    world.promote_heads()  # rtt 0.05
    world.commit("nova", "n2")
    world.finish(world.reconcile().runs_created[-1], result("ping", rtt(0.06)))
    samples = scrape(client)
    assert value(samples, "certifier_known_good_measurement", suite="ping", metric="rtt_avg_ms",
                 unit="ms", series="destination=h2,source=h1") == 0.05


def test_build_info_names_the_version(client: TestClient) -> None:
    import certifier

    assert value(scrape(client), "certifier_build_info", version=certifier.__version__) == 1.0


def test_certifier_metrics_follow_the_prometheus_naming_rules(
    client: TestClient, world: World
) -> None:
    started_world(world)
    world.promote_heads()
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    ours = [f for f in families if not f.name.startswith(("process_", "python_"))]
    assert ours and all(f.name.startswith("certifier_") for f in ours)
    for family in ours:
        for sample in family.samples:
            assert not {"sha", "commit", "combination"} & set(sample.labels)
            if family.type == "counter":
                assert sample.name.endswith("_total")


def test_a_database_that_does_not_answer_still_serves_the_process_metrics(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}")
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(),
                     session_factory=make_session_factory(engine))
    with TestClient(app) as client:
        samples = scrape(client)
    engine.dispose()
    assert value(samples, "certifier_database_up") == 0.0
    assert "process_cpu_seconds_total" in names(samples)
    assert "certifier_candidates" not in names(samples)


def test_the_database_is_reported_up_when_it_answers(client: TestClient) -> None:
    assert value(scrape(client), "certifier_database_up") == 1.0


def test_nothing_is_registered_in_the_global_prometheus_registry(client: TestClient) -> None:
    scrape(client)
    assert b"certifier_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
