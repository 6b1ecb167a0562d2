"""SessionAggregator: bucket maths by hand, the needs-attention signal, bounded memory."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from fer_core.aggregate import (
    NOW_WINDOW_S,
    PROB_COLUMNS,
    SHARE_COLUMNS,
    AttentionEvent,
    SessionAggregator,
    current_distribution,
    overall_distribution,
)
from fer_core.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from tests.doubles import make_buckets


@dataclass(frozen=True)
class Face:
    track_id: int
    probs: np.ndarray


def dist(**weights: float) -> np.ndarray:
    probs = np.zeros(NUM_EMOTIONS)
    for name, w in weights.items():
        probs[EMOTION_INDEX[name]] = w
    assert probs.sum() == pytest.approx(1.0)
    return probs


def feed_second(agg: SessionAggregator, t: int, labels: list[str], frames: int = 2) -> None:
    """`frames` analysed frames in second t, one face per label, each fully confident."""
    for f in range(frames):
        agg.add(t + f / frames, [Face(i + 1, dist(**{label: 1.0})) for i, label in enumerate(labels)])


def test_bucket_maths_by_hand() -> None:
    agg = SessionAggregator(window_s=60, negative_share=0.5, attention_seconds=10)
    a1 = dist(happy=0.7, neutral=0.3)
    b1 = dist(sad=0.6, neutral=0.4)
    a2 = dist(happy=0.5, surprise=0.5)  # tie -> argmax picks the first in EMOTIONS order: happy
    agg.add(100.2, [Face(1, a1), Face(2, b1)])
    agg.add(100.7, [Face(1, a2)])
    assert agg.drain().buckets == ()  # second 100 is still open
    agg.add(101.0, [])
    out = agg.drain()
    (bucket,) = out.buckets
    assert bucket.t == 100 and bucket.faces == 2 and bucket.frames == 2 and bucket.observations == 3
    # mean over 3 face-observations: happy (0.7+0.5)/3, neutral (0.3+0.4)/3, sad 0.6/3, surprise 0.5/3
    expected = dict(angry=0, disgust=0, fear=0, happy=0.4, neutral=0.7 / 3, sad=0.2, surprise=0.5 / 3)
    np.testing.assert_allclose(bucket.mean_probs, [expected[e] for e in EMOTIONS])
    # labels: happy, sad, happy -> shares 2/3 happy, 1/3 sad
    shares = dict.fromkeys(EMOTIONS, 0.0) | {"happy": 2 / 3, "sad": 1 / 3}
    np.testing.assert_allclose(bucket.shares, [shares[e] for e in EMOTIONS])
    assert bucket.negative_share == pytest.approx(1 / 3)
    assert not bucket.needs_attention
    # per track: 1 = mean(a1, a2) -> happy 0.6; 2 = b1 -> sad 0.6
    samples = {s.track_id: s for s in out.samples}
    assert set(samples) == {1, 2}
    np.testing.assert_allclose(samples[1].probs, (a1 + a2) / 2)
    assert (samples[1].label, samples[1].confidence) == ("happy", pytest.approx(0.6))
    assert (samples[2].label, samples[2].confidence, samples[2].t) == ("sad", pytest.approx(0.6), 100)


def test_second_without_faces_has_zero_faces_and_nan_means() -> None:
    agg = SessionAggregator()
    agg.add(5.0, [])
    agg.add(5.5, [])
    agg.close()
    (bucket,) = agg.drain().buckets
    assert (bucket.faces, bucket.frames, bucket.observations) == (0, 2, 0)
    assert all(np.isnan(bucket.mean_probs)) and sum(bucket.shares) == 0


def test_faces_is_the_peak_per_frame_not_distinct_ids() -> None:
    agg = SessionAggregator()
    # Frame 1: faces 1, 2; frame 2: the same two people but face 2 re-acquired as id 3.
    agg.add(7.1, [Face(1, dist(happy=1.0)), Face(2, dist(happy=1.0))])
    agg.add(7.6, [Face(1, dist(happy=1.0)), Face(3, dist(happy=1.0))])
    agg.close()
    assert agg.drain().buckets[0].faces == 2


def run_attention(agg: SessionAggregator, seconds: list[list[str] | None], start: int = 1000) -> list[bool]:
    """Feed one second per entry (None: no analysed frame that second); return needs_attention per bucket."""
    for i, labels in enumerate(seconds):
        if labels is not None:
            feed_second(agg, start + i, labels)
    agg.close()
    return [b.needs_attention for b in agg.drain().buckets]


def test_attention_turns_on_after_n_negative_seconds_and_off_after() -> None:
    agg = SessionAggregator(negative_share=0.5, attention_seconds=3)
    negative = ["angry", "sad", "fear", "happy"]  # 75% negative
    flags = run_attention(agg, [["happy"]] * 2 + [negative] * 4 + [["happy", "happy"]] * 2, start=1000)
    assert flags == [False, False, False, False, True, True, False, False]
    events = agg.snapshot().recent_events
    assert events == (
        AttentionEvent(1002.0, None, "75% of faces have looked angry, disgust, fear or sad for 3 s"),
        AttentionEvent(1002.0, 1006.0, "75% of faces looked angry, disgust, fear or sad for 4 s"),
    )


def test_share_must_exceed_the_threshold() -> None:
    agg = SessionAggregator(negative_share=0.5, attention_seconds=2)
    assert run_attention(agg, [["sad", "happy"]] * 5) == [False] * 5  # exactly 50% is not "more than"


@pytest.mark.parametrize(
    "breaker",
    [[], None, ["happy"]],
    ids=["second-without-faces", "second-without-frames", "positive-second"],
)
def test_streak_needs_consecutive_seconds_with_faces(breaker: list[str] | None) -> None:
    agg = SessionAggregator(negative_share=0.5, attention_seconds=3)
    flags = run_attention(agg, [["angry"], ["angry"], breaker, ["angry"], ["angry"], ["angry"]])
    expected = [False, False, False, False, True] if breaker is None else [False] * 5 + [True]
    assert flags == expected


def test_close_ends_an_open_event() -> None:
    agg = SessionAggregator(negative_share=0.5, attention_seconds=2)
    run_attention(agg, [["sad"]] * 4, start=50)
    events = agg.drain().events  # already drained by run_attention
    assert events == ()
    snap = agg.snapshot()
    assert not snap.attention
    assert snap.recent_events[-1].t_start == 50.0 and snap.recent_events[-1].t_end == 54.0


def test_drain_hands_out_once() -> None:
    agg = SessionAggregator()
    for t in range(5):
        feed_second(agg, t, ["happy", "sad"])
    first = agg.drain()
    assert [b.t for b in first.buckets] == [0, 1, 2, 3]
    assert len(first.samples) == 8
    assert not agg.drain()
    agg.close()
    assert [b.t for b in agg.drain().buckets] == [4]


def test_memory_stays_bounded_over_100k_seconds_without_drain() -> None:
    seconds = 100_000
    agg = SessionAggregator(
        window_s=60, negative_share=0.5, attention_seconds=5, max_pending_buckets=100, max_pending_samples=300,
        max_pending_events=10,
    )
    # One analysed frame per second with one face keeps this fast; every second still completes
    # a bucket and a track sample, so all three queues and the window overflow.
    faces_a = [Face(1, dist(angry=1.0))]
    faces_b = [Face(1, dist(happy=1.0))]
    for t in range(seconds):
        # 10 negative seconds then 10 positive: an attention start and end every 20 s.
        agg.add(float(t), faces_a if (t // 10) % 2 == 0 else faces_b)
    agg.close()
    snap = agg.snapshot()
    assert len(snap.buckets) == 60 and snap.buckets[-1].t == seconds - 1
    events = seconds // 20 * 2  # 5000 starts + 5000 ends
    expected_dropped = (seconds - 100) + (seconds - 300) + (events - 10)
    assert agg.dropped == snap.dropped == expected_dropped
    drained = agg.drain()
    assert (len(drained.buckets), len(drained.samples), len(drained.events)) == (100, 300, 10)
    assert drained.buckets[-1].t == seconds - 1  # the newest are kept
    assert len(snap.recent_events) <= 50
    assert agg.summary().frames_analysed == seconds and agg.summary().faces_seen == 1


def test_snapshot_is_an_immutable_consistent_copy() -> None:
    agg = SessionAggregator(window_s=10)
    for t in range(4):
        feed_second(agg, t, ["happy"])
    snap = agg.snapshot()
    for t in range(4, 30):
        feed_second(agg, t, ["sad"])
    assert [b.t for b in snap.buckets] == [0, 1, 2]
    assert snap.faces_now == 1 and snap.frames_analysed == 8
    df = snap.frame()
    assert list(df["t"]) == [0, 1, 2]
    assert {*PROB_COLUMNS, *SHARE_COLUMNS, "negative_share", "needs_attention", "time"} <= set(df.columns)
    assert df["share_happy"].tolist() == [1.0, 1.0, 1.0]
    assert str(df["time"].dt.tz) == "UTC"
    assert len(agg.snapshot().buckets) == 10  # the live window is bounded


def test_concurrent_snapshots_see_ordered_complete_windows() -> None:
    agg = SessionAggregator(window_s=20)
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            ts = [b.t for b in agg.snapshot().buckets]
            if ts != sorted(ts) or len(ts) > 20 or len(set(ts)) != len(ts):
                problems.append(repr(ts))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for t in range(3000):
            agg.add(float(t), [Face(1, dist(neutral=1.0))])
    finally:
        stop.set()
        thread.join()
    assert problems == []


def test_clock_stepping_back_stays_in_the_current_second() -> None:
    agg = SessionAggregator()
    agg.add(10.5, [Face(1, dist(happy=1.0))])
    agg.add(9.9, [Face(1, dist(sad=1.0))])  # e.g. NTP correction
    agg.close()
    (bucket,) = agg.drain().buckets
    assert bucket.t == 10 and bucket.frames == 2


def test_summary_reports_dominant_emotion_and_peak_faces() -> None:
    agg = SessionAggregator()
    feed_second(agg, 0, ["happy", "happy", "sad"])
    feed_second(agg, 1, ["neutral"])
    agg.close()
    summary = agg.summary()
    assert (summary.frames_analysed, summary.faces_seen, summary.dominant_emotion, summary.seconds) == (
        4, 3, "happy", 2
    )
    assert SessionAggregator().summary().dominant_emotion is None


def test_overall_distribution_weights_seconds_by_faces_and_ignores_empty_ones() -> None:
    frame = make_buckets(["happy", "sad", None], faces=[3, 1, 0])
    overall = overall_distribution(frame)
    assert list(overall.index) == list(EMOTIONS)
    assert overall["happy"] == pytest.approx(0.75)
    assert overall["sad"] == pytest.approx(0.25)
    assert overall_distribution(frame, "mean")["happy"] == pytest.approx((3 * 0.4 + 1 * 0.1) / 4)


def test_current_distribution_is_the_newest_second_with_a_face_whatever_the_row_order() -> None:
    frame = make_buckets(["happy", "sad", None], faces=[3, 1, 0])
    assert current_distribution(frame)["sad"] == 1.0
    # History's frames carry datetimes and may come in any order.
    shuffled = frame.iloc[[1, 2, 0]].assign(t=pd.to_datetime(frame["t"].iloc[[1, 2, 0]], unit="s", utc=True))
    assert current_distribution(shuffled)["sad"] == 1.0
    assert current_distribution(shuffled, "mean")["sad"] == pytest.approx(0.4)


def test_distributions_of_nothing_are_zero() -> None:
    assert overall_distribution(make_buckets([])).sum() == 0
    assert current_distribution(make_buckets([])).sum() == 0
    assert overall_distribution(make_buckets([None, None])).sum() == 0
    assert current_distribution(make_buckets([None, None])).sum() == 0


# --- "now": one window for every live figure ----------------------------------------------------------------


def test_now_is_the_last_completed_seconds_for_every_figure() -> None:
    agg = SessionAggregator(window_s=60)
    feed_second(agg, 0, ["sad", "sad"])  # outside the window by the end
    feed_second(agg, 1, ["happy", "sad"])
    feed_second(agg, 2, ["happy", "happy"])
    feed_second(agg, 3, ["happy"], frames=4)
    agg.add(4.0, [])  # completes second 3
    now = agg.snapshot().now()
    assert (now.window_s, now.t_start, now.t_end) == (NOW_WINDOW_S, 1, 3)
    assert now.faces == 2  # the most faces in one frame of seconds 1-3
    # face-observations of seconds 1-3: happy 2+4+4, sad 2
    assert now.observations == 12
    assert now.distribution["happy"] == pytest.approx(10 / 12) and now.distribution["sad"] == pytest.approx(2 / 12)
    assert now.dominant == "happy"
    # Each face: its mean over the window's seconds. Face 2 was sad in 1, happy in 2, gone in 3.
    assert [(f.track_id, f.seconds) for f in now.faces_now] == [(1, 3), (2, 2)]
    face2 = now.faces_now[1]
    assert face2.label in ("happy", "sad") and face2.confidence == pytest.approx(0.5)
    # The video overlay draws exactly these labels.
    assert agg.now_labels == {f.track_id: f for f in now.faces_now}


def test_no_face_now_means_no_mood_now() -> None:
    # A face was seen, then nobody for longer than the window: no figure may still show the old mood.
    agg = SessionAggregator(window_s=60)
    for t in range(5):
        feed_second(agg, t, ["sad"])
    for t in range(5, 5 + NOW_WINDOW_S + 1):
        feed_second(agg, t, [])
    snap = agg.snapshot()
    now = snap.now()
    assert now.faces == 0 and now.dominant is None and now.faces_now == ()
    assert now.distribution.sum() == 0
    assert agg.now_labels == {}
    assert current_distribution(snap.frame())["sad"] == 1.0  # what the page used to show as "right now"


def test_now_before_the_first_second_completes() -> None:
    agg = SessionAggregator()
    agg.add(0.2, [Face(1, dist(happy=1.0))])
    now = agg.snapshot().now()
    assert now.t_end is None and now.faces == 0 and now.dominant is None


def test_a_tie_now_is_said_not_broken_silently() -> None:
    agg = SessionAggregator()
    feed_second(agg, 0, ["happy", "angry"])
    feed_second(agg, 1, [])
    assert agg.snapshot().now().dominant == "angry / happy"  # not "angry" beside a 50/50 chart
    three = SessionAggregator()
    feed_second(three, 0, ["happy", "angry", "sad"])
    feed_second(three, 1, [])
    assert three.snapshot().now().dominant == "mixed"
