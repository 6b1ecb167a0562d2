"""FaceTracker: stable ids, expiry, Hungarian matching, probability smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.detect import FaceBox
from fer_core.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from fer_core.track import FaceTracker


def onehot(label: str, p: float = 1.0) -> np.ndarray:
    """A distribution putting `p` on `label` and the rest evenly elsewhere."""
    probs = np.full(NUM_EMOTIONS, (1.0 - p) / (NUM_EMOTIONS - 1))
    probs[EMOTION_INDEX[label]] = p
    return probs


def probs_for(*labels: str) -> np.ndarray:
    return np.array([onehot(label) for label in labels]).reshape(len(labels), NUM_EMOTIONS)


def test_id_stays_with_a_moving_face() -> None:
    tracker = FaceTracker()
    ids = set()
    for i in range(30):  # 6 px per frame: 60x60 boxes keep IoU ~0.82 between frames
        (track,) = tracker.update([FaceBox(100 + 6 * i, 80 + 2 * i, 60, 60)], probs_for("happy"), now=i * 0.1)
        ids.add(track.track_id)
    assert ids == {1}
    assert track.hits == 30
    assert track.time_in_view == pytest.approx(2.9)
    assert track.box == FaceBox(100 + 6 * 29, 80 + 2 * 29, 60, 60)


def test_new_face_gets_a_new_id_and_ids_follow_positions_not_input_order() -> None:
    tracker = FaceTracker()
    left, right = FaceBox(10, 10, 50, 50), FaceBox(300, 10, 50, 50)
    a, b = tracker.update([left, right], probs_for("happy", "sad"), now=0.0)
    assert (a.track_id, b.track_id) == (1, 2)
    # Same faces, nudged and listed in the opposite order: ids follow the boxes.
    r, l_ = tracker.update([FaceBox(303, 12, 50, 50), FaceBox(12, 11, 50, 50)], probs_for("sad", "happy"), now=0.1)
    assert (r.track_id, l_.track_id) == (2, 1)
    # A third face far from both is new.
    *_, c = tracker.update([left, right, FaceBox(150, 200, 50, 50)], probs_for("happy", "sad", "fear"), now=0.2)
    assert c.track_id == 3
    assert tracker.tracks_started == 3


def test_hungarian_beats_greedy_matching() -> None:
    """Greedy best-IoU-first would give detection X to track 1 and leave track 2 unmatched (new id)."""
    tracker = FaceTracker(iou_threshold=0.3)
    tracker.update([FaceBox(0, 0, 100, 100), FaceBox(60, 0, 100, 100)], probs_for("happy", "sad"), now=0.0)
    # X overlaps track 1 most (IoU 0.67) but also track 2 (0.43); Y overlaps only track 1 (0.33).
    x, y = FaceBox(20, 0, 100, 100), FaceBox(-50, 0, 100, 100)
    tx, ty = tracker.update([x, y], probs_for("sad", "happy"), now=0.1)
    assert {tx.track_id, ty.track_id} == {1, 2}
    assert (tx.track_id, ty.track_id) == (2, 1)
    assert tracker.tracks_started == 2


def test_low_overlap_is_a_different_face() -> None:
    tracker = FaceTracker(iou_threshold=0.3)
    tracker.update([FaceBox(0, 0, 50, 50)], probs_for("happy"), now=0.0)
    (track,) = tracker.update([FaceBox(40, 0, 50, 50)], probs_for("happy"), now=0.1)  # IoU 0.11
    assert track.track_id == 2


def test_tracks_expire_after_max_age_and_ids_are_not_reused() -> None:
    tracker = FaceTracker(max_age_s=1.5)
    box = FaceBox(50, 50, 60, 60)
    tracker.update([box], probs_for("neutral"), now=0.0)
    assert [t.track_id for t in tracker.update([], probs_for(), now=1.4)] == []
    assert [t.track_id for t in tracker.active_tracks()] == [1]  # missed, not yet expired
    (back,) = tracker.update([box], probs_for("neutral"), now=1.45)
    assert back.track_id == 1  # within max_age: same id
    tracker.coast(now=3.0)  # unseen for 1.55 s
    assert tracker.active_tracks() == []
    (again,) = tracker.update([box], probs_for("neutral"), now=3.1)
    assert again.track_id == 2


def test_coast_returns_last_seen_tracks_unchanged() -> None:
    tracker = FaceTracker()
    tracker.update([FaceBox(0, 0, 40, 40), FaceBox(200, 0, 40, 40)], probs_for("happy", "sad"), now=0.0)
    (seen,) = tracker.update([FaceBox(2, 0, 40, 40)], probs_for("happy"), now=0.2)
    coasted = tracker.coast(now=0.3)
    assert [t.track_id for t in coasted] == [seen.track_id]
    assert coasted[0].hits == seen.hits and coasted[0].last_seen == 0.2
    np.testing.assert_allclose(coasted[0].probs, seen.probs)
    assert sorted(t.track_id for t in tracker.active_tracks()) == [1, 2]


def test_smoothing_is_an_ema_and_suppresses_a_one_frame_flicker() -> None:
    tracker = FaceTracker(smoothing=0.6)
    box = FaceBox(10, 10, 80, 80)
    happy, angry = onehot("happy", 0.9), onehot("angry", 0.9)
    labels = []
    for i in range(5):
        (t,) = tracker.update([box], happy[None], now=i * 0.1)
        labels.append(t.label)
    (t,) = tracker.update([box], angry[None], now=0.5)  # one misclassified frame
    labels.append(t.label)
    # Hand computation: after 5 identical frames p == happy; then 0.6*happy + 0.4*angry.
    expected = 0.6 * happy + 0.4 * angry
    np.testing.assert_allclose(t.probs, expected)
    assert t.probs[EMOTION_INDEX["happy"]] == pytest.approx(0.6 * 0.9 + 0.4 * (0.1 / 6))
    assert labels == ["happy"] * 6
    assert t.confidence == pytest.approx(expected.max())
    # Without smoothing the flicker shows.
    raw = FaceTracker(smoothing=0.0)
    raw.update([box], happy[None], now=0.0)
    (r,) = raw.update([box], angry[None], now=0.1)
    assert r.label == "angry"


def test_sustained_change_does_win_through_smoothing() -> None:
    tracker = FaceTracker(smoothing=0.6)
    box = FaceBox(10, 10, 80, 80)
    tracker.update([box], onehot("happy", 0.9)[None], now=0.0)
    label = None
    for i in range(1, 4):
        (t,) = tracker.update([box], onehot("sad", 0.9)[None], now=i * 0.1)
        label = t.label
    assert label == "sad"


def test_returned_tracks_are_immutable_snapshots() -> None:
    tracker = FaceTracker()
    box = FaceBox(10, 10, 80, 80)
    (first,) = tracker.update([box], probs_for("happy"), now=0.0)
    tracker.update([box], probs_for("sad"), now=0.1)
    assert first.label == "happy" and first.hits == 1  # an old view never changes
    with pytest.raises(ValueError):
        first.probs[0] = 1.0
    assert EMOTIONS[int(np.argmax(first.probs))] == "happy"


def test_bad_probs_shape_and_parameters_are_rejected() -> None:
    tracker = FaceTracker()
    with pytest.raises(ValueError):
        tracker.update([FaceBox(0, 0, 10, 10)], np.zeros((2, NUM_EMOTIONS)), now=0.0)
    with pytest.raises(ValueError):
        FaceTracker(smoothing=1.0)
    with pytest.raises(ValueError):
        FaceTracker(iou_threshold=0.0)
