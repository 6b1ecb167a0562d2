"""AppTests of the online class: the student's Join page and the instructor's "Online class" tab of the Live page."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import streamlit_webrtc
from streamlit.testing.v1 import AppTest

import pages.class_support as class_support
from fer_core.class_hub import close_all_hubs
from fer_core.class_store import ClassStore, get_class_store
from fer_core.classroom import ClassSecond
from fer_core.emotions import EMOTION_INDEX, NUM_EMOTIONS
from fer_core.join_code import display
from fer_core.settings import Settings
from tests.app.conftest import APP_TIMEOUT, ROOT, page_test, texts
from tests.conftest import BACKENDS
from tests.doubles import FakeClassifier

pytestmark = pytest.mark.app


@pytest.fixture(params=BACKENDS)
def app_backend(request: pytest.FixtureRequest) -> str:
    """Every test on SQLite and on PostgreSQL, where the servers of a class meet."""
    return request.param

HTML_NAME = "<script>alert(1)</script> **Maths**"


class FakeStreamer:
    """Stands in for webrtc_streamer (the browser test drives the real one); `playing` is what it reports."""

    def __init__(self, playing: bool = False) -> None:
        self.playing = playing
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(kwargs)
        return SimpleNamespace(state=SimpleNamespace(playing=self.playing))


@pytest.fixture
def classes(app_env: Settings) -> Iterator[ClassStore]:
    yield get_class_store(app_env.db_url, app_env.db_pool_size, app_env.db_max_overflow)
    close_all_hubs()  # the pages' hubs poll their database: stop them before it goes away


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(class_support, "classifier_for", lambda *args: FakeClassifier())


def open_class(classes: ClassStore, name: str = HTML_NAME, **kw: Any) -> Any:
    options = {"min_students": 3, "max_students": 2, "code_ttl_s": 3600.0, **kw}
    return classes.open_class(name, "9A <b>", **options)


def join_page(code: str | None = None, streamer: FakeStreamer | None = None,
              monkeypatch: pytest.MonkeyPatch | None = None) -> Any:
    if streamer is not None and monkeypatch is not None:
        monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", streamer)
    at = page_test("join")
    if code is not None:
        at.query_params["code"] = code
    return at.run()


# --- the Join page ------------------------------------------------------------------------------------


def test_join_without_a_code_asks_for_one_and_bad_codes_say_why(app_env: Settings, classes: ClassStore) -> None:
    at = join_page()
    assert not at.exception and at.title[0].value == "Join an online class"
    assert "Enter the join code" in texts(at.info)
    at.text_input(key="join_code").set_value("ABCD-EFGH-I0").run()
    assert "never contain 0, O, 1, I or L" in texts(at.error)
    at.text_input(key="join_code").set_value("ABCD-EFGH-JK").run()
    assert "No class has the code ABCD-EFGH-JK" in texts(at.error)
    assert not at.checkbox  # no consent box, so no camera, for a code that opens nothing


def test_the_link_opens_the_class_says_what_is_analysed_and_consent_gates_the_camera(
    app_env: Settings, classes: ClassStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = open_class(classes)
    streamer = FakeStreamer()
    at = join_page(info.code, streamer, monkeypatch)
    assert not at.exception
    shown = texts(at.subheader)
    assert "<script>alert(1)</script> **Maths**" in shown and "9A <b>" in shown  # names are text, not markup
    explained = texts(at.markdown)
    assert "only class-level figures" in explained and "never see your video" in explained
    assert "Nothing that identifies you is stored" in explained and "at least 3 students" in explained
    assert streamer.calls == [] and "Tick the box above" in texts(at.warning)

    at.checkbox(key="join_consent").check().run()
    assert not at.exception
    call = streamer.calls[-1]
    assert call["mode"] == streamlit_webrtc.WebRtcMode.SENDONLY
    assert call["rtc_configuration"] == {"iceServers": []}
    video = call["media_stream_constraints"]["video"]
    assert (video["width"]["ideal"], video["height"]["ideal"], video["frameRate"]["max"]) == (320, 240, 5)
    assert call["media_stream_constraints"]["audio"] is False
    assert callable(call["video_frame_callback"]) and callable(call["on_video_ended"])


def test_a_streaming_student_joins_once_and_can_leave(
    app_env: Settings, classes: ClassStore, fake_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = open_class(classes)
    at = join_page(info.code, FakeStreamer(playing=True), monkeypatch)
    at.checkbox(key="join_consent").check().run()
    assert not at.exception
    assert classes.students_connected(info.id, member_timeout_s=5) == 1
    assert "Leave" in [b.label for b in at.button]
    at.button(key="join_leave").click().run()
    assert "You have left the class" in texts(at.info)
    time.sleep(app_env.flush_interval_s * 2.5)  # the hub records the leave at its next flush
    assert classes.students_connected(info.id, member_timeout_s=5) == 0


def test_a_full_class_and_an_ended_class_refuse_with_a_clear_message(
    app_env: Settings, classes: ClassStore, fake_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = open_class(classes, max_students=1)
    classes.join(info.id, "someone-else", "another-server", member_timeout_s=5)
    at = join_page(info.code, FakeStreamer(playing=True), monkeypatch)
    at.checkbox(key="join_consent").check().run()
    assert "This class is full (1 students)" in texts(at.error)
    classes.end_class(info.id)
    at = join_page(info.code, FakeStreamer(), monkeypatch)
    assert "This class has ended" in texts(at.warning)
    assert not at.checkbox
    expired = open_class(classes, code_ttl_s=0.0)
    at = join_page(expired.code, FakeStreamer(), monkeypatch)
    assert "This join code has expired" in texts(at.warning)
    assert not at.checkbox


# --- the instructor's tab ----------------------------------------------------------------------------


def second(t: int, contributors: int, label: str = "happy") -> ClassSecond:
    counts = [0] * NUM_EMOTIONS
    counts[EMOTION_INDEX[label]] = contributors
    sums = [0.0] * NUM_EMOTIONS
    sums[EMOTION_INDEX[label]] = 0.9 * contributors
    return ClassSecond(t, contributors, contributors, contributors, contributors, contributors, tuple(sums),
                       tuple(counts))


def open_from_the_live_page(name: str = "Algebra", told: bool = True) -> Any:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=APP_TIMEOUT).run()  # with navigation
    form = next(t for t in at.text_input if t.label == "Class name")
    form.set_value(name)
    if told:
        next(c for c in at.checkbox if c.label.startswith("My students have been told")).check()
    return at.button(key="FormSubmitter:open_class-Open class").click().run()


def test_the_instructor_opens_a_class_and_gets_a_code_and_a_join_link(
    app_env: Settings, classes: ClassStore, server_address: Callable
) -> None:
    at = open_from_the_live_page(told=False)
    assert "Tell your students what is analysed first" in texts(at.error)
    assert classes.open_classes() == []
    at = open_from_the_live_page(HTML_NAME)
    assert not at.exception
    (info,) = classes.open_classes()
    codes = [m.value for m in at.metric if m.label == "Join code"]
    assert codes == [display(info.code)]
    assert any(f"/join?code={info.code}" in c.value for c in at.code)
    assert HTML_NAME in texts(at.subheader)
    assert "Students connected" in [m.label for m in at.metric]


def test_the_instructor_view_withholds_expressions_below_the_floor_and_never_shows_a_student(
    app_env: Settings, classes: ClassStore, server_address: Callable
) -> None:
    at = open_from_the_live_page()
    (info,) = classes.open_classes()
    t = int(time.time()) - 2
    classes.add_partials(info.id, "server-1", [second(t, 2)])
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dominant mood"] == "withheld" and metrics["Faces in view"] == "2"
    assert "at least 5 students' faces are in view; right now 2 are" in texts(at.info)
    classes.add_partials(info.id, "server-2", [second(t, 3, "sad")])
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dominant mood"] == "sad (60%)" and metrics["Faces in view"] == "5"
    assert len(at.get("vega_lite_chart")) == 3
    assert not at.dataframe and not at.table  # no per-student rows, ever


def test_ending_the_class_saves_it_for_history(
    app_env: Settings, classes: ClassStore, server_address: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(class_support, "SAVE_GRACE_S", 0.0)
    at = open_from_the_live_page()
    (info,) = classes.open_classes()
    classes.add_partials(info.id, "server-1", [second(int(time.time()) - 3, 5)])
    at.button(key=f"end_class_{info.id}").click().run()
    assert not at.exception
    at.run()
    assert "Class ended and saved" in texts(at.success)
    session = classes.store.get_session(info.session_id)
    assert session["status"] == "completed" and session["source"] == "class"
    assert list(classes.store.session_buckets(info.session_id)["students"]) == [5]


def test_history_shows_a_saved_class_with_students_over_time_and_no_student_rows(
    app_env: Settings, classes: ClassStore, server_address: Callable
) -> None:
    info = open_class(classes, name="Week 3")
    t = int(time.time()) - 20
    classes.add_partials(info.id, "server-1", [second(t, 3), second(t + 1, 4, "sad")])
    classes.add_partials(info.id, "server-2", [second(t + 1, 2, "sad")])
    classes.end_class(info.id)
    assert classes.save_class(info.id, negative_share=0.5, attention_seconds=10)
    at = page_test("history").run()
    assert not at.exception
    assert "class" in set(at.dataframe[0].value["Source"])
    assert "Students connected" in texts(at.markdown)
    assert "no per-face or per-student rows" in texts(at.caption)
    assert not any("Track" in d.value.columns for d in at.dataframe)  # no tracks table for a class


def test_closing_the_instructors_tab_leaves_the_class_running_and_another_tab_takes_it_over(
    app_env: Settings, classes: ClassStore, server_address: Callable
) -> None:
    open_from_the_live_page("Chemistry")
    (info,) = classes.open_classes()
    # A new browser session (the instructor's tab was closed): the class is still open and can be watched.
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=APP_TIMEOUT).run()
    assert "Chemistry" in texts(at.markdown) and display(info.code) in texts(at.markdown)
    at.button(key=f"watch_class_{info.id}").click().run()
    assert [m.value for m in at.metric if m.label == "Join code"] == [display(info.code)]
    assert classes.get_class(info.id).is_open
