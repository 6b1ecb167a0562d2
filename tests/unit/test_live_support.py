"""The Live page's glue: upload checks, ICE configuration, the per-face table."""

from __future__ import annotations

from dataclasses import dataclass

from fer_core.aggregate import NOW_WINDOW_S, Bucket, NowFace, live_now
from fer_core.settings import Settings
from pages.live_support import check_upload, confidence_note, face_rows, now_caption, rtc_configuration


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
    faces = [NowFace(3, "happy", 0.734, 3), NowFace(5, "sad", 0.41, 1)]
    rows = face_rows(faces, {3: 12.2})
    assert rows.to_dict("records") == [
        {"Face #": 3, "Expression": "happy", "Confidence": "73%", "In view": "12 s"},
        {"Face #": 5, "Expression": "sad", "Confidence": "41%", "In view": "left"},  # not in the newest frame
    ]


def test_the_page_says_which_seconds_now_covers() -> None:
    now = live_now([Bucket(1_800_000_000 + k, 1, 2, 2, (0.1,) * 7, (0, 0, 0, 1, 0, 0, 0), False) for k in range(5)],
                   (), False, None)
    caption = now_caption(now, "UTC")
    assert f"last {NOW_WINDOW_S} complete seconds" in caption
    assert "08:00:02–08:00:05" in caption  # seconds 2, 3 and 4 of the session, to the end of the last
    assert "label on the video" in caption


def test_the_confidence_note_says_whether_the_model_is_calibrated() -> None:
    calibrated, raw = confidence_note(0.7), confidence_note(1.0)
    assert "calibrated on FER2013 validation faces" in calibrated and "no calibration" not in calibrated
    assert "no calibration" in raw and "calibrated on" not in raw
    assert all("not a measure of how anyone feels" in note for note in (calibrated, raw))
    assert "mirror image" in confidence_note(0.7, flip_average=True) and "mirror image" not in calibrated


def test_sensitivity_normal_is_the_measured_default() -> None:
    from pages.live_support import sensitivity_levels

    levels = sensitivity_levels(Settings(min_neighbors=3))
    assert levels == {"low": 5, "normal": 3, "high": 2}
    assert sensitivity_levels(Settings(min_neighbors=1))["high"] == 1


class MemoryUpload:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data, self.size = name, data, len(data)

    def getbuffer(self) -> memoryview:
        return memoryview(self._data)


class Bar:
    def __init__(self) -> None:
        self.values: list[float] = []

    def progress(self, value: float, text: str = "") -> None:
        self.values.append(value)


def test_a_file_that_is_not_a_video_gets_a_clear_error_and_stores_nothing(tmp_path) -> None:
    from fer_core.store import Store
    from pages.live_support import analyse_upload

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    for data, reason in [(b"", "the file is empty"), (b"%PDF-1.4 not a video" * 50, "not a readable video")]:
        result = analyse_upload(MemoryUpload("lesson.mp4", data), "n", "c", settings, Bar())
        assert result.session_id is None
        assert result.error is not None and "Cannot analyse lesson.mp4" in result.error and reason in result.error
    assert len(Store(settings.db_url).list_sessions()) == 0
    assert all(p.name.startswith("db.sqlite") for p in tmp_path.iterdir())  # no temporary copy left behind


@dataclass
class BytesUpload:
    name: str
    data: bytes

    def getbuffer(self) -> memoryview:
        return memoryview(self.data)


def test_a_recording_error_names_the_file_once(tmp_path) -> None:
    from pages.live_support import analyse_upload

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = analyse_upload(BytesUpload("lesson 3.mp4", b"These are notes, not a video.\n" * 50), "", "",
                            settings, progress_bar=None)
    assert result.session_id is None
    assert result.error.startswith("Cannot analyse lesson 3.mp4: not a readable video")
    assert result.error.count("lesson 3.mp4") == 1


def test_a_recording_date_needs_a_day_and_a_time_or_neither() -> None:
    from datetime import date, time

    from pages.live_support import recording_date_problem

    assert recording_date_problem(None, None) is None  # not known: fine, it can be set later
    assert recording_date_problem(date(2026, 11, 3), time(9, 0)) is None
    assert "both the date and the time" in recording_date_problem(date(2026, 11, 3), None)
    assert "both the date and the time" in recording_date_problem(None, time(9, 0))


def test_an_uploaded_recording_is_dated_and_charted_from_0_00(tmp_path, monkeypatch) -> None:
    from datetime import UTC, datetime
    from pathlib import Path

    import cv2
    import numpy as np

    import fer_core.analyze as analyze
    from fer_core.store import get_store
    from pages.live_support import analyse_upload
    from tests.doubles import FakeClassifier

    video = Path(tmp_path / "lesson.mp4")
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for i in range(25):
        writer.write(np.full((120, 160, 3), i * 8, np.uint8))
    writer.release()
    monkeypatch.setattr(analyze, "classifier_for", lambda *args, **kwargs: FakeClassifier())
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    recorded = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    result = analyse_upload(BytesUpload("lesson.mp4", video.read_bytes()), "", "7B", settings,
                            progress_bar=type("Bar", (), {"progress": lambda *a, **k: None})(), recorded_at=recorded)
    assert result.error is None
    row = get_store(settings.db_url).get_session(result.session_id)
    assert row["recorded_at"] == recorded and row["name"] == "lesson"
    assert (result.buckets["t"] - result.origin).tolist() == [0, 1, 2]  # video seconds, as the page plots them
