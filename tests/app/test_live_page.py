"""AppTests of the Live class page: notices, consent before the camera, and its controls."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import streamlit_webrtc

from fer_core.settings import Settings
from tests.app.conftest import chart_specs, page_test, texts

pytestmark = pytest.mark.app


def test_live_page_shows_responsible_use_and_privacy_before_anything(
    app_env: Settings, server_address: Callable
) -> None:
    at = page_test("live").run()
    assert not at.exception
    assert at.title[0].value == "Live class"
    notices = texts(at.info) + texts(at.markdown)
    assert "AI Act Art. 5(1)(f)" in notices
    assert "No video frame or face image is ever stored" in notices
    assert "anonymous track numbers" in notices


class FakeStreamer:
    """Stands in for webrtc_streamer, which needs a real Streamlit server (the browser test covers it)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(kwargs)
        return SimpleNamespace(state=SimpleNamespace(playing=False))


def test_camera_is_offered_only_after_consent(
    app_env: Settings, server_address: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    streamer = FakeStreamer()
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", streamer)
    at = page_test("live").run()
    assert "Confirm the consent notice" in texts(at.warning)
    assert streamer.calls == []

    at.checkbox(key="live_consent").check().run()
    assert not at.exception
    assert "Confirm the consent notice" not in texts(at.warning)
    call = streamer.calls[-1]
    assert call["rtc_configuration"] == {"iceServers": []}  # explicit: no call-out to public STUN
    assert call["media_stream_constraints"] == {"video": True, "audio": False}
    assert call["async_processing"] is True  # analyse the newest frame, drop the rest
    assert callable(call["video_frame_callback"]) and callable(call["on_video_ended"])


def test_controls_for_sensitivity_and_smoothing_are_there(app_env: Settings, server_address: Callable) -> None:
    at = page_test("live").run()
    assert at.select_slider(key="live_sensitivity").value == "normal"
    assert at.slider(key="live_smoothing").value == pytest.approx(app_env.smoothing)
    # Before a stream, the class panel explains itself instead of showing empty charts.
    assert "Charts appear here once the stream runs" in texts(at.caption)


def test_a_missing_model_is_a_clear_error_not_a_crash(
    app_env: Settings, server_address: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # app_env points the models directory at an empty folder: no model to load.
    monkeypatch.setattr(
        streamlit_webrtc, "webrtc_streamer", lambda **kwargs: SimpleNamespace(state=SimpleNamespace(playing=True))
    )
    at = page_test("live").run()
    at.checkbox(key="live_consent").check().run()
    assert not at.exception
    assert "Cannot start the analysis: model not found" in texts(at.error)


# --- the class panel while a stream runs (a real LiveSession fed frames; the camera is faked) ---------------


def running_controller(settings: Settings, seconds_with_face: int, seconds_without: int, label: str = "sad"):
    """A LiveController whose session saw one face for some seconds, then nobody."""
    import numpy as np

    from fer_core.detect import FaceBox
    from fer_core.live import LiveController
    from fer_core.session import LiveSession
    from fer_core.store import Store
    from tests.doubles import FakeClassifier, StubDetector

    controller = LiveController()
    session = controller.start(lambda: LiveSession(Store(settings.db_url), FakeClassifier(label), name="Panel",
                                                   settings=settings))
    image = np.full((240, 320, 3), 128, np.uint8)
    t0 = 1_800_000_000.0
    for k in range(4 * (seconds_with_face + seconds_without) + 1):
        face_in_view = k < 4 * seconds_with_face
        session.pipeline.detector = StubDetector([FaceBox(40, 40, 80, 80)] if face_in_view else [])
        controller.process(image, t0 + k / 4)
    return controller


@pytest.fixture
def camera_playing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer",
                        lambda **kwargs: SimpleNamespace(state=SimpleNamespace(playing=True)))


def live_metrics(at) -> dict[str, str]:
    return {m.label: str(m.value) for m in at.metric}


def live_page_with(controller) -> Any:
    """The Live page, run while `controller`'s stream plays (consent given)."""
    at = page_test("live")
    at.session_state["live_controller"] = controller
    at.session_state["live_consent"] = True
    return at.run()


def test_every_live_figure_is_the_same_now(app_env: Settings, server_address: Callable, camera_playing) -> None:
    at = live_page_with(running_controller(app_env, seconds_with_face=5, seconds_without=0))
    assert not at.exception
    metrics = live_metrics(at)
    assert metrics["Faces in view"] == "1" and metrics["Dominant mood"] == "sad"
    faces = at.dataframe[0].value
    assert list(faces["Expression"]) == ["sad"] and faces["Confidence"].iloc[0] == "90%"
    assert "covers the same last 3 complete seconds" in texts(at.caption)
    at.session_state["live_controller"].stop()


def test_no_face_in_view_shows_no_mood(app_env: Settings, server_address: Callable, camera_playing) -> None:
    # The face left 4 s ago: "Faces in view 0" must not sit next to the mood it had.
    at = live_page_with(running_controller(app_env, seconds_with_face=5, seconds_without=4))
    assert not at.exception
    metrics = live_metrics(at)
    assert metrics["Faces in view"] == "0"
    assert metrics["Dominant mood"] == "—"
    assert at.dataframe[0].value.empty
    assert not any('"bar"' in spec for spec in chart_specs(at))  # a message, not seven empty bars
    at.session_state["live_controller"].stop()


def test_the_instructor_drops_a_lesson_marker(app_env: Settings, server_address: Callable, camera_playing) -> None:
    controller = running_controller(app_env, seconds_with_face=4, seconds_without=0)
    at = live_page_with(controller)
    at.text_input(key="live_marker_label").set_value("quiz starts")
    at = at.button[next(i for i, b in enumerate(at.button) if b.label == "Drop marker")].click().run()
    assert not at.exception
    assert "quiz starts" in texts(at.get("toast"))
    session = controller.session
    assert controller.session.store.session_markers(session.session_id)["label"].tolist() == ["quiz starts"]
    timeline = next(spec for spec in chart_specs(at) if '"area"' in spec)
    assert '"rule"' in timeline and '"Marker"' in timeline  # on the live timeline
    controller.stop()
