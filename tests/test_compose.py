"""``docker-compose.yml`` and the ``Dockerfile`` agree with the code, checked without Docker.

Docker cannot run on the machines that run these tests, so the files are read as data and held
against what the code really accepts: the Settings fields, the CLI's commands and options, the
files in the repository.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from certifier import cli
from certifier.settings import Settings, load_config_file

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DESIGN_SERVICES = {"postgres", "redis", "api", "worker", "beat", "prometheus", "grafana"}
CERTIFIER_SERVICES = ("api", "worker", "beat")
TESTBED_TOOLS = {"iproute2", "iperf3", "fio", "iputils-ping", "git"}


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(service: str) -> list[tuple[str, str]]:
    """(source, container path) of each volume entry, short syntax."""
    return [tuple(entry.split(":")[:2]) for entry in SERVICES[service].get("volumes", [])]


def depends_on(service: str) -> dict[str, dict[str, Any]]:
    deps = SERVICES[service].get("depends_on", {})
    return {name: {} for name in deps} if isinstance(deps, list) else dict(deps)


def settings_env_names() -> set[str]:
    """The CERTIFIER_* variables Settings reads: prefix + field name, or the field's alias."""
    names = set()
    for name, field in Settings.model_fields.items():
        if name == "config":  # the parsed YAML: never read from the environment
            continue
        names.add(field.alias or f"CERTIFIER_{name.upper()}")
    return names


def test_every_service_the_design_names_exists() -> None:
    assert set(SERVICES) >= DESIGN_SERVICES


def test_every_service_has_a_healthcheck_or_waits_for_healthy_ones() -> None:
    for name, service in SERVICES.items():
        deps = depends_on(name)
        assert "healthcheck" in service or deps, f"{name}: no healthcheck and no dependencies"
        for dep, spec in deps.items():
            assert spec.get("condition") == "service_healthy", f"{name} → {dep}"
            assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}, which has none"


def test_the_certifier_services_wait_for_the_database_and_the_broker() -> None:
    assert {"postgres", "redis"} <= set(depends_on("api"))
    assert {"postgres", "redis", "api"} <= set(depends_on("worker"))
    assert "redis" in depends_on("beat")


def test_certifier_variables_are_ones_settings_reads() -> None:
    known = settings_env_names()
    for name in SERVICES:
        ours = {k for k in environment(name) if k.startswith("CERTIFIER_")}
        assert ours <= known, f"{name}: Settings does not read {sorted(ours - known)}"
    assert {"CERTIFIER_DATABASE_URL", "CERTIFIER_BROKER_URL", "CERTIFIER_DATA_DIR",
            "CERTIFIER_CONFIG"} <= set(environment("api"))


@pytest.mark.parametrize("service", CERTIFIER_SERVICES)
def test_settings_built_from_the_service_environment_see_every_value(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(service)
    for key in [k for k in os.environ if k.startswith("CERTIFIER_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url == env["CERTIFIER_DATABASE_URL"]
    assert settings.broker_url == env["CERTIFIER_BROKER_URL"]
    assert settings.data_dir == Path(env["CERTIFIER_DATA_DIR"])
    assert settings.config_file == Path(env["CERTIFIER_CONFIG"])
    assert not settings.embedded_broker


def test_the_database_url_names_the_postgres_service_and_its_credentials() -> None:
    url = urlsplit(environment("api")["CERTIFIER_DATABASE_URL"])
    pg = environment("postgres")
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])


def test_the_broker_url_names_the_redis_service() -> None:
    url = urlsplit(environment("api")["CERTIFIER_BROKER_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)


def test_api_worker_and_beat_share_one_data_volume_and_one_config() -> None:
    for service in CERTIFIER_SERVICES:
        env = environment(service)
        assert env == environment("api"), f"{service} runs with other settings than the api"
        targets = {target: source for source, target in mounts(service)}
        assert targets[env["CERTIFIER_DATA_DIR"]] == "certifier-data"
        assert targets[env["CERTIFIER_CONFIG"]] == "./examples/certifier.yaml"


def test_the_mounted_config_is_a_valid_certifier_config() -> None:
    config = load_config_file(ROOT / "examples" / "certifier.yaml")
    assert config.components and config.testbeds


def test_mounted_host_paths_exist_in_the_repository() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name in SERVICES:
        for source, _target in mounts(name):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in declared, f"{name} uses the undeclared volume {source}"


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image!r} has no tag"
        assert not image.endswith(":latest"), name


def _cli_accepts(argv: list[str]) -> None:
    """Parse ``argv`` with the real ``certifier`` command, without running it."""
    assert argv[0] == "certifier"
    group = typer.main.get_command(cli.app)
    assert hasattr(group, "commands")
    command = group.commands[argv[1]]
    command.make_context(argv[1], list(argv[2:]))  # raises on an unknown command or option


def test_the_cli_check_rejects_what_the_cli_would_reject() -> None:
    with pytest.raises(Exception, match="No such option: --bind"):  # typer's vendored click
        _cli_accepts(["certifier", "serve", "--bind", "0.0.0.0"])  # noqa: S104 - not bound
    with pytest.raises(KeyError):
        _cli_accepts(["certifier", "celery-worker"])


@pytest.mark.parametrize("service", CERTIFIER_SERVICES)
def test_the_commands_are_ones_the_certifier_cli_accepts(service: str) -> None:
    command = SERVICES[service]["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    assert argv[1] == {"api": "serve", "worker": "worker", "beat": "beat"}[service]
    _cli_accepts(argv)


def test_the_api_listens_on_all_interfaces_on_the_port_that_is_probed_and_scraped() -> None:
    argv = SERVICES["api"]["command"]
    port = argv[argv.index("--port") + 1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - in its container
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in probe
    assert any(p.endswith(f":{port}") for p in SERVICES["api"]["ports"])
    scrape = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text("utf-8"))
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert f"api:{port}" in targets


def test_the_api_serves_with_more_than_one_worker_process() -> None:
    argv = SERVICES["api"]["command"]
    assert int(argv[argv.index("--workers") + 1]) >= 2
    _cli_accepts(argv)


def test_the_cli_check_rejects_serve_with_no_worker_process() -> None:
    with pytest.raises(Exception, match="greater than or equal to 1"):
        _cli_accepts(["certifier", "serve", "--workers", "0"])


def test_the_worker_may_create_network_namespaces() -> None:
    worker = SERVICES["worker"]
    caps = set(worker.get("cap_add", []))
    assert worker.get("privileged") is True or {"NET_ADMIN", "SYS_ADMIN"} <= caps
    assert str(worker.get("user", "root")) in {"root", "0"}


def test_the_api_and_beat_run_unprivileged() -> None:
    for service in ("api", "beat"):
        assert not SERVICES[service].get("privileged")
        assert "user" not in SERVICES[service]  # the image's default user, `certifier`
    assert re.search(r"^USER certifier$", (ROOT / "Dockerfile").read_text("utf-8"), re.M)


def test_the_dockerfile_builds_on_slim_bookworm_with_the_testbed_tools() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.M)
    install = re.search(r"apt-get install([^&]*)", dockerfile)
    assert install is not None
    assert set(install.group(1).replace("\\", " ").split()) >= TESTBED_TOOLS


def test_everything_the_dockerfile_copies_is_in_the_repository() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        *sources, _dest = line.split()
        for source in sources:
            if "*" in source:  # optional on purpose: BuildKit skips a glob that matches nothing
                continue
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
