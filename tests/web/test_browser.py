"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against uvicorn.

Every page loads without a console error and is photographed (laptop and phone) into
``test-artifacts/screenshots/``; the soak progress bar moves on a live update without a reload;
untrusted text stays text; the pages read without JavaScript; an operator action sent from the
page changes it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_actions import searching
from tests.factories import SOAK
from tests.web.live import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    LiveServer,
    live_server,
    require_browser,
)
from tests.web.scenes import OPERATOR_TOKEN, Busy, busy_pipeline

# The elements that stick out of the viewport, to say what makes a page scroll sideways.
WIDE = """(width) => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(-5)
  .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path) as live:
        yield live


@pytest.fixture
def busy(server: LiveServer) -> Busy:
    return busy_pipeline(server.scene)


class Console:
    """Everything a page reports as an error: console errors, uncaught exceptions, dialogs."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))


def _open(browser: Any, viewport: dict[str, int], **options: Any) -> tuple[Any, Any, Console]:
    context = browser.new_context(viewport=viewport, **options)
    page = context.new_page()
    return context, page, Console(page)


def _wait_until(page: Any, expression: str, arg: Any = None, timeout: float = 10.0) -> None:
    """Poll a JavaScript predicate from here: Playwright's wait_for_function evaluates its
    predicate with eval, which the dashboard's CSP (rightly) forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {expression}")
        page.wait_for_timeout(100)


def _settle(page: Any) -> None:
    """Wait until the page's scripts are done: charts drawn where there are charts."""
    page.wait_for_load_state("load")
    if page.locator("#chart-data").count():
        page.wait_for_selector(".charts.ready", timeout=15_000)
        charts = page.locator(".chart")
        for i in range(charts.count()):  # charts are drawn as they scroll into view
            charts.nth(i).scroll_into_view_if_needed()
        _wait_until(page, "() => document.querySelectorAll('.chart:not([data-drawn])').length == 0",
                    timeout=15)
        page.evaluate("() => window.scrollTo(0, 0)")


def _pages(busy: Busy) -> dict[str, str]:
    return {
        "overview": "/",
        "candidates": "/candidates",
        "candidate-soaking": f"/candidates/{busy.soaking}",
        "candidate-rejected": f"/candidates/{busy.rejected}",
        "candidate-queued": f"/candidates/{busy.queued}",
        "components": "/components",
        "component": "/components/neutron",
        "known-good": "/known-good",
        "known-good-diff": "/known-good/diff?from=1&to=2",
        "audit": "/audit",
        "deliveries": "/deliveries",
    }


def test_every_page_loads_without_console_errors_on_a_laptop_and_a_phone(
    browser: Any, server: LiveServer, busy: Busy
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for viewport, suffix in ((LAPTOP, ""), (PHONE, "-phone")):
        context, page, console = _open(browser, viewport)
        try:
            for name, path in _pages(busy).items():
                response = page.goto(server.url + path)
                assert response is not None and response.status == 200, (name, response)
                _settle(page)
                page.screenshot(path=str(SCREENSHOTS / f"{name}{suffix}.png"), full_page=True)
                assert console.errors == [], (name, console.errors)
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"] + 1, (name, width, page.evaluate(WIDE, width))
        finally:
            context.close()


def test_the_soak_progress_bar_advances_on_a_live_update(
    browser: Any, server: LiveServer, busy: Busy
) -> None:
    context, page, console = _open(browser, LAPTOP)
    try:
        page.goto(server.url + "/")
        bar = page.locator(f"#board-{busy.soaking} progress.soak-bar")
        runs = page.locator(f"#board-{busy.soaking} .soak-runs")
        before = float(bar.get_attribute("value") or 0)
        assert "2 of ≥1 passing runs" in runs.inner_text()
        page.evaluate("window.__notReloaded = true")
        page.wait_for_selector("#live-status.on", timeout=10_000)

        server.scene.finish(busy.soak_run)  # the soak run in progress passes
        server.clock.advance(SOAK.interval)
        server.scene.reconcile()  # and the next one is due

        _wait_until(page, "([sel, old]) => parseFloat(document.querySelector(sel).value) > old",
                    [f"#board-{busy.soaking} progress.soak-bar", before])
        assert "3 of ≥1 passing runs" in runs.inner_text()
        assert page.evaluate("window.__notReloaded") is True
        assert console.errors == []
    finally:
        context.close()


def test_a_script_in_a_commit_title_is_shown_as_text(
    browser: Any, server: LiveServer, busy: Busy
) -> None:
    context, page, console = _open(browser, LAPTOP)
    try:
        for path in (f"/candidates/{busy.soaking}", f"/candidates/{busy.rejected}",
                     "/components/neutron"):
            page.goto(server.url + path)
            _settle(page)
            assert page.get_by_text('<script>alert("owned")</script>', exact=False).count() >= 1
            assert page.evaluate("document.querySelectorAll('script:not([src])"
                                 ":not([type=\"application/json\"])').length") == 0
        assert console.errors == []  # an executed alert() would have opened a dialog
    finally:
        context.close()


def test_the_pages_read_without_javascript(browser: Any, server: LiveServer, busy: Busy) -> None:
    context, page, _ = _open(browser, LAPTOP, java_script_enabled=False)
    try:
        page.goto(server.url + f"/candidates/{busy.rejected}")
        numbers = page.locator("details.numbers table.series")
        assert numbers.is_visible()
        assert re.search(r"bandwidth throughput_gbps h1→h2", numbers.inner_text())
        assert not page.locator(".charts").is_visible()
        page.screenshot(path=str(SCREENSHOTS / "candidate-rejected-nojs.png"), full_page=True)
        page.goto(server.url + "/")
        assert page.locator(f"#board-{busy.soaking} progress.soak-bar").is_visible()
        assert page.locator("#manifest-url").input_value().endswith("/api/v1/manifest")
    finally:
        context.close()


def test_a_saved_token_enables_exactly_the_actions_the_server_offers(
    browser: Any, server: LiveServer, busy: Busy
) -> None:
    context, page, console = _open(browser, LAPTOP)
    try:
        page.goto(server.url + f"/candidates/{busy.soaking}")
        buttons = page.locator("form.action button[type=submit]")
        assert buttons.count() >= 2  # cancel and promote for a soaking candidate
        assert all(buttons.nth(i).is_disabled() for i in range(buttons.count()))
        page.fill("#token", "an-operator-token")
        page.click(".token-form button[type=submit]")
        assert page.evaluate("localStorage.getItem('certifier.token')") == "an-operator-token"
        assert page.locator("#token").input_value() == ""  # not left on the screen
        for i in range(buttons.count()):
            form = buttons.nth(i).locator("xpath=ancestor::form")
            offered = form.get_attribute("data-unavailable") is None
            assert buttons.nth(i).is_enabled() == offered
        page.click("[data-forget-token]")
        assert page.evaluate("localStorage.getItem('certifier.token')") is None
        assert console.errors == []
    finally:
        context.close()


def test_a_finished_soak_reaches_known_good_on_the_open_page(
    browser: Any, server: LiveServer, busy: Busy
) -> None:
    context, page, console = _open(browser, LAPTOP)
    try:
        page.goto(server.url + "/")
        assert page.locator(".kg-version").inner_text() == "#2"
        page.wait_for_selector("#live-status.on", timeout=10_000)
        server.scene.finish(busy.soak_run)
        server.clock.advance(SOAK.duration)
        report = server.scene.reconcile()
        assert report.promoted == [busy.soaking]
        _wait_until(page, "() => document.querySelector('.kg-version').textContent.trim() == '#3'")
        assert page.locator(f"#board-{busy.soaking}").count() == 0
        assert console.errors == []
    finally:
        context.close()


def test_the_staleness_warning_appears_when_the_known_good_ages(
    browser: Any, server: LiveServer, busy: Busy
) -> None:
    context, page, _ = _open(browser, LAPTOP)
    try:
        page.goto(server.url + "/")
        assert page.locator(".banner.warn").count() == 0
        server.clock.advance(timedelta(days=4))
        page.wait_for_selector(".banner.warn", timeout=10_000)
        assert "stale" in page.locator(".banner.warn").inner_text()
    finally:
        context.close()


def _has_waive_endpoint(server: LiveServer) -> bool:
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    return any(path.startswith("/api/v1/candidates/{") and path.endswith("/waive")
               and "post" in ops for path, ops in spec.get("paths", {}).items())


@pytest.fixture
def operator_token(server: LiveServer) -> str:
    """The live server's operate token (``CERTIFIER_API_TOKENS`` in its settings)."""
    assert _has_waive_endpoint(server)
    return OPERATOR_TOKEN


def test_a_waive_by_an_authorised_token_changes_the_page(
    browser: Any, server: LiveServer, busy: Busy, operator_token: str
) -> None:
    context, page, console = _open(browser, LAPTOP)
    try:
        page.goto(server.url + f"/candidates/{busy.rejected}")
        page.fill("#token", operator_token)
        page.click(".token-form button[type=submit]")
        page.select_option("#waive-subject", index=0)
        page.fill("#waive-reason", "known iperf3 noise on this testbed")
        page.evaluate("window.__notReloaded = true")
        page.click("form[data-action=waive] button[type=submit]")
        page.wait_for_selector(".action-result.ok", timeout=10_000)
        page.wait_for_selector("ul.waivers li", timeout=10_000)
        assert "known iperf3 noise" in page.locator("ul.waivers").inner_text()
        assert page.evaluate("window.__notReloaded") is True
        assert console.errors == []
    finally:
        context.close()


def test_stopping_culprit_finding_from_the_page_ends_the_search_and_takes_the_button_away(
    browser: Any, server: LiveServer, operator_token: str
) -> None:
    _, cid, _ = searching(server.scene.factory, server.clock)
    context, page, console = _open(browser, LAPTOP)
    try:
        page.goto(server.url + f"/candidates/{cid}")
        page.fill("#token", operator_token)
        page.click(".token-form button[type=submit]")
        page.fill("#stop-culprit-reason", "gate1 stays busy all week")
        page.click("form[data-action=stop-culprit-finding] button[type=submit]")
        page.wait_for_selector(".action-result.ok", timeout=10_000)
        page.wait_for_selector("form[data-action=stop-culprit-finding]", state="detached",
                               timeout=10_000)
        said = page.locator("#culprit-finding ~ p.culprit-note").first.inner_text()
        assert said.startswith("stopped by token:") and "gate1 stays busy all week" in said
        assert console.errors == []
    finally:
        context.close()
