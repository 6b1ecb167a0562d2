"""One server process's part of an online class: its students' streams, their sums, and the database.

Threads:
- each student's video thread calls `StudentStream.process()`: the pipeline at the class's analysis
  rate and an in-memory add; never the database;
- the page's script thread calls `ClassHub.join()` and `StudentStream.leave()`;
- one flusher thread per hub writes completed seconds (`class_partials`), heartbeats of the
  students still sending frames, and leaves, every `flush_interval_s`, and notices when the class
  has ended (from any process: the database is the meeting point).
All students of a process share one classifier, normally a `BatchingClassifier`, so their faces go
through the model together.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from fer_core.class_store import ClassInfo, ClassStore
from fer_core.classify import EmotionClassifier
from fer_core.classroom import ClassAccumulator, ClassSecond
from fer_core.detect import DetectorParams, HaarFaceDetector
from fer_core.pipeline import FramePipeline
from fer_core.track import FaceTracker

if TYPE_CHECKING:
    from fer_core.settings import Settings

log = logging.getLogger(__name__)

# This process, as the class tables name it: host, pid and a random part (a pid is reused after a restart).
INSTANCE = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
MAX_PENDING_SECONDS = 3_600  # an hour of this process's sums waiting for a database that is down
STATUS_EVERY_S = 2.0
IDLE_EXIT_S = 60.0  # a hub with no student for this long stops; the next join starts a new one


@dataclass(frozen=True)
class StreamSettings:
    """How each student's frames are analysed."""

    analysis_fps: float
    detector: DetectorParams
    smoothing: float
    track_max_age_s: float
    detect_every: int = 1
    full_scan_every: int = 1  # >1: search near the tracked faces between full scans (FramePipeline)

    @classmethod
    def from_settings(cls, settings: Settings, analysis_fps: float | None = None) -> StreamSettings:
        return cls(
            analysis_fps=settings.class_analysis_fps if analysis_fps is None else analysis_fps,
            detector=DetectorParams.from_settings(settings),
            smoothing=settings.smoothing,
            track_max_age_s=settings.track_max_age_s,
            full_scan_every=settings.full_scan_every,
        )


def browser_hash(salt: str, browser_key: str) -> str:
    """What the database keeps of a browser: a hash salted per class, so classes cannot be linked."""
    return hashlib.sha256(f"{salt}:{browser_key}".encode()).hexdigest()


class StudentStream:
    """One joined browser's stream in this process."""

    def __init__(self, hub: ClassHub, member_id: int, stream_id: int, pipeline: FramePipeline,
                 interval_s: float) -> None:
        self.hub = hub
        self.member_id = member_id
        self.stream_id = stream_id
        self.pipeline = pipeline
        self.interval_s = interval_s
        self.left = False
        self.last_frame_at: float | None = None
        self._next_analysis = 0.0
        self.frames_received = 0
        self.frames_analysed = 0

    def process(self, frame: np.ndarray, now: float | None = None) -> None:
        """A frame from the student's camera (video thread). Analysed at most `analysis_fps` times a second."""
        now = time.time() if now is None else now
        if self.left or self.hub.ended:
            return
        self.frames_received += 1
        self.last_frame_at = now
        accumulator = self.hub.accumulator
        accumulator.frame_seen(self.stream_id, now)
        if now < self._next_analysis:
            return
        # On schedule: the next slot, so the rate is analysis_fps whatever the camera's rate; late: from now.
        late = now - self._next_analysis >= self.interval_s
        self._next_analysis = (now if late else self._next_analysis) + self.interval_s
        _, faces = self.pipeline.process(frame, now)
        self.frames_analysed += 1
        accumulator.add(self.stream_id, now, faces)

    def leave(self) -> None:
        """The student left (Leave, tab closed, camera stopped); the hub records it at its next flush."""
        self.left = True


class ClassHub:
    def __init__(
        self,
        class_store: ClassStore,
        info: ClassInfo,
        classifier: EmotionClassifier,
        stream_settings: StreamSettings,
        *,
        flush_interval_s: float = 1.0,
        member_timeout_s: float = 5.0,
        instance: str = INSTANCE,
    ) -> None:
        self.class_store = class_store
        self.info = info
        self.classifier = classifier
        self.stream_settings = stream_settings
        self.flush_interval_s = flush_interval_s
        self.member_timeout_s = member_timeout_s
        self.instance = instance
        self.accumulator = ClassAccumulator()
        self._lock = threading.Lock()
        self._streams: list[StudentStream] = []
        self._ids = itertools.count(1)
        self._pending: list[ClassSecond] = []
        self.ended = not info.is_open
        self.last_error: str | None = None
        self.seconds_written = 0
        self.seconds_dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"classmood-class-{info.id}", daemon=True)
        self._thread.start()

    @property
    def class_id(self) -> int:
        return self.info.id

    # --- script thread ---------------------------------------------------------------------------
    def join(self, browser_key: str) -> StudentStream:
        """Register a browser (raises a ClassError saying why it cannot join) and give it a stream."""
        member_id = self.class_store.join(
            self.class_id, browser_hash(self.info.salt, browser_key), self.instance,
            member_timeout_s=self.member_timeout_s)
        s = self.stream_settings
        pipeline = FramePipeline(
            HaarFaceDetector(s.detector), self.classifier,
            FaceTracker(max_age_s=s.track_max_age_s, smoothing=s.smoothing),
            detect_every=s.detect_every, annotate=False, full_scan_every=s.full_scan_every,
        )
        stream = StudentStream(self, member_id, next(self._ids), pipeline, 1.0 / s.analysis_fps)
        with self._lock:
            self._streams.append(stream)
        return stream

    def streams(self) -> list[StudentStream]:
        with self._lock:
            return list(self._streams)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is left and stop the flusher (idempotent)."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- flusher thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        next_status = 0.0
        idle_since = time.monotonic()
        while True:
            stopping = self._stop.wait(self.flush_interval_s)
            now = time.time()
            try:
                if now >= next_status or stopping:
                    self._check_status()
                    next_status = now + STATUS_EVERY_S
                self.flush(now, final=stopping or self.ended)
                self.last_error = None
            except Exception as exc:  # the database may be down: keep the sums, try again next time
                self.last_error = str(exc)
                log.warning("class %s: %s", self.class_id, exc)
            if self._streams or self._pending:
                idle_since = time.monotonic()
            if stopping or (not self._streams and not self._pending
                            and (self.ended or time.monotonic() - idle_since > IDLE_EXIT_S)):
                return

    def _check_status(self) -> None:
        if not self.ended:
            info = self.class_store.get_class(self.class_id)
            self.ended = not info.is_open

    def flush(self, now: float, final: bool = False) -> None:
        """Write completed seconds, heartbeats and leaves (the flusher thread, or a test)."""
        seconds = self.accumulator.drain(now + (10.0 if final else 0.0))
        if seconds:
            self._pending.extend(seconds)
            if len(self._pending) > MAX_PENDING_SECONDS:
                self.seconds_dropped += len(self._pending) - MAX_PENDING_SECONDS
                self._pending = self._pending[-MAX_PENDING_SECONDS:]
        if self._pending:
            self.class_store.add_partials(self.class_id, self.instance, self._pending)
            self.seconds_written += len(self._pending)
            self._pending = []
        with self._lock:
            gone = [s for s in self._streams if s.left or (final and self.ended)]
            live = [s for s in self._streams if s not in gone and s.last_frame_at is not None
                    and now - s.last_frame_at < self.member_timeout_s / 2]
            self._streams = [s for s in self._streams if s not in gone]
        stamp = datetime.fromtimestamp(now, tz=UTC)
        self.class_store.heartbeat([s.member_id for s in live], stamp)
        self.class_store.leave([s.member_id for s in gone], stamp)


_hubs: dict[tuple[str, int], ClassHub] = {}
_hubs_lock = threading.Lock()


def hub_for(class_store: ClassStore, info: ClassInfo, classifier: EmotionClassifier,
            stream_settings: StreamSettings, *, flush_interval_s: float = 1.0,
            member_timeout_s: float = 5.0) -> ClassHub:
    """This process's hub for a class (one per database and class), started on first use."""
    key = (str(class_store.store.url), info.id)
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None or not hub.alive:
            hub = _hubs[key] = ClassHub(class_store, info, classifier, stream_settings,
                                        flush_interval_s=flush_interval_s, member_timeout_s=member_timeout_s)
        return hub


def close_all_hubs() -> None:
    """Flush and stop every hub of this process (shutdown, tests)."""
    with _hubs_lock:
        hubs = list(_hubs.values())
        _hubs.clear()
    for hub in hubs:
        hub.close()
