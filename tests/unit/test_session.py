"""LiveSession: frames -> buckets in the store, via the writer thread only; isolation; stop()."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fer_core.detect import FaceBox
from fer_core.session import LiveSession
from fer_core.settings import Settings
from fer_core.store import Store, StoreError
from tests.doubles import FakeClassifier, StubDetector

T0 = 1_700_000_000.0


@pytest.fixture
def settings(tmp_path: Path, backend: str, database_url) -> Settings:
    """On each backend: SQLite and PostgreSQL."""
    return Settings(data_dir=tmp_path, database_url=database_url(backend), detect_every=1,
                    flush_interval_s=0.2, attention_seconds=2, attention_negative_share=0.5)


@pytest.fixture
def store(settings: Settings) -> Store:
    store = Store(settings.db_url)
    yield store
    store.dispose()


def open_session(store: Store, settings: Settings, boxes: list[FaceBox], label: str = "happy",
                 name: str = "s") -> LiveSession:
    session = LiveSession(store, FakeClassifier(label), name=name, class_label="c", settings=settings)
    session.pipeline.detector = StubDetector(boxes)
    return session


def run(session: LiveSession, seconds: int, fps: int = 4, start: float = T0) -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    for i in range(seconds * fps):
        session.process_frame(image, start + i / fps)


def test_frames_end_up_as_buckets_and_a_closed_session(store: Store, settings: Settings) -> None:
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50), FaceBox(300, 10, 50, 50)])
    run(session, seconds=3)
    summary = session.stop()
    assert (summary.frames_analysed, summary.faces_seen, summary.dominant_emotion, summary.seconds) == (
        12, 2, "happy", 3
    )
    row = store.list_sessions().iloc[0]
    assert (row["id"], row["status"], row["source"], row["faces_seen"], row["frames_analysed"]) == (
        session.session_id, "completed", "live", 2, 12
    )
    assert row["dominant_emotion"] == "happy" and row["ended_at"] is not None
    buckets = store.session_buckets(session.session_id)
    assert buckets["t"].tolist() == [int(T0), int(T0) + 1, int(T0) + 2]
    assert buckets["faces"].tolist() == [2, 2, 2]
    assert buckets["share_happy"].tolist() == [1.0, 1.0, 1.0]
    tracks = store.session_tracks(session.session_id)
    assert tracks["track"].tolist() == [1, 2] and tracks["seconds"].tolist() == [3, 3]


def test_attention_event_is_stored(store: Store, settings: Settings) -> None:
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50)], label="sad")
    run(session, seconds=4)
    snap = session.snapshot()
    assert snap.aggregate.attention and "sad" in (snap.aggregate.attention_reason or "")
    session.stop()
    events = store.session_events(session.session_id)
    assert len(events) == 1
    assert events.iloc[0]["t_start"] == int(T0) and events.iloc[0]["t_end"] == int(T0) + 4
    assert store.session_buckets(session.session_id)["needs_attention"].tolist() == [False, True, True, True]


def test_the_video_thread_never_writes_to_the_database(store: Store, settings: Settings) -> None:
    writers: list[str] = []
    original = store.add_batch

    def spy(*args, **kwargs):
        writers.append(threading.current_thread().name)
        return original(*args, **kwargs)

    store.add_batch = spy  # type: ignore[method-assign]
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50)])
    run(session, seconds=3)
    session.stop()
    assert writers and set(writers) == {"classmood-store-writer"}


def test_two_sessions_share_nothing(store: Store, settings: Settings) -> None:
    a = open_session(store, settings, [FaceBox(10, 10, 50, 50)], label="happy", name="A")
    b = open_session(store, settings, [FaceBox(10, 10, 50, 50), FaceBox(200, 10, 50, 50), FaceBox(400, 10, 50, 50)],
                     label="sad", name="B")
    assert a.pipeline.tracker is not b.pipeline.tracker and a.aggregator is not b.aggregator
    assert a.writer is not b.writer
    image = np.zeros((480, 640, 3), np.uint8)
    for i in range(12):  # interleaved frames, same timestamps
        _, faces_a = a.process_frame(image, T0 + i / 4)
        _, faces_b = b.process_frame(image, T0 + i / 4)
    assert [f.track_id for f in faces_a] == [1] and [f.track_id for f in faces_b] == [1, 2, 3]
    a.stop()
    b.stop()
    ba, bb = store.session_buckets(a.session_id), store.session_buckets(b.session_id)
    assert ba["faces"].tolist() == [1, 1, 1] and bb["faces"].tolist() == [3, 3, 3]
    assert (ba["share_happy"] == 1.0).all() and (bb["share_sad"] == 1.0).all()
    assert a.snapshot().aggregate.frames_analysed == 12 == b.snapshot().aggregate.frames_analysed


def test_stop_is_idempotent_and_later_frames_pass_through(store: Store, settings: Settings) -> None:
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50)])
    run(session, seconds=1)
    first = session.stop()
    assert session.stop() is first
    image = np.zeros((120, 160, 3), np.uint8)
    out, faces = session.process_frame(image, T0 + 10)
    assert out is image and faces == []
    assert session.snapshot().stopped
    assert len(store.list_sessions()) == 1


def test_snapshot_for_the_ui(store: Store, settings: Settings) -> None:
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50), FaceBox(300, 10, 50, 50)])
    run(session, seconds=2)
    snap = session.snapshot()
    assert snap.session_id == session.session_id
    assert snap.aggregate.faces_now == 2 and len(snap.aggregate.buckets) == 1  # the second second is still open
    assert [t.track_id for t in snap.tracks] == [1, 2]
    assert all(t.label == "happy" and t.time_in_view > 0 for t in snap.tracks)
    assert snap.analysed_fps > 0 and snap.stats.frames == 8
    assert list(snap.aggregate.frame()["faces"]) == [2]
    session.stop()


def test_configure_changes_sensitivity_and_smoothing_live(store: Store, settings: Settings) -> None:
    session = LiveSession(store, FakeClassifier(), name="s", settings=settings)
    session.configure(min_neighbors=7, smoothing=0.3)
    assert session.pipeline.detector.params.min_neighbors == 7
    assert session.pipeline.tracker.smoothing == 0.3
    with pytest.raises(ValueError):
        session.configure(smoothing=1.5)
    session.stop()


def test_open_uses_settings_and_overrides(store: Store, settings: Settings) -> None:
    session = LiveSession.open(settings, name="x", class_label="y", source="recording", min_neighbors=6,
                               smoothing=0.2, classifier=FakeClassifier(), store=store)
    params = session.pipeline.detector.params
    assert (params.min_neighbors, params.scale_factor) == (6, settings.scale_factor)
    assert session.pipeline.tracker.smoothing == 0.2
    assert store.get_session(session.session_id)["source"] == "recording"
    session.stop()


def test_open_loads_the_configured_model_backend_and_flip_choice(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fer_core.registry as registry_module

    asked: list[tuple] = []
    monkeypatch.setattr(registry_module, "load_classifier", lambda *args: asked.append(args) or FakeClassifier())
    configured = settings.model_copy(update={"classifier_backend": "keras", "classifier_flip_average": True})
    LiveSession.open(configured, name="x", store=store).stop()
    assert asked == [(registry_module.ModelRegistry.from_settings(configured).active().path, "keras", True)]


def test_stop_survives_a_failing_database(store: Store, settings: Settings) -> None:
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50)])
    run(session, seconds=2)

    def broken(*args, **kwargs):
        raise StoreError("cannot close a session: the database is read-only")

    store.close_session = broken  # type: ignore[method-assign]
    summary = session.stop()  # must not raise into the UI thread
    assert summary.frames_analysed == 8
    assert "read-only" in (session.last_error or "")


@pytest.mark.parametrize("pipelined", [False, True], ids=["plain", "pipelined"])
def test_guided_and_pipelined_sessions_count_every_frame_once_at_its_own_time(
        store: Store, tmp_path: Path, backend: str, database_url, pipelined: bool) -> None:
    """The faster pipeline in a session: faces come one frame late when pipelined, yet each frame is
    counted once, in the second it was taken, and stop() collects the last one."""
    settings = Settings(data_dir=tmp_path, database_url=database_url(backend), detect_every=1, full_scan_every=4,
                        pipelined=pipelined, flush_interval_s=0.2)
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50), FaceBox(300, 10, 50, 50)])
    detector = session.pipeline.detector
    assert session.pipeline.pipelined is pipelined and session.pipeline.full_scan_every == 4
    image = np.zeros((480, 640, 3), np.uint8)
    for i in range(8):  # 2 s at 4 frames/s; one face leaves for the second second
        if i == 4:
            detector.boxes = detector.boxes[:1]
        session.process_frame(image, T0 + i / 4)
    summary = session.stop()
    assert (summary.frames_analysed, summary.seconds, summary.faces_seen) == (8, 2, 2)
    buckets = store.session_buckets(session.session_id)
    assert buckets["faces"].tolist() == [2, 1]  # frame 3's two faces belong to second 0, even pipelined
    assert len(detector.calls) < 8  # full scans on some frames only; the others searched near the faces
    assert not any(t.name.startswith("classmood-detect") and t.is_alive() for t in threading.enumerate())


def test_markers_are_stored_at_once_and_shown_live(store: Store, settings: Settings) -> None:
    session = open_session(store, settings, [FaceBox(10, 10, 50, 50)])
    run(session, seconds=2)
    marker = session.add_marker("  quiz\n starts ", now=T0 + 1.5)
    assert marker.label == "quiz starts"
    assert [(m.t, m.label) for m in session.snapshot().markers] == [(T0 + 1.5, "quiz starts")]
    # Stored straight away, not at the end: a crash mid-class keeps it.
    assert store.session_markers(session.session_id).to_dict("records") == [{"t": T0 + 1.5, "label": "quiz starts"}]
    with pytest.raises(ValueError, match="needs a label"):
        session.add_marker("   ")
    session.stop()
