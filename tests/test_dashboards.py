"""The Grafana dashboards and provisioning under ``dashboards/`` agree with the service.

The exported names come from scraping ``/metrics`` of a real app on the test database, so a
dashboard that queries a misspelt or removed metric fails here, not on an operator's screen.
Families the service always declares (HELP/TYPE) count as exported even while they have no
sample, such as the known-good gauges before the first promotion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.app import create_app
from certifier.domain.clock import FakeClock
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings
from workers.suites import storage

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
DASHBOARD_FILES = sorted((DASHBOARDS / "grafana").glob("*.json"))
DATASOURCE_UID = "certifier-prometheus"
EXPECTED_UIDS = {"certifier-pipeline", "certifier-testbed", "certifier-service"}
MAX_SCHEMA_VERSION = 42

# Series Prometheus itself records for every scrape target, not exported by the service.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                     "scrape_samples_post_metric_relabeling", "scrape_series_added"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("_sum", "_count"), "info": ("_info",)}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__rate_interval)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _KEYWORDS:
            found.add(match.group())
    return found


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]


def all_expressions() -> list[tuple[str, str]]:
    return [(path.name, expr) for path in DASHBOARD_FILES for expr in expressions(load(path))]


@pytest.fixture
def exported_names(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> set[str]:
    """Every sample name ``/metrics`` exports, scraped from an app on the test database."""
    app = create_app(Settings(data_dir=tmp_path), dispatcher=RecordingDispatcher(),
                     clock=FakeClock(), session_factory=session_factory)
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def test_the_metric_name_extractor_skips_functions_labels_and_keywords() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, kind) (increase(a_bucket{job="x"}[6h]))) '
            '/ on (kind) group_left b_total offset 5m + time() - c{d=~"e|f"} * 1e3')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert metric_names("rate(x[$__rate_interval])") == {"x"}


def test_the_three_dashboards_exist_with_fixed_uids() -> None:
    uids = [load(path)["uid"] for path in DASHBOARD_FILES]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    for path in DASHBOARD_FILES:
        assert path.stem == load(path)["uid"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_a_dashboard_is_a_current_grafana_model(path: Path) -> None:
    dashboard = load(path)
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] <= MAX_SCHEMA_VERSION
    assert dashboard["title"].startswith("Certifier")
    assert "id" not in dashboard or dashboard["id"] is None  # ids belong to one Grafana instance
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']} has no query"
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ref == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]


def test_every_dashboard_query_names_only_exported_metrics(exported_names: set[str]) -> None:
    known = exported_names | PROMETHEUS_SERIES
    unknown = {(name, expr) for name, expr in all_expressions()
               for metric in metric_names(expr) if metric not in known}
    assert not unknown, f"queries name metrics /metrics does not export: {sorted(unknown)}"
    assert {"certifier_candidates", "certifier_known_good_measurement",
            "process_cpu_seconds_total"} <= {m for _, e in all_expressions()
                                             for m in metric_names(e)}


def test_measurement_panels_select_metrics_the_suites_produce() -> None:
    suites = "".join(p.read_text(encoding="utf-8")
                     for p in (ROOT / "workers" / "suites").glob("*.py"))
    storage_metrics = set(storage.metric_names())  # built from the job table, not literals
    wanted = {m for _, expr in all_expressions()
              for m in re.findall(r'\bmetric="([^"]+)"', expr)}
    assert wanted, "the testbed dashboard selects measurements by metric"
    assert {m for m in wanted if f'"{m}"' not in suites and m not in storage_metrics} == set()


def test_dashboards_select_the_scrape_job_prometheus_defines() -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    selected = {j for _, expr in all_expressions() for j in re.findall(r'\bjob="([^"]+)"', expr)}
    assert selected and selected <= jobs


def test_prometheus_scrapes_the_api_metrics_endpoint() -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "certifier"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert [t for c in job["static_configs"] for t in c["targets"]] == ["api:8000"]


def test_the_datasource_provisioning_defines_the_uid_the_dashboards_use() -> None:
    config = yaml.safe_load(
        (DASHBOARDS / "provisioning" / "datasources" / "prometheus.yaml").read_text("utf-8"))
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", DATASOURCE_UID)
    assert source["url"] == "http://prometheus:9090"  # the compose service


def _compose_mounts(service: str) -> dict[str, Path]:
    """Container path → host path of a compose service's bind mounts."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = {}
    for volume in compose["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def test_the_dashboard_provider_loads_the_folder_compose_mounts_the_json_into() -> None:
    config = yaml.safe_load(
        (DASHBOARDS / "provisioning" / "dashboards" / "certifier.yaml").read_text("utf-8"))
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    mounts = _compose_mounts("grafana")
    assert mounts[provider["options"]["path"]] == (DASHBOARDS / "grafana").resolve()
    assert mounts["/etc/grafana/provisioning/datasources"] == (
        DASHBOARDS / "provisioning" / "datasources").resolve()
    assert mounts["/etc/grafana/provisioning/dashboards"] == (
        DASHBOARDS / "provisioning" / "dashboards").resolve()


def test_prometheus_in_compose_reads_this_scrape_config() -> None:
    assert _compose_mounts("prometheus")["/etc/prometheus/prometheus.yml"] == (
        DASHBOARDS / "prometheus.yml").resolve()
