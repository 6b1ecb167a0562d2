"""An online class's figures, second by second: what one server process adds up, and how seconds become buckets.

Each student's stream runs the usual pipeline on its own frames. A server process adds up what all
of its students of one class showed in each second (`ClassAccumulator` -> `ClassSecond`); the
database adds up the processes (`fer_core.class_store`). Only sums leave the process: never a
student's own figures, and no student identifier at all.

Definitions, per second t:
- students: streams that delivered a frame in t (connected);
- contributors: streams with at least one face in an analysed frame of t;
- faces: per stream the most faces in one of its analysed frames of t, summed over streams;
- observations, prob_sums, label_counts: one observation per face per analysed frame.
The privacy floor: a second's emotions are shown and stored only when at least `min_students`
students contributed to it. Other seconds keep their counts (students, faces) and no emotion figures.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fer_core.aggregate import AttentionEvent, AttentionTracker, Bucket, SessionSummary, TrackLike
from fer_core.emotions import EMOTIONS, NEGATIVE_EMOTIONS, NUM_EMOTIONS

_NEGATIVE = np.array([e in NEGATIVE_EMOTIONS for e in EMOTIONS])
_NAN_PROBS = (float("nan"),) * NUM_EMOTIONS
_ZERO_SHARES = (0.0,) * NUM_EMOTIONS


@dataclass(frozen=True)
class ClassSecond:
    """The sums of one second: of one process's students, or of every process's (see the module docstring)."""

    t: int
    students: int
    contributors: int
    frames: int
    faces: int
    observations: int
    prob_sums: tuple[float, ...]
    label_counts: tuple[int, ...]

    def shown(self, min_students: int) -> bool:
        """True when this second's emotions clear the privacy floor."""
        return self.observations > 0 and self.contributors >= min_students


@dataclass
class _Second:
    students: set[int] = field(default_factory=set)
    contributors: set[int] = field(default_factory=set)
    frames: int = 0
    faces_by_stream: dict[int, int] = field(default_factory=dict)
    observations: int = 0
    prob_sums: np.ndarray = field(default_factory=lambda: np.zeros(NUM_EMOTIONS))
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(NUM_EMOTIONS, dtype=np.int64))


class ClassAccumulator:
    """One process's per-second sums for one class. Video threads add; a flusher drains completed seconds.

    A second is complete `settle_s` after it ended, so frames still being analysed in other threads
    can land in it. A frame that comes even later counts in the oldest second still open.
    """

    def __init__(self, settle_s: float = 1.0) -> None:
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._seconds: dict[int, _Second] = {}
        self._drained_until = -1  # every second <= this has been handed out

    def _second(self, now: float) -> _Second:
        t = max(int(np.floor(now)), self._drained_until + 1)
        second = self._seconds.get(t)
        if second is None:
            second = self._seconds[t] = _Second()
        return second

    def frame_seen(self, stream_id: int, now: float) -> None:
        """Any frame of a stream, analysed or not: the student is connected in this second."""
        with self._lock:
            self._second(now).students.add(stream_id)

    def add(self, stream_id: int, now: float, faces: Sequence[TrackLike]) -> None:
        """An analysed frame of a stream and the faces in it (smoothed probabilities)."""
        n = len(faces)
        probs = np.array([f.probs for f in faces], dtype=np.float64).reshape(n, NUM_EMOTIONS)
        with self._lock:
            second = self._second(now)
            second.students.add(stream_id)
            second.frames += 1
            second.faces_by_stream[stream_id] = max(second.faces_by_stream.get(stream_id, 0), n)
            if n:
                second.contributors.add(stream_id)
                second.observations += n
                second.prob_sums += probs.sum(axis=0)
                second.label_counts += np.bincount(probs.argmax(axis=1), minlength=NUM_EMOTIONS)

    def drain(self, now: float) -> list[ClassSecond]:
        """The seconds that ended at least `settle_s` before `now`, oldest first, and forget them."""
        last_complete = int(np.floor(now - self.settle_s)) - 1
        with self._lock:
            done = sorted(t for t in self._seconds if t <= last_complete)
            out = [self._seal(t, self._seconds.pop(t)) for t in done]
            self._drained_until = max(self._drained_until, last_complete)
        return out

    @staticmethod
    def _seal(t: int, s: _Second) -> ClassSecond:
        return ClassSecond(
            t=t, students=len(s.students), contributors=len(s.contributors), frames=s.frames,
            faces=sum(s.faces_by_stream.values()), observations=s.observations,
            prob_sums=tuple(float(v) for v in s.prob_sums), label_counts=tuple(int(v) for v in s.label_counts),
        )


def merge_seconds(seconds: Sequence[ClassSecond]) -> list[ClassSecond]:
    """Add up the sums of equal seconds (several processes), oldest first."""
    by_t: dict[int, ClassSecond] = {}
    for s in seconds:
        other = by_t.get(s.t)
        by_t[s.t] = s if other is None else ClassSecond(
            t=s.t, students=s.students + other.students, contributors=s.contributors + other.contributors,
            frames=s.frames + other.frames, faces=s.faces + other.faces,
            observations=s.observations + other.observations,
            prob_sums=tuple(a + b for a, b in zip(s.prob_sums, other.prob_sums, strict=True)),
            label_counts=tuple(a + b for a, b in zip(s.label_counts, other.label_counts, strict=True)),
        )
    return [by_t[t] for t in sorted(by_t)]


def class_buckets(
    seconds: Sequence[ClassSecond], *, min_students: int, negative_share: float, attention_seconds: int
) -> tuple[list[Bucket], list[AttentionEvent], SessionSummary]:
    """Class-level buckets (emotions only above the privacy floor), needs-attention events and a summary."""
    events: list[AttentionEvent] = []
    attention = AttentionTracker(negative_share, attention_seconds, events.append)
    buckets: list[Bucket] = []
    totals = np.zeros(NUM_EMOTIONS, dtype=np.int64)
    for s in merge_seconds(seconds):
        if s.shown(min_students):
            counts = np.asarray(s.label_counts, dtype=np.float64)
            mean = tuple(float(v) for v in np.asarray(s.prob_sums) / s.observations)
            shares = tuple(float(v) for v in counts / s.observations)
            negative = float(counts[_NEGATIVE].sum() / s.observations)
            totals += np.asarray(s.label_counts, dtype=np.int64)
            flagged = attention.update(s.t, negative > negative_share, negative)
        else:
            mean, shares = _NAN_PROBS, _ZERO_SHARES
            flagged = attention.update(s.t, False, 0.0)
        buckets.append(Bucket(s.t, s.faces, s.frames, s.observations if s.shown(min_students) else 0,
                              mean, shares, flagged, students=s.students))
    attention.close()
    summary = SessionSummary(
        frames_analysed=sum(b.frames for b in buckets),
        faces_seen=max((b.faces for b in buckets), default=0),
        dominant_emotion=EMOTIONS[int(totals.argmax())] if totals.any() else None,
        seconds=len(buckets),
    )
    return buckets, events, summary
