"""Headless Chromium drives the Training page end to end: launch a real run, stop it, resume it, compare the
finished run with the shipped model on the same split, promote it, and restore the shipped model in one click."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import write_folder_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN = "browser-run"


def _wait_text(page, pattern: str, timeout_s: float) -> None:
    # Visible text only: the runs table's cells exist twice, once hidden (the grid's accessible copy).
    page.get_by_text(re.compile(pattern)).filter(visible=True).first.wait_for(timeout=timeout_s * 1000)


def _run_status(data_dir: Path) -> str:
    from training import runs

    info = runs.read_run(data_dir / "runs" / RUN)
    return "none" if info is None else info.status


def _wait_status(data_dir: Path, wanted: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := _run_status(data_dir)) not in wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"run is {status}, not {wanted}, after {timeout_s:.0f} s")
        time.sleep(2)
    return status


def test_launch_stop_resume_compare_promote_and_restore(app_server: dict, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from fer_core.registry import POINTER_FILE

    data_dir = app_server["data_dir"]
    dataset = write_folder_dataset(tmp_path / "fer-mini", {"train": 24, "val": 6})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.goto(app_server["url"], wait_until="networkidle")
            page.get_by_role("link", name="Training", exact=True).click()  # the app's navigation, once it is built
            page.get_by_role("button", name="Launch run").wait_for(timeout=60000)
            page.get_by_label("Run name (optional)").fill(RUN)
            page.get_by_label("Data set folder on the server").fill(str(dataset))
            page.get_by_role("spinbutton", name="Epochs").fill("4")
            page.get_by_role("spinbutton", name="Batch size").fill("16")
            page.get_by_text("From scratch", exact=True).click()
            page.get_by_role("button", name="Launch run").click()
            _wait_text(page, f"Run {RUN} launched", 60)

            # The table and the bar say what the run is doing, in the page's words.
            _wait_text(page, r"Starting the training process|Building the model|Loading the data set|Epoch \d", 120)
            _wait_text(page, r"Epoch [12]/4, step", 900)  # progress within an epoch
            page.screenshot(path=str(ARTIFACTS / "training_running.png"), full_page=True)
            page.get_by_role("button", name="Stop run").click()
            _wait_status(data_dir, {"stopped"}, 300)
            _wait_text(page, "Stopped on request", 60)
            assert "--resume" not in page.inner_text("body")

            page.get_by_role("button", name="Resume run").click()
            _wait_text(page, r"is starting again\. Resume (continues after epoch|starts its training again)", 60)
            assert _wait_status(data_dir, {"finished", "failed"}, 1800) == "finished"

            page.reload(wait_until="networkidle")
            page.get_by_text("Evaluation on the validation split").wait_for(timeout=60000)
            # The shipped model's own figures are on FER2013: measure it on this run's split to compare.
            page.get_by_role("button", name="Measure the active model on this split").click()
            table = page.locator('[data-testid="stTable"]').first
            table.get_by_text(re.compile(r"\d+\.\d%")).nth(1).wait_for(timeout=900000)
            assert "Active: fer-inceptionv3" in table.inner_text()
            page.get_by_role("button", name="Promote", exact=True).scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "training_compare.png"), full_page=True)
            page.get_by_text(f"Yes, make run {RUN} the active model", exact=False).click()
            page.get_by_role("button", name="Promote", exact=True).click()
            _wait_text(page, f"Run {RUN} is now the active model", 60)
            assert (data_dir / POINTER_FILE).read_text().strip().endswith(f"/models/{RUN}")
            page.get_by_text("This run's model is the active model", exact=False).wait_for(timeout=30000)

            page.get_by_role("button", name="Make the shipped model active").click()
            _wait_text(page, "The shipped model is the active model again", 60)
            assert not (data_dir / POINTER_FILE).exists()
            assert (data_dir / "models" / RUN / "model_int8.tflite").is_file()  # the promoted model is kept
            page.get_by_role("button", name=f"Make model {RUN} active").wait_for(timeout=30000)
            page.screenshot(path=str(ARTIFACTS / "training_restored.png"), full_page=True)
        finally:
            browser.close()
