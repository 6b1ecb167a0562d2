"""analyze: a generated video panning over a real group photo -> a stored 'recording' session."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_core import analyze
from fer_core.detect import HaarFaceDetector
from fer_core.pipeline import FramePipeline
from fer_core.settings import Settings
from fer_core.store import Store
from fer_core.track import FaceTracker
from tests.doubles import FakeClassifier

SECONDS = 4
FPS = 10


def pan_video(photo: Path, out: Path, seconds: int = SECONDS, fps: int = FPS, size=(640, 480)) -> Path:
    """A 640x480 window panning right across the photo scaled up 1.6x (faces ~60 px)."""
    image = cv2.imread(str(photo))
    image = cv2.resize(image, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)
    w, h = size
    span = image.shape[1] - w
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    n = seconds * fps
    for i in range(n):
        x = round(span * i / (n - 1))
        writer.write(np.ascontiguousarray(image[:h, x : x + w]))
    writer.release()
    return out


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")


@pytest.fixture(scope="module")
def video(group_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pan_video(group_photos / "2008_007676.jpg", tmp_path_factory.mktemp("video") / "class.mp4")


def test_analyze_video_stores_a_recording_session(video: Path, settings: Settings) -> None:
    store = Store(settings.db_url)
    progress: list[float] = []
    classifier = FakeClassifier("neutral")
    session_id = analyze.analyze_video(
        video, store, settings=settings, session_name="Recorded <i>class</i>", class_label="7B",
        classifier=classifier, max_fps=5, progress_callback=progress.append,
    )
    row = store.get_session(session_id)
    assert (row["name"], row["class_label"], row["source"], row["status"]) == (
        "Recorded <i>class</i>", "7B", "recording", "completed"
    )
    assert row["frames_analysed"] == SECONDS * 5  # bounded rate: 5 of every 10 frames
    assert (row["ended_at"] - row["started_at"]).total_seconds() == pytest.approx(SECONDS, abs=0.01)
    assert row["faces_seen"] >= 4 and row["dominant_emotion"] == "neutral"
    buckets = store.session_buckets(session_id)
    assert buckets["elapsed_s"].tolist() == list(range(SECONDS))  # bucket k = video second k
    assert (buckets["faces"] >= 3).all()
    assert (buckets["share_neutral"] == 1.0).all()
    assert len(store.session_tracks(session_id)) >= 4
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > SECONDS
    assert max(classifier.batch_sizes) >= 3  # all faces of a frame in one call


def test_cli_writes_the_table_and_summary(video: Path, settings: Settings, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(analyze, "classifier_for", lambda *a, **k: FakeClassifier("happy"))
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"results{suffix}"
        code = analyze.main([str(video), "--session-name", "CLI", "--out", str(out), "--db", db, "--max-fps", "2"])
        assert code == 0
        table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        assert len(table) == SECONDS and {"t", "faces", "share_happy", "p_happy", "needs_attention"} <= set(table)
        assert (table["share_happy"] == 1.0).all()
    printed = capsys.readouterr().out
    assert '"CLI"' in printed and "frames analysed" in printed and "dominant mood happy" in printed
    sessions = Store(db).list_sessions()
    assert len(sessions) == 2 and set(sessions["frames_analysed"]) == {SECONDS * 2}


def test_bald_guys_collage_goes_through_one_classifier_call(group_photos: Path) -> None:
    """~30 faces at 1280x720: the many-faces case is one batch, and most faces are found."""
    frame = cv2.resize(cv2.imread(str(group_photos / "bald_guys.jpg")), (1280, 720), interpolation=cv2.INTER_AREA)
    classifier = FakeClassifier(None)
    pipeline = FramePipeline(HaarFaceDetector(), classifier, FaceTracker())
    annotated, faces = pipeline.process(frame, now=0.0)
    assert len(faces) >= 18
    assert classifier.batch_sizes == [len(faces)]
    assert annotated.shape == frame.shape and not np.array_equal(annotated, frame)
