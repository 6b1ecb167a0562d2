"""Deterministic test doubles shared by unit and integration tests (no TensorFlow, no model files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fer_core.aggregate import Bucket, buckets_frame
from fer_core.classify import EmotionClassifier
from fer_core.detect import DetectorParams, FaceBox
from fer_core.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS


def onehot(label: str, p: float = 0.9) -> np.ndarray:
    probs = np.full(NUM_EMOTIONS, (1.0 - p) / (NUM_EMOTIONS - 1), dtype=np.float32)
    probs[EMOTION_INDEX[label]] = p
    return probs


BUCKETS_T0 = 1_800_000_000


def make_buckets(
    labels: Sequence[str | None], faces: Sequence[int] | None = None, flagged: set[int] | None = None
) -> pd.DataFrame:
    """A bucket frame as the aggregator makes it: one label per second (None = no face in that second)."""
    out = []
    for k, label in enumerate(labels):
        n = 0 if label is None else (faces[k] if faces else 2)
        shares = np.zeros(NUM_EMOTIONS)
        probs = np.full(NUM_EMOTIONS, np.nan)
        if label is not None:
            shares[EMOTIONS.index(label)] = 1.0
            probs = np.full(NUM_EMOTIONS, 0.1)
            probs[EMOTIONS.index(label)] = 0.4
        out.append(Bucket(BUCKETS_T0 + k, n, 3, 3 * n, tuple(probs), tuple(shares), k in (flagged or set())))
    return buckets_frame(out)


class FakeClassifier(EmotionClassifier):
    """Fixed label, or (label=None) a label chosen by the crop's mean brightness; records batch sizes."""

    backend = "fake"

    def __init__(self, label: str | None = "happy", confidence: float = 0.9) -> None:
        super().__init__(Path("<fake>"), temperature=1.0, flip_average=False)  # its confidences are exactly as given
        self.label = label
        self.confidence = confidence
        self.batch_sizes: list[int] = []

    def _predict(self, faces: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(faces))
        if self.label is not None:
            return np.tile(onehot(self.label, self.confidence), (len(faces), 1))
        index = np.clip((faces.mean(axis=(1, 2, 3)) / 256.0 * NUM_EMOTIONS).astype(int), 0, NUM_EMOTIONS - 1)
        probs = np.full((len(faces), NUM_EMOTIONS), (1.0 - self.confidence) / (NUM_EMOTIONS - 1), dtype=np.float32)
        probs[np.arange(len(faces)), index] = self.confidence
        return probs


class StubDetector:
    """Stands in for HaarFaceDetector: the faces "in the frame" are `boxes` (change them between frames
    to move faces in and out). A full scan (`detect`) finds those inside the frame; a search near boxes
    (`detect_near`) finds only those whose centre lies within the real detector's margin of one of them
    and whose size is within its size ratio. Records every call."""

    def __init__(self, boxes: Sequence[FaceBox] = ()) -> None:
        self.params = DetectorParams()
        self.boxes = list(boxes)
        self.calls: list[tuple[int, ...]] = []  # frame shapes of full scans
        self.near_calls: list[list[FaceBox]] = []  # the boxes each near search was given

    def _in_frame(self, frame: np.ndarray) -> list[FaceBox]:
        h, w = frame.shape[:2]
        return [b for b in self.boxes if b.x + b.w <= w and b.y + b.h <= h]

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        self.calls.append(frame.shape)
        return self._in_frame(frame)

    def detect_near(self, frame: np.ndarray, around: Sequence[FaceBox]) -> list[FaceBox]:
        self.near_calls.append(list(around))
        p = self.params

        def near(face: FaceBox, place: FaceBox) -> bool:
            pad = p.region_margin * place.side
            cx, cy = face.x + face.w / 2, face.y + face.h / 2
            inside = place.x - pad <= cx <= place.x + place.w + pad and place.y - pad <= cy <= place.y + place.h + pad
            return inside and 1 / p.region_size_ratio <= face.side / place.side <= p.region_size_ratio

        return [b for b in self._in_frame(frame) if any(near(b, a) for a in around)]
