"""Anonymous per-session face tracks: IoU matching with Hungarian assignment.

Track numbers are small ints from 1, stable while a face stays in view, and mean
nothing outside the session (no identity, no embeddings: faces are never recognised).

Why not a tracking library: supervision>=0.31 moved ByteTrack into the `trackers`
package, which depends on `opencv-python` (the GUI build; it resolves to OpenCV 5,
which has no CascadeClassifier, and clashes with opencv-python-headless), and
norfair pins numpy<2 while TensorFlow 2.21 needs numpy 2. Faces in a class move
little between analysed frames, so IoU matching solved optimally with
`scipy.optimize.linear_sum_assignment` is enough and costs microseconds.

Each track also smooths its emotion probabilities with an exponential moving
average (`smoothing` = weight of the past), so a one-frame misclassification
does not flip the label shown or counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from fer_core.detect import FaceBox, iou
from fer_core.emotions import EMOTIONS, NUM_EMOTIONS


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Track:
    """An immutable view of a track at one moment; safe to hand to another thread."""

    track_id: int
    box: FaceBox
    probs: np.ndarray  # (7,) smoothed, EMOTIONS order, read-only
    first_seen: float
    last_seen: float
    hits: int

    @property
    def label(self) -> str:
        return EMOTIONS[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probs))

    @property
    def time_in_view(self) -> float:
        return self.last_seen - self.first_seen


@dataclass
class _TrackState:
    track_id: int
    box: FaceBox
    probs: np.ndarray
    first_seen: float
    last_seen: float
    hits: int

    def view(self) -> Track:
        return Track(self.track_id, self.box, _frozen(self.probs), self.first_seen, self.last_seen, self.hits)


class FaceTracker:
    """Not thread-safe: one tracker per session, driven by that session's video thread."""

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.5, smoothing: float = 0.6) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.smoothing = smoothing
        self._tracks: dict[int, _TrackState] = {}
        self._next_id = 1
        self._last_update: float | None = None

    def _expire(self, now: float) -> None:
        stale = [tid for tid, t in self._tracks.items() if now - t.last_seen > self.max_age_s]
        for tid in stale:
            del self._tracks[tid]

    def update(self, boxes: Sequence[FaceBox], probs: np.ndarray, now: float) -> list[Track]:
        """Match this frame's detections to tracks; return their tracks in `boxes` order."""
        probs = np.asarray(probs, dtype=np.float64).reshape(len(boxes), NUM_EMOTIONS)
        self._expire(now)
        self._last_update = now
        live = list(self._tracks.values())
        assigned: dict[int, _TrackState] = {}
        if live and boxes:
            overlaps = np.array([[iou(t.box, b) for b in boxes] for t in live])
            rows, cols = linear_sum_assignment(-overlaps)
            for r, c in zip(rows, cols, strict=True):
                # Hungarian pairs every row; a pair below the threshold is two different faces.
                if overlaps[r, c] >= self.iou_threshold:
                    assigned[int(c)] = live[int(r)]
        seen: list[Track] = []
        for i, box in enumerate(boxes):
            state = assigned.get(i)
            if state is None:
                state = _TrackState(self._next_id, box, probs[i].copy(), now, now, 1)
                self._tracks[state.track_id] = state
                self._next_id += 1
            else:
                state.box = box
                state.probs = self.smoothing * state.probs + (1.0 - self.smoothing) * probs[i]
                state.last_seen = now
                state.hits += 1
            seen.append(state.view())
        return seen

    def coast(self, now: float) -> list[Track]:
        """For frames without detection: expire old tracks, return those seen at the last update."""
        self._expire(now)
        return [t.view() for t in self._tracks.values() if t.last_seen == self._last_update]

    @property
    def last_update(self) -> float | None:
        """`now` of the last `update()`; tracks with this `last_seen` were found by the last detection."""
        return self._last_update

    def active_tracks(self) -> list[Track]:
        """Every unexpired track, including ones missed by the last detection."""
        return [t.view() for t in self._tracks.values()]

    @property
    def tracks_started(self) -> int:
        return self._next_id - 1
