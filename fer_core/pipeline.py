"""One frame in, an annotated frame and the faces in it out: detect -> classify -> track -> draw.

Three levers keep it real-time, each a constructor argument:
- `detect_every`: detection runs on every k-th frame; the frames in between reuse the tracks
  from the last detection ("coasting": no detection, no classification).
- `full_scan_every`: detection guided by the tracks. A full scan of the frame (tens of ms)
  runs on every n-th detection frame, when there is no track to follow, and as soon as half of
  the faces found by the last detection are not found again near their places (on that frame); the
  detection frames in between search only around the current tracks, for faces of about their
  size (`HaarFaceDetector.detect_near`, a few ms). New faces are found by the full scans.
- `pipelined`: detection of frame t+1 runs on a worker thread while frame t is classified and
  tracked, so both cores work. `process()` then returns the faces of the previous frame (one
  frame of latency; drawn on the current frame), and `flush()` hands out the last frame's.
All faces of a frame go through one classifier call, which may block (a shared, batching
classifier called from many streams). Odd frames (gray, BGRA, tiny, huge, float,
non-contiguous) never raise.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from fer_core.classify import EmotionClassifier
from fer_core.detect import DetectorParams, FaceBox, iou
from fer_core.emotions import EMOTION_COLORS, NUM_EMOTIONS
from fer_core.preprocess import crop_faces, to_gray
from fer_core.track import FaceTracker, Track

STAGES: tuple[str, ...] = ("detect", "classify", "track", "annotate")
FPS_WINDOW = 30  # frames over which the analysed-frames/s figure is measured
EMA_ALPHA = 0.1  # weight of the newest frame in the "recent" stage times
SAME_PLACE_IOU = 0.5  # two boxes to search around that overlap this much are one place
SEARCH_MISSED_FOR = 3  # detections a missed face is still searched for near its place


class FaceDetector(Protocol):
    """What the pipeline needs of a detector (HaarFaceDetector; test doubles)."""

    params: DetectorParams

    def detect(self, frame: np.ndarray) -> list[FaceBox]: ...

    def detect_near(self, frame: np.ndarray, around: Sequence[FaceBox]) -> list[FaceBox]: ...


@dataclass(frozen=True)
class _Detection:
    """One detection frame, detected and waiting to be classified and tracked."""

    gray: np.ndarray
    boxes: list[FaceBox]
    now: float
    full: bool
    seconds: float


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return (b, g, r)


EMOTION_BGR: dict[str, tuple[int, int, int]] = {e: _bgr(c) for e, c in EMOTION_COLORS.items()}


@dataclass(frozen=True, eq=False)
class FaceObservation:
    """A face in one processed frame; `fresh` is False when carried over between detections."""

    track_id: int
    box: FaceBox
    probs: np.ndarray  # (7,) smoothed, read-only
    label: str
    confidence: float
    time_in_view: float
    fresh: bool

    @classmethod
    def from_track(cls, track: Track, fresh: bool) -> FaceObservation:
        return cls(track.track_id, track.box, track.probs, track.label, track.confidence, track.time_in_view, fresh)


@dataclass(frozen=True)
class PipelineStats:
    frames: int
    detect_frames: int  # frames on which detection ran
    faces_classified: int
    mean_ms: dict[str, float]  # per stage, averaged over all processed frames (pipelined: detect overlaps)
    recent_ms: dict[str, float]  # per stage, exponential average over recent frames
    analysed_fps: float  # processed frames per wall-clock second, over the last FPS_WINDOW frames
    full_scans: int = 0  # detection frames that scanned the whole frame (the others searched near tracks)

    @property
    def mean_total_ms(self) -> float:
        return sum(self.mean_ms.values())


def as_bgr(frame: np.ndarray | None) -> np.ndarray | None:
    """Any image array -> contiguous 3-channel uint8 BGR, or None if it is not an image."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
        return None
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        return None
    if frame.dtype != np.uint8:
        values = np.nan_to_num(frame.astype(np.float32))
        if np.issubdtype(frame.dtype, np.floating) and values.max(initial=0.0) <= 1.0:
            values = values * 255.0  # float images in 0..1
        frame = np.clip(values, 0, 255).astype(np.uint8)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(frame.reshape(frame.shape[:2])), cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


class FaceLabel(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def confidence(self) -> float: ...


NEUTRAL_BGR = (200, 200, 200)


def draw_faces(frame: np.ndarray, faces: list[FaceObservation],
               labels: Mapping[int, FaceLabel] | None = None) -> None:
    """Draw each box with "#id label NN%" in its emotion's colour, in place.

    `labels` (track id -> label): draw these instead of each face's own frame label, so that the
    video shows the live page's "now" (a face not in it yet gets its number only).
    """
    height, width = frame.shape[:2]
    scale = max(0.4, min(width, height) / 900.0)  # text stays readable on small and 4K frames
    thickness = max(1, round(scale * 2))
    for face in faces:
        x, y, w, h = face.box.as_tuple()
        shown: FaceLabel | None = face if labels is None else labels.get(face.track_id)
        colour = EMOTION_BGR.get(shown.label, NEUTRAL_BGR) if shown is not None else NEUTRAL_BGR
        cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        text = f"#{face.track_id}" + (f" {shown.label} {shown.confidence:.0%}" if shown is not None else "")
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y - th - baseline - 4 if y - th - baseline - 4 >= 0 else y + h  # above the box, else below
        top = min(max(0, top), max(0, height - th - baseline - 4))
        cv2.rectangle(frame, (x, top), (min(width - 1, x + tw + 4), top + th + baseline + 4), colour, cv2.FILLED)
        cv2.putText(frame, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)


class FramePipeline:
    """Per-session: owns (a reference to) one detector and one tracker; the classifier may be shared.

    `process()` is called by one thread at a time (the session's video thread); `stats()` from any.
    """

    def __init__(
        self,
        detector: FaceDetector,
        classifier: EmotionClassifier,
        tracker: FaceTracker,
        detect_every: int = 2,
        annotate: bool = True,
        *,
        full_scan_every: int = 1,
        pipelined: bool = False,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if full_scan_every < 1:
            raise ValueError(f"full_scan_every must be >= 1, got {full_scan_every}")
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.detect_every = detect_every
        self.full_scan_every = full_scan_every
        self.pipelined = pipelined
        self.annotate = annotate
        self._calls = 0
        self._since_full = 0  # detection frames since the last full scan
        # When the last few detections ran: a track missed by all of them is left to the full scans.
        self._detected_at: deque[float] = deque(maxlen=SEARCH_MISSED_FOR)
        self._pending: _Detection | None = None  # pipelined: detected, not yet classified
        # The `now` of the frame whose faces process()/flush() returned last; None: that call returned
        # only carried-over faces to draw, its own frame's come with the next call.
        self.result_time: float | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards the stats only
        self._frames = 0
        self._detect_frames = 0
        self._full_scans = 0
        self._faces_classified = 0
        self._total = dict.fromkeys(STAGES, 0.0)
        self._recent = dict.fromkeys(STAGES, 0.0)
        self._stamps: deque[float] = deque(maxlen=FPS_WINDOW)

    def process(self, frame: np.ndarray, now: float,
                labels: Mapping[int, FaceLabel] | None = None) -> tuple[np.ndarray, list[FaceObservation]]:
        """Analyse one frame taken at `now` (seconds); return (annotated BGR frame, faces).

        Pipelined, the faces are those of the previous frame (for the first, only carried-over tracks);
        `result_time` says which frame they describe. `labels`: what to write on each box (see
        `draw_faces`); default: each face's own label.
        """
        bgr = as_bgr(frame)
        if bgr is None:
            return frame, []
        timings = dict.fromkeys(STAGES, 0.0)
        detect_now = self._calls % self.detect_every == 0
        self._calls += 1
        job: Future[_Detection] | None = None
        detection: _Detection | None = None
        full: bool | None = None  # None: no detection on this frame
        if detect_now:
            gray = to_gray(bgr)
            full, around, fresh = self._plan()
            if self.pipelined:
                job = self._worker().submit(self._detect, gray, now, full, around, fresh)
            else:
                detection = self._detect(gray, now, full, around, fresh)
        faces: list[FaceObservation] | None = None
        classified = 0
        self.result_time = now
        if self._pending is not None:  # the previous frame's detection, classified while this one is detected
            pending, self._pending = self._pending, None
            faces = self._finish(pending, timings)
            classified = len(pending.boxes)
            self.result_time = pending.now
        if job is not None:
            detection = self._pending = job.result()
        elif detection is not None:
            faces = self._finish(detection, timings)
            classified = len(detection.boxes)
        if detection is not None:
            timings["detect"] = detection.seconds
            full = detection.full
        if faces is None:
            start = time.perf_counter()
            faces = [FaceObservation.from_track(t, False) for t in self.tracker.coast(now)]
            timings["track"] += time.perf_counter() - start
            if job is not None:
                self.result_time = None  # only carried-over faces to draw: this frame's come next call

        start = time.perf_counter()
        if self.annotate:
            out = bgr.copy() if bgr is frame else bgr  # never draw on the caller's array
            draw_faces(out, faces, labels)
        else:
            out = bgr
        timings["annotate"] = time.perf_counter() - start
        self._record(timings, full, classified)
        return out, faces

    @property
    def has_pending(self) -> bool:
        """Pipelined: a detected frame waits to be classified (`flush()` hands out its faces)."""
        return self._pending is not None

    def flush(self) -> list[FaceObservation]:
        """Pipelined: classify and track the last detected frame and return its faces ([] if none waits)."""
        if self._pending is None:
            return []
        pending, self._pending = self._pending, None
        timings = dict.fromkeys(STAGES, 0.0)
        faces = self._finish(pending, timings)
        self.result_time = pending.now
        with self._lock:
            self._faces_classified += len(pending.boxes)
        return faces

    def close(self) -> None:
        """Stop the detection worker (idempotent); a pipelined pipeline starts a new one if used again."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    # --- detection: where to look ---------------------------------------------------------------
    def _plan(self) -> tuple[bool, list[FaceBox], int]:
        """(full scan?, boxes to search around, how many of them were found last time).

        The boxes are the detected, not yet tracked faces (pipelined) and the current tracks, freshest
        first, one per place; those found by the last detection come first.
        """
        if self.full_scan_every == 1:
            return True, [], 0
        last = self.tracker.last_update
        detected_at = list(self._detected_at) + ([self._pending.now] if self._pending is not None else [])
        recent = detected_at[-SEARCH_MISSED_FOR] if len(detected_at) >= SEARCH_MISSED_FOR else -math.inf
        tracks = sorted((t for t in self.tracker.active_tracks() if t.last_seen >= recent),
                        key=lambda t: t.last_seen, reverse=True)
        # The faces of the last detection: pipelined, the one still waiting; else the tracks it updated.
        if self._pending is not None:
            fresh_boxes = list(self._pending.boxes)
        else:
            fresh_boxes = [t.box for t in tracks if t.last_seen == last]
        around: list[FaceBox] = []
        fresh = 0
        for k, box in enumerate(fresh_boxes + [t.box for t in tracks]):
            if all(iou(box, kept) < SAME_PLACE_IOU for kept in around):
                around.append(box)
                fresh += int(k < len(fresh_boxes))
        full = not around or self._since_full + 1 >= self.full_scan_every
        self._since_full = 0 if full else self._since_full + 1
        return full, [] if full else around, fresh

    def _detect(self, gray: np.ndarray, now: float, full: bool, around: list[FaceBox], fresh: int) -> _Detection:
        """A full scan, or a search near `around` that turns into a full scan of this same frame when at
        least half of the faces found last time (the first `fresh` boxes; at least one) are not found
        again: the scene changed (a cut, a camera move, people leaving), so others may have arrived.
        A single face lost among many waits for the next regular full scan (Haar flickers)."""
        start = time.perf_counter()
        if full:
            boxes = self.detector.detect(gray)
        else:
            boxes = self.detector.detect_near(gray, around)
            missed = sum(all(iou(box, b) < self.tracker.iou_threshold for b in boxes) for box in around[:fresh])
            if missed and 2 * missed >= fresh:
                boxes, full = self.detector.detect(gray), True
                self._since_full = 0
        return _Detection(gray, boxes, now, full, time.perf_counter() - start)

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classmood-detect")
        return self._executor

    # --- classification and tracking ---------------------------------------------------------------
    def _finish(self, detection: _Detection, timings: dict[str, float]) -> list[FaceObservation]:
        """Classify a detection's faces in one call and update the tracks; the faces of that frame."""
        boxes = detection.boxes
        start = time.perf_counter()
        if boxes:
            batch = crop_faces(detection.gray, [b.as_tuple() for b in boxes])
            probs = np.asarray(self.classifier.predict(batch), dtype=np.float64)  # one call for all faces
            if probs.shape != (len(boxes), NUM_EMOTIONS):
                raise ValueError(f"classifier returned {probs.shape} for {len(boxes)} faces")
        else:
            probs = np.empty((0, NUM_EMOTIONS))
        timings["classify"] += time.perf_counter() - start

        start = time.perf_counter()
        tracks = self.tracker.update(boxes, probs, detection.now)
        self._detected_at.append(detection.now)
        timings["track"] += time.perf_counter() - start
        return [FaceObservation.from_track(t, True) for t in tracks]

    def _record(self, timings: dict[str, float], full: bool | None, classified: int) -> None:
        """`full`: None on a frame without detection, else whether it was a full scan."""
        with self._lock:
            self._frames += 1
            self._detect_frames += int(full is not None)
            self._full_scans += int(bool(full))
            self._faces_classified += classified
            for stage, seconds in timings.items():
                ms = 1000.0 * seconds
                self._total[stage] += ms
                # Stages that did not run this frame count as 0 ms: "cost per frame", like the mean.
                previous = ms if self._frames == 1 else self._recent[stage]
                self._recent[stage] = (1 - EMA_ALPHA) * previous + EMA_ALPHA * ms
            self._stamps.append(time.perf_counter())

    def stats(self) -> PipelineStats:
        with self._lock:
            frames = self._frames
            fps = 0.0
            if len(self._stamps) >= 2 and self._stamps[-1] > self._stamps[0]:
                fps = (len(self._stamps) - 1) / (self._stamps[-1] - self._stamps[0])
            return PipelineStats(
                frames=frames,
                detect_frames=self._detect_frames,
                faces_classified=self._faces_classified,
                mean_ms={s: (self._total[s] / frames if frames else 0.0) for s in STAGES},
                recent_ms=dict(self._recent),
                analysed_fps=fps,
                full_scans=self._full_scans,
            )
