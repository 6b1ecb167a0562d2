"""AppTests of the Live class page: notices, consent before the camera, and its controls."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import streamlit_webrtc

from fer_core.settings import Settings
from tests.app.conftest import page_test, texts

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
