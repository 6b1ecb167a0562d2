"""HaarFaceDetector on real photos: input formats, scaling, confidence filter, parameters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core.detect import DetectorParams, FaceBox, HaarFaceDetector, iou
from fer_core.settings import Settings

PHOTO = "2008_002470.jpg"  # 500x332, six faces of 37-53 px


@pytest.fixture(scope="module")
def photo(group_photos: Path) -> np.ndarray:
    image = cv2.imread(str(group_photos / PHOTO))
    assert image is not None
    return image


def as_set(boxes: list[FaceBox]) -> set[tuple[int, int, int, int]]:
    return {b.as_tuple() for b in boxes}


def test_finds_faces_and_same_boxes_for_bgr_bgra_gray(photo: np.ndarray) -> None:
    detector = HaarFaceDetector()
    bgr = detector.detect(photo)
    assert len(bgr) >= 4
    assert as_set(detector.detect(cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA))) == as_set(bgr)
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    assert as_set(detector.detect(gray)) == as_set(bgr)
    assert as_set(detector.detect(gray[:, :, None])) == as_set(bgr)


@pytest.mark.parametrize("shape", [(0, 0, 3), (1, 1), (10, 10, 3), (23, 400, 3), (400, 23), (24, 24, 4)])
def test_tiny_or_empty_frames_give_no_faces(shape: tuple[int, ...]) -> None:
    assert HaarFaceDetector().detect(np.zeros(shape, dtype=np.uint8)) == []


def test_blank_frame_gives_no_faces() -> None:
    assert HaarFaceDetector().detect(np.full((480, 640, 3), 127, dtype=np.uint8)) == []


def test_boxes_are_mapped_back_to_full_resolution(photo: np.ndarray) -> None:
    """A 2x frame detected at the photo's own width gives the photo's boxes, doubled."""
    width = photo.shape[1]
    native = HaarFaceDetector(DetectorParams(detect_width=width)).detect(photo)
    big = cv2.resize(photo, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    mapped = HaarFaceDetector(DetectorParams(detect_width=width)).detect(big)
    assert len(native) >= 4
    doubled = [FaceBox(b.x * 2, b.y * 2, b.w * 2, b.h * 2) for b in native]
    matched = [max(iou(d, m) for m in mapped) for d in doubled]
    assert sum(m > 0.7 for m in matched) >= len(doubled) - 1  # resampling may move one face
    for box in mapped:
        assert box.x >= 0 and box.y >= 0 and box.x + box.w <= big.shape[1] and box.y + box.h <= big.shape[0]


def test_never_upscales(photo: np.ndarray) -> None:
    width = photo.shape[1]
    at_width = HaarFaceDetector(DetectorParams(detect_width=width)).detect(photo)
    wider = HaarFaceDetector(DetectorParams(detect_width=4 * width)).detect(photo)
    assert as_set(wider) == as_set(at_width)


def test_min_face_fraction_drops_small_faces(photo: np.ndarray) -> None:
    small_ok = HaarFaceDetector(DetectorParams(min_face_fraction=0.05)).detect(photo)
    big_only = HaarFaceDetector(DetectorParams(min_face_fraction=0.16)).detect(photo)
    assert len(big_only) < len(small_ok)
    assert all(b.h >= 0.16 * photo.shape[0] - 1 for b in big_only)


def test_confidence_is_reported_and_filters(photo: np.ndarray) -> None:
    params = DetectorParams(min_confidence=-np.inf)
    everything = HaarFaceDetector(params).detect(photo)
    confidences = sorted(b.confidence for b in everything)
    assert len(set(confidences)) > 1  # real level weights, not a constant
    threshold = confidences[len(confidences) // 2]
    kept = HaarFaceDetector(replace(params, min_confidence=threshold)).detect(photo)
    assert as_set(kept) == {b.as_tuple() for b in everything if b.confidence >= threshold}
    assert 0 < len(kept) < len(everything)


def test_params_from_settings_and_validation() -> None:
    settings = Settings(detect_width=800, scale_factor=1.15, min_neighbors=5, min_face_fraction=0.07,
                        min_face_confidence=2.5)
    params = DetectorParams.from_settings(settings)
    assert (params.detect_width, params.scale_factor, params.min_neighbors, params.min_face_fraction,
            params.min_confidence) == (800, 1.15, 5, 0.07, 2.5)
    # One set of measured defaults: Settings' field defaults (not env/secrets overrides) equal DetectorParams'.
    fields = Settings.model_fields
    assert DetectorParams() == DetectorParams(
        detect_width=fields["detect_width"].default,
        scale_factor=fields["scale_factor"].default,
        min_neighbors=fields["min_neighbors"].default,
        min_face_fraction=fields["min_face_fraction"].default,
        min_confidence=fields["min_face_confidence"].default,
    )
    with pytest.raises(ValueError):
        DetectorParams(scale_factor=1.0)
    with pytest.raises(ValueError):
        DetectorParams(min_face_fraction=0.0)


def test_each_detector_owns_its_cascade() -> None:
    a, b = HaarFaceDetector(), HaarFaceDetector()
    assert a._cascade is not b._cascade


def test_facebox_helpers() -> None:
    box = FaceBox(1, 2, 3, 4, 0.5)
    assert box.as_tuple() == (1, 2, 3, 4) and box.area == 12
    assert iou(box, box) == 1.0 and iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


# --- the search near given boxes (track-guided detection) ---------------------------------------------


def best_overlap(box: FaceBox, others: list[FaceBox]) -> float:
    return max((iou(box, o) for o in others), default=0.0)


def test_near_search_finds_the_faces_around_the_boxes_it_is_given(photo: np.ndarray) -> None:
    detector = HaarFaceDetector()
    faces = detector.detect(photo)
    near = detector.detect_near(photo, faces)
    assert len(near) == len(faces)
    assert all(best_overlap(f, near) > 0.5 for f in faces)


def test_near_search_follows_a_face_that_moved_and_ignores_faces_elsewhere(photo: np.ndarray) -> None:
    detector = HaarFaceDetector()
    faces = detector.detect(photo)
    target = faces[0]
    # The photo shifted by a fifth of the face: the face is still found near its old box, and only it.
    shift = round(target.w / 5)
    shifted = np.ascontiguousarray(np.roll(photo, (shift, shift), axis=(0, 1)))
    near = detector.detect_near(shifted, [target])
    assert len(near) == 1
    assert iou(near[0], FaceBox(target.x + shift, target.y + shift, target.w, target.h)) > 0.5


def test_near_search_looks_only_for_faces_of_about_the_given_size(photo: np.ndarray) -> None:
    detector = HaarFaceDetector()
    face = detector.detect(photo)[0]
    cx, cy = face.x + face.w // 2, face.y + face.h // 2
    three_times = FaceBox(cx - 3 * face.w // 2, cy - 3 * face.h // 2, 3 * face.w, 3 * face.h)
    assert best_overlap(face, detector.detect_near(photo, [three_times])) < 0.5
    a_third = FaceBox(cx - face.w // 6, cy - face.h // 6, face.w // 3, face.h // 3)
    assert detector.detect_near(photo, [a_third]) == []


def test_near_search_finds_nothing_where_there_is_no_face(photo: np.ndarray) -> None:
    detector = HaarFaceDetector()
    faces = detector.detect(photo)
    empty = np.full_like(photo, 127)
    assert detector.detect_near(empty, faces) == []
    assert detector.detect_near(photo, []) == []


def test_near_search_at_the_frame_edge_and_a_face_seen_twice_counts_once(photo: np.ndarray) -> None:
    detector = HaarFaceDetector()
    faces = detector.detect(photo)
    h, w = photo.shape[:2]
    # A box hanging off every edge, and each face given twice: no error, each face once.
    edges = [FaceBox(-30, -30, 60, 60), FaceBox(w - 30, h - 30, 60, 60)]
    near = detector.detect_near(photo, edges + faces + faces)
    assert len(near) == len(faces)
    assert all(b.x >= 0 and b.y >= 0 and b.x + b.w <= w and b.y + b.h <= h for b in near)


def test_fer_settings_are_a_mode_of_this_detector(photo: np.ndarray) -> None:
    """fer's detector: scale 1.1, 5 neighbours, faces from 50 px, the full-resolution frame, no filter."""
    from fer_core.detect import FER_SETTINGS, cascade_path

    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    big = cv2.resize(gray, None, fx=2.0, fy=2.0)
    reference = cv2.CascadeClassifier(str(cascade_path())).detectMultiScale(
        big, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    ours = HaarFaceDetector(FER_SETTINGS).detect(big)
    assert as_set(ours) == {tuple(int(v) for v in r) for r in reference}
    assert len(ours) >= 3
