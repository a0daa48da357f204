"""End to end: real API, worker and beat processes, a real broker, a real database, a netns testbed.

The story of the product in one test, run once on the embedded defaults (SQLite, the server-free
broker) and once on the production pair (PostgreSQL, Redis): upstream heads are reported over the
REST API, a candidate gates and soaks on real ping, iperf3 and fio, and is promoted to known-good
#1, which the manifest then lists; a commit that halves bandwidth with ``tc`` is reported next and
rejected with an excuse naming the bandwidth metric, while the manifest stays at #1. The
dashboard of that running service shows both in Debian's Chromium. Afterwards nothing the runs
built is left on the host.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from certifier import processes
from certifier.demo import world as demo_world
from certifier.settings import Settings, load_settings
from tests.web.live import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, require_browser
from workers.testbed.tags import run_tag_prefix

from .conftest import Backend

pytestmark = [pytest.mark.e2e]

TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(what: str, probe: Callable[[], Any], timeout: float, procs: list[Any]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise AssertionError(f"a service process died while waiting for {what}: {dead}")
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def service(tmp_path: Path, backend: Backend) -> Iterator[tuple[httpx.Client, demo_world.DemoWorld,
                                                                Settings]]:
    """The demo world's upstreams, plus API, worker and beat processes serving them."""
    world = demo_world.build(tmp_path / "world", driver="netns", subnet="198.18.250.0/24")
    settings = load_settings(config_file=world.config_file, data_dir=tmp_path / "data",
                             database_url=backend.database_url, broker_url=backend.broker_url)
    settings.data_dir.mkdir(parents=True)
    logs = settings.data_dir / "logs"
    logs.mkdir()
    port = _free_port()
    procs = [processes.spawn(["serve", "--port", str(port)], settings, logs / "api.log")]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        # The API migrates the database; the worker and beat start once it answers.
        _wait_for("the API", lambda: _ready(client), 60, procs)
        procs += [processes.spawn(["worker"], settings, logs / "worker.log"),
                  processes.spawn(["beat"], settings, logs / "beat.log")]
        yield client, world, settings
    finally:
        client.close()
        processes.stop(procs)
        for name in ("api", "worker", "beat"):
            text = (logs / f"{name}.log").read_text(errors="replace")
            print(f"----- {name}.log (tail) -----\n{text[-4000:]}")


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _report_heads(client: httpx.Client, world: demo_world.DemoWorld) -> dict[str, str]:
    heads = {}
    for name, repo in world.repos.items():
        sha, title = demo_world.head(repo)
        answer = client.post(f"/api/v1/components/{name}/commits",
                             json={"sha": sha, "title": title, "author": "upstream"})
        assert answer.status_code in (200, 201), answer.text
        heads[name] = sha
    return heads


def _candidate_with(client: httpx.Client, sha: str) -> dict[str, Any] | None:
    for item in client.get("/api/v1/candidates").json()["items"]:
        detail = client.get(f"/api/v1/candidates/{item['id']}").json()
        if any(c["sha"] == sha for c in detail["components"]):
            return dict(detail)
    return None


def _our_namespaces(settings: Settings) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True, timeout=10).stdout
    prefix = f"cf-{run_tag_prefix(settings)}"
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


def test_a_commit_becomes_known_good_and_a_bandwidth_regression_is_rejected(
    service: tuple[httpx.Client, demo_world.DemoWorld, Settings], backend: Backend
) -> None:
    client, world, settings = service
    procs: list[Any] = []

    # 1. Report the upstream heads: the first candidate forms, gates, soaks and is promoted.
    heads = _report_heads(client, world)
    manifest = _wait_for("known-good #1", lambda: _manifest(client), TIMEOUT_S, procs)
    assert manifest["version"] == 1
    assert {c["name"]: c["sha"] for c in manifest["components"]} == heads
    first = client.get(f"/api/v1/candidates/{manifest['candidate']}").json()
    assert first["state"] == "promoted"
    kinds = {(r["kind"], r["verdict"]) for r in first["runs"]}
    assert ("gate", "passed") in kinds and ("soak", "passed") in kinds
    gate = next(r for r in first["runs"] if r["kind"] == "gate")
    run = client.get(f"/api/v1/runs/{gate['id']}").json()
    measured = {(m["suite"], m["metric"]) for m in run["measurements"]}
    assert {("ping", "loss_pct"), ("bandwidth", "throughput_gbps"),
            ("storage", "seq_write_mbps")} <= measured
    assert {"ping", "iperf3", "fio"} <= set(run["tool_versions"])

    # 2. Upstream pushes a commit that halves the egress rate: it is rejected, naming bandwidth.
    bad = demo_world.commit(
        world.repos["netpolicy"],
        {"netpolicy.conf": f"egress_rate_mbit = {demo_world.BAD_RATE_MBIT}\n"},
        "Lower the default egress rate")
    _report_heads(client, world)

    def rejected() -> dict[str, Any] | None:
        cand = _candidate_with(client, bad)
        return cand if cand and cand["state"] in ("rejected", "promoted") else None

    cand = _wait_for("the bandwidth commit to be judged", rejected, TIMEOUT_S, procs)
    assert cand["state"] == "rejected", cand
    assert cand["changed"] == ["netpolicy"]
    messages = " ".join(e["message"] for e in cand["excuses"])
    assert "bandwidth" in messages and "throughput_gbps" in messages, messages
    assert client.get("/api/v1/manifest").json()["version"] == 1

    # 3. The same commit reported again is a duplicate: no second candidate.
    again = client.post("/api/v1/components/netpolicy/commits", json={"sha": bad})
    assert again.status_code == 200 and again.json()["created"] is False
    with_bad = [c for c in client.get("/api/v1/candidates").json()["items"]
                if c["id"] == cand["id"] or c["created_at"] > cand["created_at"]]
    assert [c["id"] for c in with_bad] == [cand["id"]]

    # 4. The dashboard of the running service shows it, in a real browser, without errors.
    _dashboard_shows(client, backend, manifest, cand)

    # 5. Nothing the runs built is left behind.
    assert _our_namespaces(settings) == []
    leftovers = list((settings.data_dir / "testbed-records").glob("*"))
    assert leftovers == [], leftovers


def _dashboard_shows(client: httpx.Client, backend: Backend, manifest: dict[str, Any],
                     rejected: dict[str, Any]) -> None:
    """Overview and the rejected candidate's page in Debian's Chromium: the known-good, the
    excuse naming the bandwidth metric, no console errors; screenshots kept as artefacts."""
    sync_api = require_browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = str(client.base_url).rstrip("/")
    pages = {"overview": ("/", f"#{manifest['version']}"),
             "rejected": (f"/candidates/{rejected['id']}", "throughput_gbps")}
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1366, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            for name, (path, expected) in pages.items():
                response = page.goto(base + path)
                assert response is not None and response.status == 200, (name, response)
                page.wait_for_load_state("networkidle")
                assert expected in page.inner_text("main"), (name, expected)
                page.screenshot(path=str(SCREENSHOTS / f"demo-{backend.name}-{name}.png"),
                                full_page=True)
            assert errors == [], errors
        finally:
            chromium.close()


def _manifest(client: httpx.Client) -> dict[str, Any] | None:
    answer = client.get("/api/v1/manifest")
    return dict(answer.json()) if answer.status_code == 200 else None
