"""The Live page's glue: upload checks, ICE configuration, the per-face table."""

from __future__ import annotations

from dataclasses import dataclass

from fer_core.settings import Settings
from pages.live_support import check_upload, face_rows, rtc_configuration


@dataclass
class FakeUpload:
    name: str
    size: int


def test_upload_checks_give_clear_messages() -> None:
    settings = Settings(max_upload_mb=1)
    assert check_upload(None, settings) == "Choose a video file first."
    assert "not a supported video type" in check_upload(FakeUpload("notes.txt", 10), settings)
    assert "not a supported video type" in check_upload(FakeUpload("clip.mp4.exe", 10), settings)
    assert "is empty" in check_upload(FakeUpload("clip.mp4", 0), settings)
    assert "the limit is 1 MB" in check_upload(FakeUpload("clip.mp4", 2 * 2**20), settings)
    assert check_upload(FakeUpload("CLIP.MOV", 1000), settings) is None


def test_ice_servers_are_always_explicit() -> None:
    # An empty dict would make streamlit-webrtc fall back to Google's public STUN server.
    assert rtc_configuration(Settings()) == {"iceServers": []}
    servers = [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]
    assert rtc_configuration(Settings(ice_servers=servers)) == {"iceServers": servers}


def test_face_rows_show_confidence_next_to_every_label() -> None:
    @dataclass
    class Obs:
        track_id: int
        label: str
        confidence: float
        time_in_view: float

    rows = face_rows([Obs(3, "happy", 0.734, 12.2), Obs(5, "sad", 0.41, 1.0)])
    assert rows.to_dict("records") == [
        {"Face #": 3, "Expression": "happy", "Confidence": "73%", "In view": "12 s"},
        {"Face #": 5, "Expression": "sad", "Confidence": "41%", "In view": "1 s"},
    ]


def test_sensitivity_normal_is_the_measured_default() -> None:
    from pages.live_support import sensitivity_levels

    levels = sensitivity_levels(Settings(min_neighbors=3))
    assert levels == {"low": 5, "normal": 3, "high": 2}
    assert sensitivity_levels(Settings(min_neighbors=1))["high"] == 1
