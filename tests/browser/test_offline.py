"""The app works without the internet: no page asks the browser for anything but the app's own server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
PAGES = ("History", "Training", "Live class")


def test_no_page_loads_an_asset_from_the_internet(app_server: dict) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: outside.append(request.url)
                    if urlsplit(request.url).scheme in ("http", "https", "ws", "wss")
                    and urlsplit(request.url).hostname not in LOCAL_HOSTS else None)
            page.goto(app_server["url"], wait_until="networkidle")
            page.get_by_text("Responsible use", exact=False).first.wait_for(timeout=30000)
            for name in PAGES:
                page.get_by_role("link", name=name).first.click()
                page.get_by_role("heading", name=name).first.wait_for(timeout=30000)
                page.wait_for_load_state("networkidle")
            # The tab's icon is the app's own file.
            icon = page.locator("link[rel*='icon']").first.get_attribute("href") or ""
        finally:
            browser.close()
    assert outside == [], f"requests that need the internet: {sorted(set(outside))}"
    assert urlsplit(icon).hostname in (None, *LOCAL_HOSTS), icon
