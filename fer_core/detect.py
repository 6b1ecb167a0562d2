"""Haar face detection tuned for webcam frames of a class.

Detection is the most expensive stage of the live pipeline (tens of ms per frame
against ~1 ms per face for the int8 classifier), so it runs on a grayscale copy
of the frame downscaled to `detect_width` and the boxes are mapped back to full
resolution. Defaults were measured on the group photos: `python -m fer_core.detector_eval`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fer_core.preprocess import to_gray

if TYPE_CHECKING:
    from fer_core.settings import Settings

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# The frontal-face cascade's training window: nothing smaller can be found.
HAAR_WINDOW = 24


@dataclass(frozen=True)
class DetectorParams:
    """Defaults measured by `python -m fer_core.detector_eval` (pooled over clean, 640-wide and noisy
    frames of the group photos: recall 0.88, precision 0.98; scale 1.1 finds ~3% more faces at twice
    the cost and 3-4x the false boxes on noisy frames). Settings carries the same defaults."""

    detect_width: int = 640
    scale_factor: float = 1.2
    min_neighbors: int = 3
    min_face_fraction: float = 0.05
    min_confidence: float = 1.0
    # Histogram equalisation measured no better overall (worse at scale 1.2); kept as an option.
    equalize: bool = False

    def __post_init__(self) -> None:
        # Fail at construction, not on the first frame in the video thread.
        if self.detect_width < HAAR_WINDOW:
            raise ValueError(f"detect_width must be >= {HAAR_WINDOW}, got {self.detect_width}")
        if not 1.0 < self.scale_factor <= 2.0:
            raise ValueError(f"scale_factor must be in (1, 2], got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")
        if not 0.0 < self.min_face_fraction < 1.0:
            raise ValueError(f"min_face_fraction must be in (0, 1), got {self.min_face_fraction}")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorParams:
        return cls(
            detect_width=settings.detect_width,
            scale_factor=settings.scale_factor,
            min_neighbors=settings.min_neighbors,
            min_face_fraction=settings.min_face_fraction,
            min_confidence=settings.min_face_confidence,
        )


@dataclass(frozen=True)
class FaceBox:
    """A face in full-resolution frame pixels; `confidence` is the Haar last-stage level weight."""

    x: int
    y: int
    w: int
    h: int
    confidence: float = 0.0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    @property
    def area(self) -> int:
        return self.w * self.h


def iou(a: FaceBox | tuple[int, int, int, int], b: FaceBox | tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a.as_tuple() if isinstance(a, FaceBox) else a
    bx, by, bw, bh = b.as_tuple() if isinstance(b, FaceBox) else b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def cascade_path() -> Path:
    path = Path(cv2.data.haarcascades) / CASCADE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Haar cascade not found: {path} (is opencv-python-headless 4.x installed?)")
    return path


class HaarFaceDetector:
    """OpenCV Haar cascade with downscaling, equalisation and a confidence per box.

    `cv2.CascadeClassifier` is not thread-safe, so every detector owns its own
    cascade and serialises calls to it with a lock; give each session its own detector.
    """

    def __init__(self, params: DetectorParams | None = None) -> None:
        self.params = params or DetectorParams()
        self._cascade = cv2.CascadeClassifier(str(cascade_path()))
        if self._cascade.empty():
            raise RuntimeError(f"cannot load Haar cascade {cascade_path()}")
        self._lock = threading.Lock()

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        """Faces in a BGR, BGRA or gray frame of any size; [] for frames too small to hold one."""
        if frame is None or frame.ndim not in (2, 3) or frame.shape[0] < HAAR_WINDOW or frame.shape[1] < HAAR_WINDOW:
            return []
        p = self.params
        gray = to_gray(frame)
        height, width = gray.shape
        # Never upscale: it costs time and Haar finds nothing extra in interpolated pixels.
        scale = min(1.0, p.detect_width / width)
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if p.equalize:
            small = cv2.equalizeHist(small)
        min_side = max(HAAR_WINDOW, round(p.min_face_fraction * small.shape[0]))
        if min_side > min(small.shape):
            return []
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                small,
                scaleFactor=p.scale_factor,
                minNeighbors=p.min_neighbors,
                minSize=(min_side, min_side),
                outputRejectLevels=True,
            )
        if len(rects) == 0:
            return []
        boxes: list[FaceBox] = []
        inv = 1.0 / scale
        for (x, y, w, h), weight in zip(np.asarray(rects), np.asarray(weights).reshape(-1), strict=True):
            if float(weight) < p.min_confidence:
                continue
            # Map back to full resolution and clip so crops never leave the frame.
            x0 = max(0, round(x * inv))
            y0 = max(0, round(y * inv))
            x1 = min(width, round((x + w) * inv))
            y1 = min(height, round((y + h) * inv))
            if x1 > x0 and y1 > y0:
                boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0, float(weight)))
        return boxes
