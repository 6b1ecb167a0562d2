"""Haar face detection tuned for webcam frames of a class.

Detection is the most expensive stage of the live pipeline (tens of ms per frame
against ~1 ms per face for the int8 classifier), so it runs on a grayscale copy
of the frame downscaled to `detect_width` and the boxes are mapped back to full
resolution. Defaults were measured on the group photos: `python -m fer_core.detector_eval`.

Two searches: `detect()` scans the whole frame; `detect_near()` looks only around given boxes
(the current tracks), for faces of about their size, which costs a fraction of a full scan.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
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

    detect_width: int | None = 640  # None: detect at full resolution
    scale_factor: float = 1.2
    min_neighbors: int = 3
    min_face_fraction: float = 0.05
    min_confidence: float = 1.0
    # Histogram equalisation measured no better overall (worse at scale 1.2); kept as an option.
    equalize: bool = False
    # Smallest face side in detection pixels, whatever the fraction says. 28 (not the cascade's 24):
    # the same faces found on the group photos, fewer false boxes on the pan/zoom clip, ~10% faster.
    min_face_px: int = 28
    # detect_near(): how far around a box to look (fraction of its side, each way), how much the
    # face may have grown or shrunk since, the scale step there (finer than a full scan's: it is
    # cheap here), the side the face is shrunk to before searching, and the cascade's thresholds
    # there (looser: a face was there a moment ago). Chosen on the pan/zoom clip against fer's
    # settings (`python -m fer_core.bench`); None: as for full scans.
    region_margin: float = 0.35
    region_size_ratio: float = 1.3
    region_scale_factor: float = 1.1
    region_face_px: int = 56
    region_min_neighbors: int | None = 2
    region_min_confidence: float | None = 0.0

    def __post_init__(self) -> None:
        # Fail at construction, not on the first frame in the video thread.
        if self.detect_width is not None and self.detect_width < HAAR_WINDOW:
            raise ValueError(f"detect_width must be >= {HAAR_WINDOW}, got {self.detect_width}")
        if not 1.0 < self.scale_factor <= 2.0:
            raise ValueError(f"scale_factor must be in (1, 2], got {self.scale_factor}")
        if not 1.0 < self.region_scale_factor <= 2.0:
            raise ValueError(f"region_scale_factor must be in (1, 2], got {self.region_scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")
        if not 0.0 < self.min_face_fraction < 1.0:
            raise ValueError(f"min_face_fraction must be in (0, 1), got {self.min_face_fraction}")
        if self.min_face_px < HAAR_WINDOW or self.region_face_px < HAAR_WINDOW:
            raise ValueError(f"min_face_px and region_face_px must be >= {HAAR_WINDOW}")
        if self.region_min_neighbors is not None and self.region_min_neighbors < 0:
            raise ValueError(f"region_min_neighbors must be >= 0, got {self.region_min_neighbors}")
        if self.region_margin < 0 or self.region_size_ratio < 1.0:
            raise ValueError("region_margin must be >= 0 and region_size_ratio >= 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorParams:
        return cls(
            detect_width=settings.detect_width,
            scale_factor=settings.scale_factor,
            min_neighbors=settings.min_neighbors,
            min_face_fraction=settings.min_face_fraction,
            min_confidence=settings.min_face_confidence,
            min_face_px=settings.min_face_px,
        )


# The settings of `fer` (the most used emotion package), as a mode of this detector: scale 1.1,
# 5 neighbours, faces from 50 px, on the full-resolution frame, no confidence filter.
FER_SETTINGS = DetectorParams(detect_width=None, scale_factor=1.1, min_neighbors=5, min_face_fraction=0.01,
                              min_confidence=-math.inf, min_face_px=50, region_min_neighbors=None,
                              region_min_confidence=None)


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
    def side(self) -> float:
        return math.sqrt(self.w * self.h)

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


def suppress_overlaps(boxes: Sequence[FaceBox], max_iou: float = 0.4) -> list[FaceBox]:
    """Boxes by falling confidence, each dropped if it overlaps a kept one by more than `max_iou`."""
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: b.confidence, reverse=True):
        if all(iou(box, k) <= max_iou for k in kept):
            kept.append(box)
    return kept


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
        if not _big_enough(frame):
            return []
        p = self.params
        gray = to_gray(frame)
        height, width = gray.shape
        # Never upscale: it costs time and Haar finds nothing extra in interpolated pixels.
        scale = 1.0 if p.detect_width is None else min(1.0, p.detect_width / width)
        small = _resized(gray, scale)
        min_side = max(p.min_face_px, round(p.min_face_fraction * small.shape[0]))
        if min_side > min(small.shape):
            return []
        return self._scan(small, scale, (0, 0), (width, height), p.scale_factor, min_side, 0)

    def detect_near(self, frame: np.ndarray, around: Sequence[FaceBox]) -> list[FaceBox]:
        """Faces near `around` (full-resolution boxes, e.g. the current tracks) and of about their size.

        Each box's neighbourhood (`region_margin` of its side each way) is searched for faces between
        1/`region_size_ratio` and `region_size_ratio` times its side, with the finer `region_scale_factor`,
        after shrinking it so such a face is about `region_face_px` wide (never enlarging it beyond the
        full scan's scale). A face found from two neighbouring boxes is kept once. Cheap: a few small
        images per box instead of the whole frame at every scale.
        """
        if not _big_enough(frame) or not around:
            return []
        p = self.params
        gray = to_gray(frame)
        height, width = gray.shape
        frame_scale = 1.0 if p.detect_width is None else min(1.0, p.detect_width / width)
        found: list[FaceBox] = []
        for box in around:
            side = box.side
            if side <= 0:
                continue
            pad = p.region_margin * side
            x0, y0 = max(0, math.floor(box.x - pad)), max(0, math.floor(box.y - pad))
            x1, y1 = min(width, math.ceil(box.x + box.w + pad)), min(height, math.ceil(box.y + box.h + pad))
            scale = min(frame_scale, p.region_face_px / side)
            max_side = side * scale * p.region_size_ratio
            if max_side < HAAR_WINDOW or x1 - x0 < side / p.region_size_ratio or y1 - y0 < side / p.region_size_ratio:
                continue  # too small to hold a face, or only a sliver of it is left in the frame
            region = _resized(gray[y0:y1, x0:x1], scale)
            min_side = max(HAAR_WINDOW, round(side * scale / p.region_size_ratio))
            if min_side > min(region.shape):
                continue
            found += self._scan(region, scale, (x0, y0), (width, height), p.region_scale_factor, min_side,
                                math.ceil(max_side), p.region_min_neighbors, p.region_min_confidence)
        return suppress_overlaps(found)

    def _scan(self, image: np.ndarray, scale: float, offset: tuple[int, int], frame_size: tuple[int, int],
              scale_factor: float, min_side: int, max_side: int, min_neighbors: int | None = None,
              min_confidence: float | None = None) -> list[FaceBox]:
        """Run the cascade on `image` (a piece of the frame at `scale`, placed at `offset`); frame boxes."""
        p = self.params
        min_neighbors = p.min_neighbors if min_neighbors is None else min_neighbors
        min_confidence = p.min_confidence if min_confidence is None else min_confidence
        if p.equalize:
            image = cv2.equalizeHist(image)
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                image,
                scaleFactor=scale_factor,
                minNeighbors=min_neighbors,
                minSize=(min_side, min_side),
                maxSize=(max_side, max_side),
                outputRejectLevels=True,
            )
        if len(rects) == 0:
            return []
        boxes: list[FaceBox] = []
        inv = 1.0 / scale
        ox, oy = offset
        width, height = frame_size
        for (x, y, w, h), weight in zip(np.asarray(rects), np.asarray(weights).reshape(-1), strict=True):
            if float(weight) < min_confidence:
                continue
            # Map back to full resolution and clip so crops never leave the frame.
            x0 = max(0, ox + round(x * inv))
            y0 = max(0, oy + round(y * inv))
            x1 = min(width, ox + round((x + w) * inv))
            y1 = min(height, oy + round((y + h) * inv))
            if x1 > x0 and y1 > y0:
                boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0, float(weight)))
        return boxes


def _big_enough(frame: np.ndarray | None) -> bool:
    return frame is not None and frame.ndim in (2, 3) and frame.shape[0] >= HAAR_WINDOW and \
        frame.shape[1] >= HAAR_WINDOW


def _resized(gray: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return gray
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
