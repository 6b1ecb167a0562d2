"""An online class in real browsers: an instructor opens a class; three students join by the link, each from its
own browser context with a fake webcam of real faces, one of them through a second app server process on the same
database; the instructor sees one class; a student leaves; the class ends for everyone and is on the History page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fer_core.class_store import ClassStore
from fer_core.store import Store
from tests.browser.conftest import ARTIFACTS, WEBRTC_COMPONENT, _require_browser, launch_chromium, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STUDENTS = 3
FIRST_FRAME_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def class_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two app server processes on one database, as behind a load balancer: the instructor is on the first."""
    _require_browser()
    env = {"CLASSMOOD_CLASS_MIN_STUDENTS": str(STUDENTS), "CLASSMOOD_CLASS_MEMBER_TIMEOUT_S": "4"}
    data_dir = tmp_path_factory.mktemp("classapp")
    with running_app(data_dir, env) as first, running_app(data_dir, env, "server-2.log") as second:
        yield {**first, "second_url": second["url"], "second_log": second["log"]}


def metric(page, label: str) -> str | None:
    found = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    if found.count() == 0:
        return None
    return found.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def wait_for_metric(page, label: str, accept, timeout_s: float, what: str, log: Path) -> str:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = metric(page, label)
        if value is not None and accept(value):
            return value
        page.wait_for_timeout(500)
    pytest.fail(f"{what}: {label!r} was {value!r}; server log tail:\n{log.read_text()[-3000:]}")


def open_class(page, url: str) -> str:
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="Online class").click()
    page.get_by_label("Class name").fill("Algebra <i>week 3</i>")
    page.get_by_text("My students have been told", exact=False).click()
    page.get_by_role("button", name="Open class").click()
    page.get_by_text("Join link", exact=False).first.wait_for(timeout=30000)
    link = page.locator('[data-testid="stCode"]').first.inner_text().strip()
    assert re.search(r"/join\?code=[2-9A-Z]{10}$", link), link
    return link


def join(context, link: str, log: Path):
    page = context.new_page()
    page.goto(link, wait_until="networkidle")
    page.get_by_text("What happens when you join", exact=False).wait_for(timeout=30000)
    page.get_by_text("I have read this and agree", exact=False).click()
    start = page.frame_locator(WEBRTC_COMPONENT).get_by_role("button", name="Start", exact=True)
    start.wait_for(state="visible", timeout=30000)
    for _attempt in range(2):  # streamlit-webrtc 0.79's known start race: retry the click once
        start.click()
        try:
            page.get_by_text("You are in class", exact=False).wait_for(timeout=FIRST_FRAME_TIMEOUT_S * 1000)
            return page
        except Exception:
            start.wait_for(state="visible", timeout=10000)
    pytest.fail(f"a student never got into the class; server log tail:\n{log.read_text()[-3000:]}")


def wait_for_preview(page, timeout_s: float = 20) -> int:
    """The width of the student's local preview video once it plays (0 if it never does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for frame in page.frames:
            if frame.query_selector("#preview") is not None:
                width = frame.evaluate("document.getElementById('preview').videoWidth")
                if width:
                    return int(width)
        page.wait_for_timeout(500)
    return 0


def test_three_students_join_one_class_and_the_instructor_sees_only_the_class(
    class_app: dict, fake_webcam: Path
) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = class_app["log"]
    with sync_playwright() as p:
        students_browser = launch_chromium(p, fake_webcam)
        instructor_browser = launch_chromium(p)
        try:
            instructor = instructor_browser.new_page(viewport={"width": 1500, "height": 1300})
            link = open_class(instructor, class_app["url"])
            contexts = [students_browser.new_context(viewport={"width": 1000, "height": 900})
                        for _ in range(STUDENTS)]
            # The last student's browser is sent to the other server process by the load balancer.
            links = [link] * (STUDENTS - 1) + [link.replace(class_app["url"], class_app["second_url"])]
            pages = [join(context, student_link, log) for context, student_link in zip(contexts, links, strict=True)]
            assert wait_for_preview(pages[0]) > 0  # the student sees their own camera, drawn locally
            pages[0].screenshot(path=str(ARTIFACTS / "join_page.png"), full_page=True)

            # A second tab of the same browser is the same student: it is refused, not counted twice.
            second_tab = contexts[0].new_page()
            second_tab.goto(link, wait_until="networkidle")
            second_tab.get_by_text("I have read this and agree", exact=False).click()
            start = second_tab.frame_locator(WEBRTC_COMPONENT).get_by_role("button", name="Start", exact=True)
            start.wait_for(state="visible", timeout=30000)
            start.click()
            second_tab.get_by_text("already in this class in another tab", exact=False).wait_for(timeout=30000)
            second_tab.close()

            wait_for_metric(instructor, "Students connected", lambda v: v == str(STUDENTS), 40,
                            "all students connected", log)
            wait_for_metric(instructor, "Faces in view", lambda v: v.isdigit() and int(v) >= STUDENTS, 40,
                            "every student's face in view", log)
            mood = wait_for_metric(instructor, "Dominant mood", lambda v: v not in ("withheld", "—"), 40,
                                   "expressions shown above the floor", log)
            assert re.fullmatch(r"[a-z]+ \(\d+%\)", mood)
            instructor.locator('[data-testid="stVegaLiteChart"]').first.wait_for(state="visible", timeout=15000)
            assert instructor.locator('[data-testid="stDataFrame"]').count() == 0  # no per-student rows
            assert instructor.locator("video").count() == 0  # no student's video
            instructor.wait_for_timeout(2000)
            instructor.screenshot(path=str(ARTIFACTS / "instructor_class_view.png"), full_page=True)

            # The student on the other server closes their tab: the count drops within a few seconds, and below
            # k nothing is shown.
            contexts[2].close()
            wait_for_metric(instructor, "Students connected", lambda v: v == str(STUDENTS - 1), 30,
                            "the count drops after a tab closes", log)
            wait_for_metric(instructor, "Dominant mood", lambda v: v == "withheld", 30,
                            "expressions withheld below the floor", log)

            # The instructor ends the class: the remaining students see it has ended.
            instructor.get_by_role("button", name="End class").click()
            instructor.get_by_role("button", name="End the class now").click()
            for page in pages[:2]:
                page.get_by_text("This class has ended", exact=False).wait_for(timeout=30000)
            instructor.get_by_text("Class ended and saved", exact=False).wait_for(timeout=30000)
            instructor.get_by_role("link", name="History").first.click()
            instructor.get_by_text("Students connected", exact=False).first.wait_for(timeout=30000)
            instructor.screenshot(path=str(ARTIFACTS / "history_class.png"), full_page=True)
        finally:
            students_browser.close()
            instructor_browser.close()

    classes = ClassStore(Store(f"sqlite:///{class_app['data_dir'] / 'classmood.db'}"))
    sessions = classes.store.list_sessions()
    session = sessions[sessions["source"] == "class"].iloc[0]
    assert session["name"] == "Algebra <i>week 3</i>" and session["status"] == "completed"
    buckets = classes.store.session_buckets(int(session["id"]))
    assert buckets["students"].max() == STUDENTS  # buckets hold all three students' figures
    assert buckets.dropna(subset=["p_happy"])["students"].min() >= STUDENTS  # expressions only above the floor
