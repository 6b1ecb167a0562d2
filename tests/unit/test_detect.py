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
