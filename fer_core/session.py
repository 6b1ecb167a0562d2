"""One analysis session (a live stream or a recording): pipeline + aggregator + store writer.

Threads: the video thread calls `process_frame()`; it never touches the database,
it only drains the aggregator into the writer's queue. The UI thread calls
`snapshot()`, `configure()` and `stop()`. Every session builds its own detector,
tracker, aggregator and writer, so two sessions never share state; only the
classifier (stateless, loaded once per process) and the Store (a thread-safe
connection pool) are shared.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np

from fer_core.aggregate import AggregatorSnapshot, SessionAggregator, SessionSummary
from fer_core.classify import EmotionClassifier
from fer_core.detect import DetectorParams, HaarFaceDetector
from fer_core.pipeline import FaceObservation, FramePipeline, PipelineStats
from fer_core.registry import classifier_for
from fer_core.settings import Settings, get_settings
from fer_core.store import BackgroundWriter, Provenance, SettingValue, Source, Store, StoreError, store_for
from fer_core.track import FaceTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Marker:
    """A lesson marker the instructor dropped ("quiz starts") at epoch second `t`."""

    t: float
    label: str


@dataclass(frozen=True)
class LiveSnapshot:
    session_id: int
    aggregate: AggregatorSnapshot
    tracks: tuple[FaceObservation, ...]  # faces in the latest processed frame
    stats: PipelineStats
    writer_error: str | None
    writes_dropped: int
    stopped: bool
    markers: tuple[Marker, ...] = ()

    @property
    def analysed_fps(self) -> float:
        return self.stats.analysed_fps


class LiveSession:
    def __init__(
        self,
        store: Store,
        classifier: EmotionClassifier,
        *,
        name: str,
        class_label: str = "",
        source: Source = "live",
        settings: Settings | None = None,
        detector_params: DetectorParams | None = None,
        smoothing: float | None = None,
        detect_every: int | None = None,
        started_at: datetime | None = None,
        annotate: bool = True,
        recorded_at: datetime | None = None,
    ) -> None:
        """`annotate=False`: frames come back without boxes drawn (a recording nobody watches)."""
        settings = settings or get_settings()
        self.store = store
        self.source = source
        self.pipeline = FramePipeline(
            HaarFaceDetector(detector_params or DetectorParams.from_settings(settings)),
            classifier,
            FaceTracker(
                max_age_s=settings.track_max_age_s,
                smoothing=settings.smoothing if smoothing is None else smoothing,
            ),
            detect_every=settings.detect_every if detect_every is None else detect_every,
            annotate=annotate,
            full_scan_every=settings.full_scan_every,
            pipelined=settings.pipelined,
        )
        self.aggregator = SessionAggregator(
            window_s=settings.live_window_s,
            negative_share=settings.attention_negative_share,
            attention_seconds=settings.attention_seconds,
        )
        self.session_id = store.create_session(name, class_label, source, started_at=started_at,
                                               recorded_at=recorded_at, provenance=self.provenance())
        self.writer = BackgroundWriter(store, flush_interval_s=settings.flush_interval_s)
        self._frame_lock = threading.Lock()  # the video thread vs stop(); never taken by snapshot()
        self._stopped = False
        self._summary: SessionSummary | None = None
        self._last_faces: tuple[FaceObservation, ...] = ()
        self._markers: tuple[Marker, ...] = ()
        self.last_error: str | None = None

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        name: str,
        class_label: str = "",
        source: Source = "live",
        min_neighbors: int | None = None,
        smoothing: float | None = None,
        classifier: EmotionClassifier | None = None,
        store: Store | None = None,
        detect_every: int | None = None,
        started_at: datetime | None = None,
        recorded_at: datetime | None = None,
    ) -> LiveSession:
        """A session on the configured database and model (both loaded once per process)."""
        settings = settings or get_settings()
        params = DetectorParams.from_settings(settings)
        if min_neighbors is not None:
            params = replace(params, min_neighbors=min_neighbors)
        classifier = classifier or classifier_for(settings)
        return cls(
            store or store_for(settings),
            classifier,
            name=name,
            class_label=class_label,
            source=source,
            settings=settings,
            detector_params=params,
            smoothing=smoothing,
            detect_every=detect_every,
            started_at=started_at,
            recorded_at=recorded_at,
        )

    # --- video thread -----------------------------------------------------------------------
    def process_frame(self, frame: np.ndarray, now: float | None = None) -> tuple[np.ndarray, list[FaceObservation]]:
        """Analyse a frame; after stop() frames pass through untouched."""
        now = time.time() if now is None else now
        with self._frame_lock:
            if self._stopped:
                return frame, []
            # The boxes show the same "now" as the page's figures (the aggregator's window).
            annotated, faces = self.pipeline.process(frame, now, self.aggregator.now_labels)
            if self.pipeline.result_time is not None:  # pipelined: the previous frame's faces, at its time
                self.aggregator.add(self.pipeline.result_time, faces)
            self._last_faces = tuple(faces)
            if self.aggregator.has_pending:
                self.writer.submit(self.session_id, self.aggregator.drain())
            return annotated, faces

    # --- UI thread ---------------------------------------------------------------------------
    def snapshot(self) -> LiveSnapshot:
        return LiveSnapshot(
            session_id=self.session_id,
            aggregate=self.aggregator.snapshot(),
            tracks=self._last_faces,
            stats=self.pipeline.stats(),
            writer_error=self.writer.last_error or self.last_error,
            writes_dropped=self.writer.dropped + self.aggregator.dropped,
            stopped=self._stopped,
            markers=self._markers,
        )

    def add_marker(self, label: str, now: float | None = None) -> Marker:
        """Drop a lesson marker now (UI thread): stored at once, shown on the live charts.

        Raises ValueError for an empty label and StoreError when it cannot be stored.
        """
        marker = Marker(time.time() if now is None else now, " ".join(str(label).split()))
        self.store.add_marker(self.session_id, marker.t, marker.label)
        self._markers = (*self._markers, marker)  # a new tuple: snapshots never see it change
        return marker

    def provenance(self) -> Provenance:
        """The model and the settings producing this session's figures (as they are now)."""
        classifier = self.pipeline.classifier
        params = self.pipeline.detector.params
        settings: dict[str, SettingValue] = {
            "backend": classifier.backend,
            "temperature": round(float(classifier.temperature), 4),
            "flip_average": bool(classifier.flip_average),
            **{f"detector_{k}": v for k, v in asdict(params).items()},
            "detect_every": self.pipeline.detect_every,
            "smoothing": self.pipeline.tracker.smoothing,
        }
        return Provenance(classifier.model_name, classifier.model_sha256, settings)

    def configure(self, *, min_neighbors: int | None = None, smoothing: float | None = None) -> None:
        """Change detector sensitivity / label smoothing while running (atomic attribute swaps).

        The session's stored settings follow, marked as changed while it ran.
        """
        changed = False
        detector = self.pipeline.detector
        if min_neighbors is not None and min_neighbors != detector.params.min_neighbors:
            detector.params = replace(detector.params, min_neighbors=min_neighbors)
            changed = True
        tracker = self.pipeline.tracker
        if smoothing is not None and smoothing != tracker.smoothing:
            if not 0.0 <= smoothing < 1.0:
                raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
            tracker.smoothing = smoothing
            changed = True
        if changed:
            try:
                self.store.record_settings(self.session_id, {**self.provenance().settings,
                                                             "changed_while_running": True})
            except StoreError as exc:  # the page shows it; the stream goes on
                self.last_error = str(exc)

    def stop(self, status: str = "completed", ended_at: datetime | None = None) -> SessionSummary:
        """Close the session with its summary and flush everything (idempotent, any thread)."""
        with self._frame_lock:
            if self._stopped:
                assert self._summary is not None
                return self._summary
            self._stopped = True
            if self.pipeline.has_pending:  # pipelined: the last frame's faces
                last = self.pipeline.flush()
                self.aggregator.add(self.pipeline.result_time, last)
            self.pipeline.close()
            self.aggregator.close()
            self._summary = self.aggregator.summary()
            self.writer.submit(self.session_id, self.aggregator.drain())
        self.writer.close()
        if self.writer.last_error:
            self.last_error = self.writer.last_error
        try:
            self.store.close_session(
                self.session_id,
                faces_seen=self._summary.faces_seen,
                dominant_emotion=self._summary.dominant_emotion,
                frames_analysed=self._summary.frames_analysed,
                status=status,
                ended_at=ended_at or datetime.now(UTC),
            )
        except StoreError as exc:  # the page shows it; stopping must not raise into the UI
            self.last_error = str(exc)
            log.warning("could not close session %s: %s", self.session_id, exc)
        return self._summary

    @property
    def stopped(self) -> bool:
        return self._stopped
