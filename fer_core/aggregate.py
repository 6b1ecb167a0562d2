"""Per-session one-second buckets, the needs-attention signal, and what the store receives.

The video thread calls `add(now, tracks)` for every analysed frame; the UI thread
calls `snapshot()`; a writer calls `drain()`. One lock guards the shared state and is
held only for O(1) work or a copy of <= window_s references, so neither thread
blocks the other for long.

Definitions (all over completed one-second buckets, keyed by the epoch second):
- `faces`: the largest number of faces in any single analysed frame of that second.
  The max, not the mean, because Haar misses a face in some frames (a mean would
  undercount) and not distinct track ids, because a face that is lost and found
  again gets a new id (that would overcount).
- `p_<emotion>`: mean smoothed probability over every face-observation (one
  face in one analysed frame) of the second.
- `share_<emotion>`: fraction of those face-observations whose smoothed label is
  that emotion (the "dominant-emotion share").
- needs attention: the negative share (sum of shares of NEGATIVE_EMOTIONS) is
  above `negative_share` in `attention_seconds` consecutive seconds that each had
  faces. A second without faces, a second with no analysed frame, or a second at
  or below the threshold ends the streak (no evidence is not evidence of a problem).
- "now" (`LiveNow`, every live figure of a stream): the last `NOW_WINDOW_S` completed seconds.
  Faces in view is the most faces in one analysed frame of those seconds; the mood shares count
  every face-observation of those seconds; each face's label is the argmax of its mean
  probabilities over those seconds (also what the video overlay draws). One window, so the
  figures on one screen never contradict each other.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from fer_core.emotions import EMOTIONS, NEGATIVE_EMOTIONS, NUM_EMOTIONS

ATTENTION_KIND = "needs_attention"
PROB_PREFIX = "p_"
SHARE_PREFIX = "share_"
PROB_COLUMNS: tuple[str, ...] = tuple(f"{PROB_PREFIX}{e}" for e in EMOTIONS)
SHARE_COLUMNS: tuple[str, ...] = tuple(f"{SHARE_PREFIX}{e}" for e in EMOTIONS)
# Which per-second figure a summary or chart reads: `share_*` or the mean probability `p_*`.
Measure = Literal["share", "mean"]
_NEGATIVE_MASK = np.array([e in NEGATIVE_EMOTIONS for e in EMOTIONS])
_NEGATIVE_INDICES = tuple(i for i, e in enumerate(EMOTIONS) if e in NEGATIVE_EMOTIONS)
_NAN_PROBS = (float("nan"),) * NUM_EMOTIONS
_ZERO_SHARES = (0.0,) * NUM_EMOTIONS
NEGATIVE_WORDS = ", ".join(e for e in EMOTIONS if e in NEGATIVE_EMOTIONS).rsplit(", ", 1)
NEGATIVE_PHRASE = " or ".join(NEGATIVE_WORDS)  # "angry, disgust, fear or sad"

# Bounds on what waits for drain(): an hour of buckets; samples for ~an hour of ~50 faces.
MAX_PENDING_BUCKETS = 3_600
MAX_PENDING_SAMPLES = 200_000
MAX_PENDING_EVENTS = 1_000
RECENT_EVENTS = 50
NOW_WINDOW_S = 3  # "now" for every live figure: the last 3 completed seconds


class TrackLike(Protocol):
    """What the aggregator needs of a face in a frame (a `track.Track` or a pipeline observation)."""

    @property
    def track_id(self) -> int: ...
    @property
    def probs(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Bucket:
    t: int  # epoch second
    faces: int
    frames: int  # analysed frames in this second
    observations: int  # face-observations in this second
    mean_probs: tuple[float, ...]  # EMOTIONS order; NaN without faces
    shares: tuple[float, ...]  # EMOTIONS order; 0 without faces
    needs_attention: bool
    students: int | None = None  # an online class: students connected that second

    @property
    def negative_share(self) -> float:
        return float(sum(self.shares[i] for i in _NEGATIVE_INDICES))


@dataclass(frozen=True)
class TrackSample:
    """One track's mean over one bucket."""

    t: int
    track_id: int
    probs: tuple[float, ...]
    label: str
    confidence: float


@dataclass(frozen=True)
class AttentionEvent:
    """Emitted once when attention starts (t_end None) and again when it ends (same t_start)."""

    t_start: float
    t_end: float | None
    reason: str
    kind: str = ATTENTION_KIND


@dataclass(frozen=True)
class Drained:
    buckets: tuple[Bucket, ...] = ()
    samples: tuple[TrackSample, ...] = ()
    events: tuple[AttentionEvent, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.buckets or self.samples or self.events)


@dataclass(frozen=True)
class NowFace:
    """One face of "now": its label over the window's seconds, with the confidence of that label."""

    track_id: int
    label: str
    confidence: float
    seconds: int  # of the window's seconds in which it was seen


@dataclass(frozen=True)
class LiveNow:
    """Every live figure, from one window of completed seconds (see the module docstring)."""

    window_s: int
    t_start: int | None  # first and last second of the window (epoch s); None before a second completed
    t_end: int | None
    faces: int
    observations: int
    shares: tuple[float, ...]  # EMOTIONS order; all 0 without faces
    faces_now: tuple[NowFace, ...]
    attention: bool
    attention_reason: str | None

    @property
    def dominant(self) -> str | None:
        """The most common label of the window ("happy / sad" when two tie, "mixed" for more); None
        when no face was seen in it. A few faces tie often, and picking one would contradict the chart."""
        if self.observations == 0:
            return None
        top = max(self.shares)
        tied = [e for e, share in zip(EMOTIONS, self.shares, strict=True) if top - share < 1e-9]
        return tied[0] if len(tied) == 1 else " / ".join(tied) if len(tied) == 2 else "mixed"

    @property
    def distribution(self) -> pd.Series:
        return pd.Series(self.shares, index=list(EMOTIONS), name="value")


def face_labels(samples: Sequence[TrackSample]) -> dict[int, NowFace]:
    """Per track: the label of its mean probabilities over the given per-second samples."""
    sums: dict[int, list] = {}
    for sample in samples:
        entry = sums.setdefault(sample.track_id, [np.zeros(NUM_EMOTIONS), 0])
        entry[0] += sample.probs
        entry[1] += 1
    faces = {}
    for track_id, (total, count) in sums.items():
        mean = total / count
        top = int(mean.argmax())
        faces[track_id] = NowFace(track_id, EMOTIONS[top], float(mean[top]), count)
    return faces


def live_now(buckets: Sequence[Bucket], samples: Sequence[TrackSample], attention: bool,
             attention_reason: str | None, window_s: int = NOW_WINDOW_S) -> LiveNow:
    """The window of the last `window_s` completed seconds of `buckets` (in time order)."""
    if not buckets:
        return LiveNow(window_s, None, None, 0, 0, _ZERO_SHARES, (), False, None)
    t_end = buckets[-1].t
    window = [b for b in buckets[-window_s:] if b.t > t_end - window_s]
    observations = sum(b.observations for b in window)
    shares = _ZERO_SHARES
    if observations:
        counts = np.sum([np.asarray(b.shares) * b.observations for b in window], axis=0)
        shares = tuple((counts / observations).tolist())
    faces = face_labels([s for s in samples if s.t >= window[0].t and s.t <= t_end])
    return LiveNow(window_s, window[0].t, t_end, max(b.faces for b in window), observations, shares,
                   tuple(faces[k] for k in sorted(faces)), attention, attention_reason)


@dataclass(frozen=True)
class SessionSummary:
    frames_analysed: int
    faces_seen: int  # peak faces in one second (see module docstring for why not track ids)
    dominant_emotion: str | None
    seconds: int  # completed buckets


def buckets_frame(buckets: Sequence[Bucket]) -> pd.DataFrame:
    """Buckets -> DataFrame: t, time (UTC), faces, frames, p_*, share_*, negative_share, needs_attention."""
    columns = ["t", "time", "faces", "frames", *PROB_COLUMNS, *SHARE_COLUMNS, "negative_share", "needs_attention"]
    if not buckets:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    probs = np.array([b.mean_probs for b in buckets], dtype=np.float64)
    shares = np.array([b.shares for b in buckets], dtype=np.float64)
    t = np.array([b.t for b in buckets], dtype=np.int64)
    data: dict[str, object] = {
        "t": t,
        "time": pd.to_datetime(t, unit="s", utc=True),
        "faces": np.array([b.faces for b in buckets], dtype=np.int64),
        "frames": np.array([b.frames for b in buckets], dtype=np.int64),
    }
    data.update({c: probs[:, i] for i, c in enumerate(PROB_COLUMNS)})
    data.update({c: shares[:, i] for i, c in enumerate(SHARE_COLUMNS)})
    data["negative_share"] = shares[:, _NEGATIVE_MASK].sum(axis=1)
    data["needs_attention"] = np.array([b.needs_attention for b in buckets], dtype=bool)
    return pd.DataFrame(data, columns=columns)


def measure_prefix(measure: Measure) -> str:
    return SHARE_PREFIX if measure == "share" else PROB_PREFIX


def _zero_distribution() -> pd.Series:
    return pd.Series(0.0, index=list(EMOTIONS), name="value")


def _faces(buckets: pd.DataFrame) -> pd.Series:
    """Each second's weight: its faces, or 0 when it holds no expression figures (no face, or an online
    class's second below the privacy floor, whose faces are counted but whose expressions are not kept)."""
    faces = pd.to_numeric(buckets.get("faces", pd.Series(1.0, index=buckets.index)), errors="coerce").fillna(0.0)
    probs = [c for c in PROB_COLUMNS if c in buckets.columns]
    if probs:
        faces = faces.where(buckets[probs].notna().any(axis=1), 0.0)
    return faces


def overall_distribution(buckets: pd.DataFrame, measure: Measure = "share") -> pd.Series:
    """Faces-weighted mean of the per-second figures of a bucket frame: busier seconds count more.

    Seconds without faces carry no information and weigh zero. Returns a Series indexed by
    emotion in canonical order (all zeros when no face was ever seen).
    """
    prefix = measure_prefix(measure)
    values = _zero_distribution()
    if buckets.empty:
        return values
    weights = _faces(buckets)
    if float(weights.sum()) <= 0:
        return values
    for emotion in EMOTIONS:
        column = f"{prefix}{emotion}"
        if column in buckets.columns:
            col = pd.to_numeric(buckets[column], errors="coerce").fillna(0.0)
            values[emotion] = float(np.average(col, weights=weights))
    return values


def current_distribution(buckets: pd.DataFrame, measure: Measure = "share") -> pd.Series:
    """The figures of the most recent second with at least one face (zeros when there is none)."""
    prefix = measure_prefix(measure)
    values = _zero_distribution()
    if buckets.empty:
        return values
    seen = buckets[_faces(buckets) > 0]
    if seen.empty:
        return values
    last = seen.sort_values("t", kind="stable").iloc[-1]  # t is epoch seconds or datetimes: both sort
    for emotion in EMOTIONS:
        values[emotion] = float(last.get(f"{prefix}{emotion}", 0.0) or 0.0)
    return values


class AttentionTracker:
    """The needs-attention rule over consecutive one-second buckets (see the module docstring).

    `update()` takes each completed second in order; `emit` receives an event when attention starts
    (t_end None) and again when it ends. Shared by a stream's aggregator and an online class's view.
    """

    def __init__(self, negative_share: float, attention_seconds: int,
                 emit: Callable[[AttentionEvent], None]) -> None:
        self.negative_share = negative_share
        self.attention_seconds = attention_seconds
        self._emit = emit
        self._last_t: int | None = None
        self._streak = 0
        self._streak_share_sum = 0.0
        self.open_event: AttentionEvent | None = None

    def update(self, t: int, qualifies: bool, negative: float) -> bool:
        """Second `t`: `qualifies` when it had faces and its negative share was above the threshold."""
        contiguous = self._last_t is not None and t == self._last_t + 1
        if self.open_event is not None and not (qualifies and contiguous):
            self._end(self._last_t + 1 if self._last_t is not None else t)
        if qualifies:
            if contiguous and self._streak > 0:
                self._streak += 1
                self._streak_share_sum += negative
            else:
                self._streak, self._streak_share_sum = 1, negative
        else:
            self._streak, self._streak_share_sum = 0, 0.0
        self._last_t = t
        if self.open_event is None and self._streak >= self.attention_seconds:
            reason = (
                f"{self._streak_share_sum / self._streak:.0%} of faces have looked {NEGATIVE_PHRASE} "
                f"for {self._streak} s"
            )
            self.open_event = AttentionEvent(float(t - self._streak + 1), None, reason)
            self._emit(self.open_event)
        return self.open_event is not None

    def close(self) -> None:
        """End an open event after the last second seen (idempotent)."""
        if self.open_event is not None and self._last_t is not None:
            self._end(self._last_t + 1)

    def _end(self, t_end: int) -> None:
        event = self.open_event
        assert event is not None
        seconds = max(1, self._streak)
        reason = (
            f"{self._streak_share_sum / seconds:.0%} of faces looked {NEGATIVE_PHRASE} "
            f"for {round(t_end - event.t_start)} s"
        )
        self._emit(AttentionEvent(event.t_start, float(t_end), reason))
        self.open_event = None


@dataclass(frozen=True)
class AggregatorSnapshot:
    """A consistent, immutable copy for the UI; `frame()` builds the DataFrame outside any lock."""

    buckets: tuple[Bucket, ...]
    faces_now: int
    attention: bool
    attention_reason: str | None
    recent_events: tuple[AttentionEvent, ...]
    frames_analysed: int
    dropped: int
    recent_samples: tuple[TrackSample, ...] = ()  # per-track seconds of the "now" window

    def frame(self) -> pd.DataFrame:
        return buckets_frame(self.buckets)

    def now(self, window_s: int = NOW_WINDOW_S) -> LiveNow:
        """Every live figure of this snapshot, over the last `window_s` completed seconds."""
        return live_now(self.buckets, self.recent_samples, self.attention, self.attention_reason, window_s)


@dataclass
class _Accumulator:
    """Running sums for the second being filled (video thread only)."""

    t: int
    frames: int = 0
    faces: int = 0
    observations: int = 0
    prob_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_EMOTIONS))
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(NUM_EMOTIONS, dtype=np.int64))
    per_track: dict[int, list] = field(default_factory=dict)  # id -> [prob_sum, count]


class SessionAggregator:
    def __init__(
        self,
        window_s: int = 600,
        negative_share: float = 0.5,
        attention_seconds: int = 10,
        max_pending_buckets: int = MAX_PENDING_BUCKETS,
        max_pending_samples: int = MAX_PENDING_SAMPLES,
        max_pending_events: int = MAX_PENDING_EVENTS,
    ) -> None:
        if window_s < 1 or attention_seconds < 1:
            raise ValueError("window_s and attention_seconds must be >= 1")
        if not 0.0 <= negative_share <= 1.0:
            raise ValueError(f"negative_share must be in [0, 1], got {negative_share}")
        self.window_s = window_s
        self.negative_share = negative_share
        self.attention_seconds = attention_seconds
        self._lock = threading.Lock()
        self._window: deque[Bucket] = deque(maxlen=window_s)
        self._pending_buckets: deque[Bucket] = deque()
        self._pending_samples: deque[TrackSample] = deque()
        self._pending_events: deque[AttentionEvent] = deque()
        self._limits = (max_pending_buckets, max_pending_samples, max_pending_events)
        self._recent_events: deque[AttentionEvent] = deque(maxlen=RECENT_EVENTS)
        self._recent_samples: deque[tuple[int, tuple[TrackSample, ...]]] = deque(maxlen=NOW_WINDOW_S)
        self.now_labels: dict[int, NowFace] = {}  # the overlay's labels: replaced, never mutated
        self._acc: _Accumulator | None = None
        self._faces_now = 0
        self._frames = 0
        self._dropped = 0
        self._peak_faces = 0
        self._seconds = 0
        self._label_totals = np.zeros(NUM_EMOTIONS, dtype=np.int64)
        self._attention = AttentionTracker(negative_share, attention_seconds, self._emit)
        self._closed = False

    # --- video thread ---------------------------------------------------------------
    def add(self, now: float, tracks: Sequence[TrackLike]) -> None:
        """Record one analysed frame's faces (smoothed probabilities) at time `now` (epoch s)."""
        second = int(np.floor(now))
        n = len(tracks)
        probs = np.array([t.probs for t in tracks], dtype=np.float64).reshape(n, NUM_EMOTIONS)
        labels = probs.argmax(axis=1)
        with self._lock:
            if self._closed:
                return
            acc = self._acc
            # A clock that steps back keeps filling the current second: buckets stay in order.
            if acc is None or second > acc.t:
                if acc is not None:
                    self._complete(acc)
                acc = self._acc = _Accumulator(second)
            acc.frames += 1
            acc.faces = max(acc.faces, n)
            acc.observations += n
            if n:
                acc.prob_sum += probs.sum(axis=0)
                acc.label_counts += np.bincount(labels, minlength=NUM_EMOTIONS)
                for track, row in zip(tracks, probs, strict=True):
                    entry = acc.per_track.get(track.track_id)
                    if entry is None:
                        acc.per_track[track.track_id] = [row.copy(), 1]
                    else:
                        entry[0] += row
                        entry[1] += 1
            self._frames += 1
            self._faces_now = n

    def close(self) -> None:
        """Complete the second in progress and end an open attention event (idempotent)."""
        with self._lock:
            if self._closed:
                return
            if self._acc is not None:
                self._complete(self._acc)
                self._acc = None
            self._attention.close()
            self._closed = True

    # --- any thread -----------------------------------------------------------------
    def snapshot(self) -> AggregatorSnapshot:
        with self._lock:
            return AggregatorSnapshot(
                buckets=tuple(self._window),
                faces_now=self._faces_now,
                attention=self._attention.open_event is not None,
                attention_reason=self._attention.open_event.reason if self._attention.open_event else None,
                recent_events=tuple(self._recent_events),
                frames_analysed=self._frames,
                dropped=self._dropped,
                recent_samples=tuple(s for _, second in self._recent_samples for s in second),
            )

    def drain(self) -> Drained:
        """Hand out and forget everything completed since the last drain."""
        with self._lock:
            if not (self._pending_buckets or self._pending_samples or self._pending_events):
                return Drained()
            out = Drained(tuple(self._pending_buckets), tuple(self._pending_samples), tuple(self._pending_events))
            self._pending_buckets.clear()
            self._pending_samples.clear()
            self._pending_events.clear()
            return out

    @property
    def has_pending(self) -> bool:
        # Unlocked read of deque lengths: a cheap hint for the video thread, never wrong for long.
        return bool(self._pending_buckets or self._pending_samples or self._pending_events)

    @property
    def dropped(self) -> int:
        """Records discarded because nobody drained them in time."""
        return self._dropped

    def summary(self) -> SessionSummary:
        with self._lock:
            dominant = EMOTIONS[int(self._label_totals.argmax())] if self._label_totals.any() else None
            return SessionSummary(self._frames, self._peak_faces, dominant, self._seconds)

    # --- internals (lock held) ------------------------------------------------------------
    def _push(self, queue: deque, item: object, limit: int) -> None:
        if len(queue) >= limit:
            queue.popleft()  # keep the newest: the store can live with a gap, the UI wants now
            self._dropped += 1
        queue.append(item)

    def _complete(self, acc: _Accumulator) -> None:
        n = acc.observations
        if n:
            mean = tuple((acc.prob_sum / n).tolist())
            shares = tuple((acc.label_counts / n).tolist())
        else:
            mean, shares = _NAN_PROBS, _ZERO_SHARES
        negative = sum(shares[i] for i in _NEGATIVE_INDICES)
        attention = self._attention.update(acc.t, acc.faces > 0 and negative > self.negative_share, negative)
        bucket = Bucket(acc.t, acc.faces, acc.frames, n, mean, shares, attention)
        self._window.append(bucket)
        self._push(self._pending_buckets, bucket, self._limits[0])
        second: list[TrackSample] = []
        for track_id, (prob_sum, count) in acc.per_track.items():
            track_mean = (prob_sum / count).tolist()
            top = max(range(NUM_EMOTIONS), key=track_mean.__getitem__)  # first max, like argmax
            sample = TrackSample(acc.t, track_id, tuple(track_mean), EMOTIONS[top], track_mean[top])
            self._push(self._pending_samples, sample, self._limits[1])
            second.append(sample)
        # "Now" for the overlay: the same seconds as the snapshot's window (a gap ends nothing here:
        # the window is the last NOW_WINDOW_S completed seconds, as in live_now).
        self._recent_samples.append((acc.t, tuple(second)))
        while self._recent_samples[0][0] <= acc.t - NOW_WINDOW_S:
            self._recent_samples.popleft()
        self.now_labels = face_labels([s for _, seconds in self._recent_samples for s in seconds])
        self._peak_faces = max(self._peak_faces, acc.faces)
        self._label_totals += acc.label_counts
        self._seconds += 1

    def _emit(self, event: AttentionEvent) -> None:
        self._recent_events.append(event)
        self._push(self._pending_events, event, self._limits[2])
