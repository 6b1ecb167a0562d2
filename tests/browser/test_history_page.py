"""History in a real browser: what only a browser shows (cut-off values, the report download)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.app.conftest import seed_session
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The metric values of History's detail view, cut off ("happy (70% …", "5 min…") in a narrow window.
CUT_OFF_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMetricValue"]'))
    .map(e => [e.innerText, e.scrollWidth > e.clientWidth + 1 || [...e.querySelectorAll('*')]
        .some(c => c.scrollWidth > c.clientWidth + 1)])"""


@pytest.fixture(scope="module")
def seeded(app_server: dict) -> dict:
    from fer_core.store import Store

    store = Store(f"sqlite:///{app_server['data_dir'] / 'classmood.db'}")
    now = datetime.now(UTC)
    seed_session(store, "Week 2", class_label="7B", started_at=now - timedelta(days=7), seconds=600, faces=4)
    latest = seed_session(store, "Week 3", class_label="7B", started_at=now - timedelta(hours=1), seconds=3900,
                          faces=12, attention_from=200)
    store.add_marker(latest, int(now.timestamp()) - 3600 + 60, "quiz starts")
    return {**app_server, "latest": latest}


def open_history(browser, url: str, width: int):
    page = browser.new_page(viewport={"width": width, "height": 1200}, accept_downloads=True)
    page.goto(url, wait_until="networkidle")
    page.get_by_role("link", name="History").first.click()
    page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=30000)
    page.wait_for_timeout(1000)
    return page


@pytest.mark.parametrize("width", [1000, 1400])
def test_no_metric_value_is_cut_off(seeded: dict, width: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            values = open_history(browser, seeded["url"], width).evaluate(CUT_OFF_JS)
        finally:
            browser.close()
    assert len(values) == 4, values
    assert [text for text, cut in values if cut] == [], values
    assert dict(zip(["duration", "faces", "mood", "attention"], [v for v, _ in values], strict=True))["mood"] \
        .startswith("sad")


def test_the_report_downloads_as_one_file_that_needs_nothing_else(seeded: dict) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = open_history(browser, seeded["url"], 1400)
            with page.expect_download(timeout=60000) as download:
                page.get_by_role("button", name="Report (HTML)").first.click()
            assert download.value.suggested_filename == f"classmood-session-{seeded['latest']}-report.html"
            report = download.value.path().read_text(encoding="utf-8")
            # Opened from disk with the network cut off, it shows everything.
            viewer = browser.new_page()
            outside: list[str] = []
            viewer.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:"))
                      else None)
            viewer.set_content(report)
            charts = viewer.locator("svg").count()
        finally:
            browser.close()
    assert charts == 4 and outside == []
    assert "quiz starts" in report and re.search(r"Week 3</h1>", report)
