"""Face crops -> the model's 48x48 grayscale input."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.preprocess import crop_faces, to_face_input, to_gray


def test_to_gray_accepts_bgr_bgra_and_gray() -> None:
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 2] = 255  # pure red
    assert to_gray(bgr).shape == (10, 12)
    assert 70 <= int(to_gray(bgr)[0, 0]) <= 80  # ITU-R 601 red weight
    assert to_gray(np.dstack([bgr, np.full((10, 12), 255, np.uint8)])).shape == (10, 12)
    assert to_gray(np.ones((5, 5), np.uint8)).shape == (5, 5)
    with pytest.raises(ValueError, match="unsupported"):
        to_gray(np.zeros((4, 4, 2), np.uint8))


def test_to_face_input_resizes_to_48() -> None:
    assert to_face_input(np.zeros((200, 150, 3), np.uint8)).shape == (48, 48)
    assert to_face_input(np.zeros((20, 20), np.uint8)).shape == (48, 48)
    face = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
    assert np.array_equal(to_face_input(face), face)  # FER2013 images pass unchanged


def test_crop_faces_clips_to_frame_and_keeps_pixel_range() -> None:
    frame = np.zeros((100, 100), np.uint8)
    frame[10:60, 10:60] = 200
    batch = crop_faces(frame, [(10, 10, 50, 50), (80, 80, 40, 40)])
    assert batch.shape == (2, 48, 48, 1) and batch.dtype == np.float32
    assert batch[0].min() == 200 and batch[1].max() == 0
    assert crop_faces(frame, []).shape == (0, 48, 48, 1)
    with pytest.raises(ValueError, match="outside"):
        crop_faces(frame, [(150, 150, 10, 10)])
