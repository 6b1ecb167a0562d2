"""Face crops -> model input. Shared by training, evaluation and the live pipeline.

The model takes 48x48 grayscale uint8 faces (FER2013's format) and does the rest
(resize to its input size, 3 channels, scaling) itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_core.emotions import FACE_SIZE

# A face box is (x, y, w, h) in pixels of the frame.
Box = tuple[int, int, int, int]


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR, BGRA or already-gray image -> 2-D uint8 gray."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"unsupported image shape {image.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return gray


def to_face_input(face: np.ndarray) -> np.ndarray:
    """One face image of any size/channels -> (48, 48) uint8 gray."""
    gray = to_gray(face)
    if gray.shape != (FACE_SIZE, FACE_SIZE):
        shrinking = gray.shape[0] > FACE_SIZE or gray.shape[1] > FACE_SIZE
        gray = cv2.resize(
            gray, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return gray


def crop_faces(gray_frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Crop every box (clipped to the frame) -> (n, 48, 48, 1) float32 batch in 0..255."""
    height, width = gray_frame.shape[:2]
    batch = np.empty((len(boxes), FACE_SIZE, FACE_SIZE, 1), dtype=np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(width, int(x + w)), min(height, int(y + h))
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"face box {(x, y, w, h)} lies outside the {width}x{height} frame")
        batch[i, :, :, 0] = to_face_input(gray_frame[y0:y1, x0:x1])
    return batch
