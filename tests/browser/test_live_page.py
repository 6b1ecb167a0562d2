"""Headless Chromium streams a fake webcam of real faces to the Live page over WebRTC."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS, WEBRTC_COMPONENT, launch_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIRST_FRAME_TIMEOUT_S = 25
COMPONENT = WEBRTC_COMPONENT


def _metric_value(page, label: str) -> str | None:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    if metric.count() == 0:
        return None
    return metric.first.locator('[data-testid="stMetricValue"]').inner_text()


def _wait_for_faces(page, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = _metric_value(page, "Faces in view")
        if value and re.fullmatch(r"\d+", value.strip()) and int(value) > 0:
            return int(value)
        page.wait_for_timeout(500)
    return 0


def _open_and_start(browser, url: str, session_name: str, log: Path):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(url, wait_until="networkidle")
    page.get_by_text("Responsible use", exact=False).first.wait_for(timeout=30000)
    page.get_by_label("Session name").first.fill(session_name)
    page.get_by_text("Everyone on camera has been told", exact=False).click()

    start = page.frame_locator(COMPONENT).get_by_role("button", name="Start", exact=True)
    start.wait_for(state="visible", timeout=30000)
    start.click()
    faces = _wait_for_faces(page, FIRST_FRAME_TIMEOUT_S)
    if faces == 0:  # known streamlit-webrtc 0.79 race: retry the click once
        start.wait_for(state="visible", timeout=10000)
        start.click()
        faces = _wait_for_faces(page, FIRST_FRAME_TIMEOUT_S)
    assert faces > 0, f"no faces reported; server log tail:\n{log.read_text()[-3000:]}"
    return page


def _launch(p, fake_webcam: Path):
    return launch_chromium(p, fake_webcam)


def test_live_page_streams_faces_and_stores_the_session(app_server: dict, fake_webcam: Path) -> None:
    from playwright.sync_api import sync_playwright

    from fer_core.store import Store

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = _launch(p, fake_webcam)
        try:
            page = _open_and_start(browser, app_server["url"], "Browser test <b>class</b>", app_server["log"])
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(state="visible", timeout=15000)
            page.wait_for_timeout(3000)  # let a few buckets complete
            page.screenshot(path=str(ARTIFACTS / "live_page.png"), full_page=True)
            # Every label's confidence is explained: the shipped model's are calibrated.
            page.get_by_text("Faces (anonymous track numbers)", exact=True).click()
            note = page.get_by_text("calibrated on FER2013 validation faces", exact=False)
            note.wait_for(state="attached", timeout=15000)

            stop = page.frame_locator(COMPONENT).get_by_role("button", name="Stop", exact=True)
            stop.click()
            page.get_by_text("Session saved", exact=False).wait_for(timeout=20000)

            # The analyst finds the session on the History page.
            page.get_by_role("link", name="History").first.click()
            page.get_by_text("Browser test <b>class</b>", exact=True).first.wait_for(timeout=30000)
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(state="visible", timeout=30000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "history_page.png"), full_page=True)
            page.get_by_role("link", name="Training").first.click()
            page.get_by_text("New run", exact=False).first.wait_for(timeout=30000)
            page.screenshot(path=str(ARTIFACTS / "training_page.png"), full_page=True)
        finally:
            browser.close()

    store = Store(f"sqlite:///{app_server['data_dir'] / 'classmood.db'}")
    sessions = store.list_sessions()
    session = sessions[sessions["name"] == "Browser test <b>class</b>"].iloc[0]
    assert session["name"] == "Browser test <b>class</b>"
    assert session["source"] == "live"
    assert not _is_nat(session["ended_at"])
    buckets = store.session_buckets(int(session["id"]))
    assert len(buckets) >= 2
    assert buckets["faces"].max() >= 1


def test_closing_the_tab_mid_stream_closes_and_flushes_the_session(app_server: dict, fake_webcam: Path) -> None:
    from playwright.sync_api import sync_playwright

    from fer_core.store import Store

    with sync_playwright() as p:
        browser = _launch(p, fake_webcam)
        try:
            page = _open_and_start(browser, app_server["url"], "Tab closed", app_server["log"])
            page.wait_for_timeout(3000)
        finally:
            browser.close()  # no Stop click: the peer connection just goes away

    store = Store(f"sqlite:///{app_server['data_dir'] / 'classmood.db'}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sessions = store.list_sessions()
        row = sessions[sessions["name"] == "Tab closed"]
        if len(row) and row.iloc[0]["ended_at"] is not None and not _is_nat(row.iloc[0]["ended_at"]):
            break
        time.sleep(1)
    else:
        pytest.fail(f"session not closed after the tab closed; log:\n{app_server['log'].read_text()[-3000:]}")
    assert len(store.session_buckets(int(row.iloc[0]["id"]))) >= 1


def _is_nat(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
