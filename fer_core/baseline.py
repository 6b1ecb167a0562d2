"""ClassMood against `fer`'s detector settings, on the same frames, in the same run.

`fer` (the most used emotion package) runs OpenCV's frontal Haar cascade on every full-resolution
frame with scale 1.1, 5 neighbours and faces from 50 px (`fer_core.detect.FER_SETTINGS`). Its
detection alone is the baseline here: its frames/s are an upper bound for `fer` itself, which also
runs its CNN on every face. Both sides see every frame, interleaved frame by frame in one process
(which side goes first alternates), so a machine busy with other work slows both alike.

Counted per side: analysed frames/s (frames / summed per-frame wall time), frames where a face was
found, faces found (faces detected on that very frame; a pipeline's faces carried over between
detections do not count), and, when the clip has ground truth, how many of those match a real face.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from fer_core.detect import FER_SETTINGS, FaceBox, HaarFaceDetector
from fer_core.detector_eval import DEFAULT_IOU, match_count
from fer_core.pipeline import FramePipeline

Box = tuple[int, int, int, int]
CAMERA_FPS = 30.0  # the `now` given to pipelines: frames of a 30 fps camera


@dataclass
class Tally:
    """What one side found on a clip, and how long it took per frame."""

    label: str
    seconds: list[float] = field(default_factory=list)
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    truth: int = 0  # ground-truth faces in the counted frames (0: the clip has none)
    hits: int = 0  # found faces that match a ground-truth face (IoU >= 0.3, one to one)
    full_scans: int | None = None  # pipelines: detection frames that scanned the whole frame

    def count(self, found: Sequence[FaceBox], truth: Sequence[Box] | None) -> None:
        self.frames += 1
        self.frames_with_face += int(len(found) > 0)
        self.faces += len(found)
        if truth is not None:
            self.truth += len(truth)
            self.hits += match_count(truth, found, DEFAULT_IOU)

    @property
    def fps(self) -> float:
        return len(self.seconds) / sum(self.seconds) if self.seconds else 0.0

    @property
    def ms_p95(self) -> float:
        return 1000 * float(np.percentile(self.seconds, 95)) if self.seconds else float("nan")

    @property
    def ms_median(self) -> float:
        return 1000 * statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def precision(self) -> float | None:
        return self.hits / self.faces if self.truth and self.faces else None


class Side:
    """One contender: `step()` takes frame i and returns the (frame index, faces) results now ready.

    `cv_threads`: OpenCV's thread count while this side runs (None: OpenCV's default).
    """

    def __init__(self, label: str) -> None:
        self.tally = Tally(label)
        self.cv_threads: int | None = None

    def step(self, index: int, frame: np.ndarray) -> list[tuple[int, list[FaceBox]]]:
        raise NotImplementedError

    def finish(self) -> list[tuple[int, list[FaceBox]]]:
        return []


class FerSettingsSide(Side):
    """`fer`'s detector settings as a mode of our own detector: detection only, every frame."""

    def __init__(self, label: str = "fer settings, detection only") -> None:
        super().__init__(label)
        self.detector = HaarFaceDetector(FER_SETTINGS)

    def step(self, index: int, frame: np.ndarray) -> list[tuple[int, list[FaceBox]]]:
        return [(index, self.detector.detect(frame))]


class PipelineSide(Side):
    """A whole FramePipeline (detection, classification, tracking, drawing) on every frame.

    A frame counts the faces detected on it; coasted frames (detect_every > 1) find none. Pipelined,
    the faces returned with frame i are frame i-1's, and the last frame's come from `flush()`.
    """

    def __init__(self, label: str, pipeline: FramePipeline) -> None:
        super().__init__(label)
        self.pipeline = pipeline
        self._last = -1

    def step(self, index: int, frame: np.ndarray) -> list[tuple[int, list[FaceBox]]]:
        _annotated, faces = self.pipeline.process(frame, index / CAMERA_FPS)
        self._last = index
        fresh = [f.box for f in faces if f.fresh]
        if not self.pipeline.pipelined:
            return [(index, fresh)]
        return [(index - 1, fresh)] if index > 0 else []

    def finish(self) -> list[tuple[int, list[FaceBox]]]:
        flushed = [f.box for f in self.pipeline.flush()]
        self.tally.full_scans = self.pipeline.stats().full_scans
        self.pipeline.close()
        return [(self._last, flushed)] if self.pipeline.pipelined and self._last >= 0 else []


def compare(frames: Iterable[tuple[np.ndarray, Sequence[Box] | None]], sides: Sequence[Side],
            warmup: int = 3) -> list[Tally]:
    """Run every side on every frame, interleaved; time and count from frame `warmup` on."""
    truths: dict[int, Sequence[Box] | None] = {}
    default_threads = cv2.getNumThreads()
    try:
        for index, (frame, truth) in enumerate(frames):
            truths[index] = truth
            for k in range(len(sides)):
                side = sides[(index + k) % len(sides)]  # each side goes first in turn
                cv2.setNumThreads(default_threads if side.cv_threads is None else side.cv_threads)
                start = time.perf_counter()
                ready = side.step(index, frame)
                elapsed = time.perf_counter() - start
                if index >= warmup:
                    side.tally.seconds.append(elapsed)
                _count(side, ready, truths, warmup)
        for side in sides:
            _count(side, side.finish(), truths, warmup)
    finally:
        cv2.setNumThreads(default_threads)
    return [side.tally for side in sides]


def _count(side: Side, ready: list[tuple[int, list[FaceBox]]], truths: dict[int, Sequence[Box] | None],
           warmup: int) -> None:
    for index, found in ready:
        if index >= warmup:
            side.tally.count(found, truths[index])
