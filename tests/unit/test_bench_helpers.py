"""The benchmark's clip and backend discovery (no timing is asserted: speed figures live in the bench)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_core.bench import available_backends, pan_zoom_clip
from fer_core.detector_eval import load_ground_truth


def test_pan_zoom_clip_has_the_size_and_moves(group_photos: Path) -> None:
    photos = [i.path for i in load_ground_truth(group_photos)]
    frames = list(pan_zoom_clip(photos, (1280, 720), 18))
    assert len(frames) == 18
    assert all(f.shape == (720, 1280, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # panning/zooming, not a still


def test_pan_zoom_clip_needs_photos(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        next(pan_zoom_clip([tmp_path / "missing.jpg"], (640, 480), 3))


def test_available_backends(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"x")
    assert available_backends(tmp_path, "all") == ["keras"]
    assert available_backends(tmp_path, "litert") == []
    (tmp_path / "model_int8.tflite").write_bytes(b"x")
    assert available_backends(tmp_path, "all") == ["keras", "litert"]
    assert available_backends(tmp_path, "auto") == ["litert"]
    assert available_backends(tmp_path / "model.keras", "all") == ["keras"]
