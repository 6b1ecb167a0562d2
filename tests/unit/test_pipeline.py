"""FramePipeline: one classifier call per frame, detection cadence, odd frames, drawing, stats."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.detect import FaceBox, HaarFaceDetector
from fer_core.pipeline import EMOTION_BGR, STAGES, FramePipeline, as_bgr
from fer_core.track import FaceTracker
from tests.doubles import FakeClassifier, StubDetector

BOXES = [FaceBox(40, 40, 60, 60, 3.0), FaceBox(200, 60, 70, 70, 4.0), FaceBox(400, 100, 50, 50, 2.0)]


def frame(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def make(boxes=BOXES, detect_every: int = 1, label: str | None = "happy", detector=None):
    detector = detector or StubDetector(boxes)
    classifier = FakeClassifier(label)
    return FramePipeline(detector, classifier, FaceTracker(), detect_every=detect_every), detector, classifier


def test_all_faces_of_a_frame_go_through_one_classifier_call() -> None:
    pipeline, _, classifier = make()
    _, faces = pipeline.process(frame(), now=0.0)
    assert classifier.batch_sizes == [3]
    assert [f.track_id for f in faces] == [1, 2, 3]
    assert [f.box for f in faces] == BOXES
    assert all(f.label == "happy" and f.confidence == pytest.approx(0.9) and f.fresh for f in faces)


def test_no_faces_no_classifier_call() -> None:
    pipeline, _, classifier = make(boxes=[])
    _, faces = pipeline.process(frame(), now=0.0)
    assert faces == [] and classifier.batch_sizes == []


def test_detects_every_kth_frame_and_coasts_in_between() -> None:
    pipeline, detector, classifier = make(detect_every=3)
    results = [pipeline.process(frame(), now=i * 0.1)[1] for i in range(7)]
    assert len(detector.calls) == 3  # frames 0, 3, 6
    assert classifier.batch_sizes == [3, 3, 3]
    assert [all(f.fresh for f in faces) for faces in results] == [True, False, False, True, False, False, True]
    assert all([f.track_id for f in faces] == [1, 2, 3] for faces in results)  # coasted faces keep their ids
    stats = pipeline.stats()
    assert (stats.frames, stats.detect_frames, stats.faces_classified) == (7, 3, 9)


def test_detection_happens_on_grayscale_once_per_frame() -> None:
    pipeline, detector, _ = make()
    pipeline.process(frame(), now=0.0)
    assert detector.calls == [(480, 640)]  # gray, computed once and shared with the crops


@pytest.mark.parametrize(
    "odd",
    [
        np.zeros((480, 640), np.uint8),  # gray
        np.zeros((480, 640, 1), np.uint8),
        np.zeros((480, 640, 4), np.uint8),  # BGRA
        np.zeros((8, 8, 3), np.uint8),  # tiny
        np.zeros((1, 1), np.uint8),
        np.zeros((2160, 3840, 3), np.uint8),  # 4K
        np.zeros((480, 640, 3), np.float32),  # float 0..1
        np.zeros((480, 1280, 3), np.uint8)[:, ::2],  # non-contiguous view
    ],
    ids=["gray", "gray1", "bgra", "tiny", "1px", "4k", "float", "strided"],
)
def test_odd_frames_with_the_real_detector_never_raise(odd: np.ndarray) -> None:
    pipeline, _, _ = make(detector=HaarFaceDetector())
    annotated, faces = pipeline.process(odd, now=0.0)
    assert faces == []
    assert annotated.dtype == np.uint8 and annotated.shape == (*odd.shape[:2], 3)


@pytest.mark.parametrize("bad", [None, np.zeros((0, 0, 3), np.uint8), np.zeros(10, np.uint8),
                                 np.zeros((4, 4, 2), np.uint8)])
def test_non_images_pass_through(bad) -> None:
    pipeline, detector, _ = make()
    out, faces = pipeline.process(bad, now=0.0)
    assert out is bad and faces == [] and detector.calls == []


def test_faces_in_gray_and_bgra_frames_are_found_and_drawn_in_colour() -> None:
    pipeline, _, _ = make(boxes=BOXES[:1])
    gray = np.full((480, 640), 30, np.uint8)
    annotated, faces = pipeline.process(gray, now=0.0)
    assert len(faces) == 1 and annotated.shape == (480, 640, 3)
    x, y, _, h = BOXES[0].as_tuple()
    assert tuple(annotated[y + h // 2, x]) == EMOTION_BGR["happy"]  # left edge of the box, happy's colour


def test_annotation_draws_box_and_label_and_leaves_the_input_alone() -> None:
    source = np.zeros((480, 640, 3), np.uint8)
    before = source.copy()
    pipeline, _, _ = make(boxes=[FaceBox(200, 200, 100, 100)], label="sad")
    annotated, _ = pipeline.process(source, now=0.0)
    np.testing.assert_array_equal(source, before)
    assert tuple(annotated[250, 200]) == EMOTION_BGR["sad"]  # box edge
    assert tuple(annotated[250, 250]) == (0, 0, 0)  # the face itself is not painted over
    label_area = annotated[170:200, 200:300]  # the "sad 90%" tag above the box
    assert (label_area == np.array(EMOTION_BGR["sad"], np.uint8)).all(axis=2).mean() > 0.3
    assert (label_area.min(axis=2) > 200).sum() > 20  # white (anti-aliased) text on it


def test_label_goes_below_a_box_at_the_top_edge() -> None:
    pipeline, _, _ = make(boxes=[FaceBox(100, 0, 80, 80)], label="fear")
    annotated, _ = pipeline.process(np.zeros((300, 400, 3), np.uint8), now=0.0)
    below = annotated[80:110, 100:180]
    assert (below == np.array(EMOTION_BGR["fear"], np.uint8)).all(axis=2).mean() > 0.3


def test_annotate_off_returns_the_bgr_frame_untouched() -> None:
    detector = StubDetector(BOXES)
    pipeline = FramePipeline(detector, FakeClassifier(), FaceTracker(), annotate=False)
    src = frame()
    out, faces = pipeline.process(src, now=0.0)
    assert len(faces) == 3
    np.testing.assert_array_equal(out, src)


def test_stats_cover_every_stage() -> None:
    pipeline, _, _ = make(detect_every=2)
    for i in range(6):
        pipeline.process(frame(), now=i / 10)
    stats = pipeline.stats()
    assert set(stats.mean_ms) == set(STAGES) == set(stats.recent_ms)
    assert all(v >= 0 for v in stats.mean_ms.values())
    assert stats.mean_ms["detect"] > 0 and stats.mean_ms["annotate"] > 0
    assert stats.mean_total_ms == pytest.approx(sum(stats.mean_ms.values()))
    assert stats.analysed_fps > 0


def test_a_wrong_classifier_output_is_an_error() -> None:
    class Broken(FakeClassifier):
        def _predict(self, faces: np.ndarray) -> np.ndarray:
            return np.zeros((len(faces), 5), np.float32)

    pipeline = FramePipeline(StubDetector(BOXES), Broken(), FaceTracker())
    with pytest.raises(ValueError, match="classifier returned"):
        pipeline.process(frame(), now=0.0)


def test_as_bgr_conversions() -> None:
    assert as_bgr(np.ones((4, 4), np.float64))[0, 0].tolist() == [255, 255, 255]  # float 0..1 scaled
    assert as_bgr(np.full((4, 4, 3), 300.0))[0, 0].tolist() == [255, 255, 255]  # clipped
    assert as_bgr(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)


def test_boxes_can_show_the_pages_now_instead_of_the_frame_label() -> None:
    # The Live page draws each face's label over the page's "now" window, not this frame's.
    from fer_core.aggregate import NowFace
    from fer_core.pipeline import NEUTRAL_BGR

    pipeline, _, _ = make(boxes=[FaceBox(200, 200, 100, 100)], label="sad")
    annotated, faces = pipeline.process(np.zeros((480, 640, 3), np.uint8), 0.0,
                                        {1: NowFace(1, "happy", 0.8, 3)})
    assert faces[0].label == "sad"  # the frame's own label is unchanged...
    assert tuple(annotated[250, 200]) == EMOTION_BGR["happy"]  # ...but the box shows "now"
    # A face that is not in "now" yet gets a plain box with its number only.
    annotated, _ = pipeline.process(np.zeros((480, 640, 3), np.uint8), 0.1, {})
    assert tuple(annotated[250, 200]) == NEUTRAL_BGR
