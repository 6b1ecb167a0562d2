"""One frame in, an annotated frame and the faces in it out: detect -> classify -> track -> draw.

Detection (tens of ms) runs on every `detect_every`-th frame; the frames in between
reuse the tracks from the last detection ("coasting": no detection, no classification),
which keeps the stream real-time. All faces of a detection frame go through one
classifier call. Odd frames (gray, BGRA, tiny, huge, float, non-contiguous) never raise.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from fer_core.classify import EmotionClassifier
from fer_core.detect import FaceBox, HaarFaceDetector
from fer_core.emotions import EMOTION_COLORS, NUM_EMOTIONS
from fer_core.preprocess import crop_faces, to_gray
from fer_core.track import FaceTracker, Track

STAGES: tuple[str, ...] = ("detect", "classify", "track", "annotate")
FPS_WINDOW = 30  # frames over which the analysed-frames/s figure is measured
EMA_ALPHA = 0.1  # weight of the newest frame in the "recent" stage times


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
    mean_ms: dict[str, float]  # per stage, averaged over all processed frames (so they add up)
    recent_ms: dict[str, float]  # per stage, exponential average over recent frames
    analysed_fps: float  # processed frames per wall-clock second, over the last FPS_WINDOW frames

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
    """Per-session: owns (a reference to) one detector and one tracker; the classifier may be shared."""

    def __init__(
        self,
        detector: HaarFaceDetector,
        classifier: EmotionClassifier,
        tracker: FaceTracker,
        detect_every: int = 2,
        annotate: bool = True,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.detect_every = detect_every
        self.annotate = annotate
        self._calls = 0
        self._lock = threading.Lock()  # guards the stats only
        self._frames = 0
        self._detect_frames = 0
        self._faces_classified = 0
        self._total = dict.fromkeys(STAGES, 0.0)
        self._recent = dict.fromkeys(STAGES, 0.0)
        self._stamps: deque[float] = deque(maxlen=FPS_WINDOW)

    def process(self, frame: np.ndarray, now: float,
                labels: Mapping[int, FaceLabel] | None = None) -> tuple[np.ndarray, list[FaceObservation]]:
        """Analyse one frame taken at `now` (seconds); return (annotated BGR frame, faces).

        `labels`: what to write on each box (see `draw_faces`); default: each face's own label.
        """
        bgr = as_bgr(frame)
        if bgr is None:
            return frame, []
        timings = dict.fromkeys(STAGES, 0.0)
        detect_now = self._calls % self.detect_every == 0
        self._calls += 1
        classified = 0
        if detect_now:
            start = time.perf_counter()
            gray = to_gray(bgr)
            boxes = self.detector.detect(gray)
            timings["detect"] = time.perf_counter() - start

            start = time.perf_counter()
            if boxes:
                batch = crop_faces(gray, [b.as_tuple() for b in boxes])
                probs = np.asarray(self.classifier.predict(batch), dtype=np.float64)  # one call for all faces
                if probs.shape != (len(boxes), NUM_EMOTIONS):
                    raise ValueError(f"classifier returned {probs.shape} for {len(boxes)} faces")
                classified = len(boxes)
            else:
                probs = np.empty((0, NUM_EMOTIONS))
            timings["classify"] = time.perf_counter() - start

            start = time.perf_counter()
            tracks = self.tracker.update(boxes, probs, now)
            timings["track"] = time.perf_counter() - start
        else:
            start = time.perf_counter()
            tracks = self.tracker.coast(now)
            timings["track"] = time.perf_counter() - start
        faces = [FaceObservation.from_track(t, detect_now) for t in tracks]

        start = time.perf_counter()
        if self.annotate:
            out = bgr.copy() if bgr is frame else bgr  # never draw on the caller's array
            draw_faces(out, faces, labels)
        else:
            out = bgr
        timings["annotate"] = time.perf_counter() - start
        self._record(timings, detect_now, classified)
        return out, faces

    def _record(self, timings: dict[str, float], detected: bool, classified: int) -> None:
        with self._lock:
            self._frames += 1
            self._detect_frames += int(detected)
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
            )
