"""What a session records about itself: the model and settings behind it, a recording's real date."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fer_core import analyze
from fer_core.session import LiveSession
from fer_core.settings import Settings
from fer_core.store import Provenance, Store
from tests.doubles import FakeClassifier


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


def small_video(path: Path, frames: int = 30, fps: int = 10) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(frames):
        writer.write(np.full((120, 160, 3), (i * 10) % 256, np.uint8))
    writer.release()
    return path


def test_a_session_records_its_model_by_content_and_its_settings(tmp_path: Path, store: Store) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    weights = model_dir / "model_int8.tflite"
    weights.write_bytes(b"weights v1")
    classifier = FakeClassifier()
    classifier.source = weights
    session = LiveSession(store, classifier, name="s", settings=Settings(data_dir=tmp_path, min_neighbors=4))
    stored = Provenance.from_row(store.get_session(session.session_id))
    assert stored is not None
    assert stored.model_name == "my-model"
    assert stored.model_sha256 == hashlib.sha256(b"weights v1").hexdigest()
    assert stored.settings["detector_min_neighbors"] == 4 and stored.settings["backend"] == "fake"
    assert stored.settings["smoothing"] == Settings().smoothing and "changed_while_running" not in stored.settings

    session.configure(min_neighbors=2)  # the instructor turns sensitivity up mid-class
    changed = Provenance.from_row(store.get_session(session.session_id))
    assert changed.settings["detector_min_neighbors"] == 2 and changed.settings["changed_while_running"] is True
    session.stop()


def test_an_exported_runs_model_is_named_by_its_run() -> None:
    classifier = FakeClassifier()
    classifier.source = Path("/data/runs/erase-a/export/model_int8.tflite")
    assert classifier.model_name == "erase-a/export"


def test_a_recording_keeps_video_time_and_its_real_date(tmp_path: Path, store: Store) -> None:
    recorded = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    before = datetime.now(UTC).replace(microsecond=0)
    result = analyze.analyze_video_result(small_video(tmp_path / "lesson.mp4"), store,
                                          settings=Settings(data_dir=tmp_path), classifier=FakeClassifier(),
                                          recorded_at=recorded)
    row = store.get_session(result.session_id)
    assert row["recorded_at"] == recorded
    assert row["started_at"] >= before  # when it was analysed: the retention limit counts from it
    buckets = store.session_buckets(result.session_id)
    assert buckets["elapsed_s"].tolist() == [0, 1, 2]  # video seconds
    assert buckets["t"].iloc[0] == int(row["started_at"].timestamp())  # the clock's origin
    listed = store.list_sessions()
    assert listed.loc[0, "held_at"] == recorded


def test_history_order_follows_when_classes_took_place(store: Store) -> None:
    now = datetime.now(UTC)
    live = store.create_session("Live yesterday", started_at=now - timedelta(days=1))
    old_recording = store.create_session("Filmed last month", source="recording", started_at=now,
                                         recorded_at=now - timedelta(days=30))
    undated = store.create_session("Analysed just now", source="recording", started_at=now)
    assert store.list_sessions()["id"].tolist() == [undated, live, old_recording]


def test_recording_times_from_the_command_line() -> None:
    assert analyze.recording_time("2026-11-03T09:00+01:00") == datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    assert analyze.recording_time("2026-11-03 09:00Z") == datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    local = analyze.recording_time("2026-11-03T09:00")
    assert local.tzinfo is UTC and local == datetime(2026, 11, 3, 9, 0).astimezone().astimezone(UTC)
    with pytest.raises(Exception, match="not a date and time"):
        analyze.recording_time("last tuesday")
