"""The whole pipeline on real pixels with the real model, and no train/serve skew."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core.classify import KerasClassifier, LiteRTClassifier
from fer_core.detect import HaarFaceDetector
from fer_core.emotions import EMOTIONS
from fer_core.pipeline import FramePipeline
from fer_core.preprocess import crop_faces
from fer_core.track import FaceTracker

pytestmark = pytest.mark.slow

FER_VAL = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "fer2013" / "val"


def test_real_faces_are_found_and_labelled_with_confidence(group_photos: Path, real_classifier) -> None:
    frame = cv2.resize(cv2.imread(str(group_photos / "2008_002506.jpg")), (640, 480))
    pipeline = FramePipeline(HaarFaceDetector(), real_classifier, FaceTracker(), detect_every=1)
    annotated, faces = pipeline.process(frame, 1_800_000_000.0)
    assert len(faces) == 3  # the three men in the photo
    for face in faces:
        assert face.label in EMOTIONS
        assert 0.0 < face.confidence <= 1.0
        assert face.probs.sum() == pytest.approx(1.0, abs=1e-3)
    assert annotated.shape == frame.shape and not np.array_equal(annotated, frame)  # boxes and labels drawn
    assert pipeline.stats().faces_classified == 3


def test_live_crop_and_training_loader_feed_the_model_the_same_face(real_model_dir: Path) -> None:
    from training.data import load_split

    if not FER_VAL.is_dir():
        pytest.skip(f"FER2013 val split not found at {FER_VAL}")
    val = load_split(FER_VAL.parent, "val", require_all_classes=False)
    faces = val.images[:: len(val) // 16][:16]
    # The live path: each face sits in a webcam frame at 4x size and is cropped from its box.
    frame = np.full((480, 640), 90, np.uint8)
    live = []
    for face in faces:
        frame[100:292, 200:392] = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
        live.append(crop_faces(frame, [(200, 100, 192, 192)])[0])
    live_batch = np.stack(live)
    train_batch = faces[..., None].astype(np.float32)
    assert np.abs(live_batch - train_batch).mean() < 2.0  # same pixels, up to resampling

    keras = KerasClassifier(real_model_dir)
    p_train, p_live = keras.predict(train_batch), keras.predict(live_batch)
    assert np.abs(p_train - p_live).mean() < 0.02
    assert (p_train.argmax(1) == p_live.argmax(1)).mean() >= 0.8

    litert = LiteRTClassifier(real_model_dir)
    p_lite = litert.predict(train_batch)
    assert np.abs(p_train - p_lite).mean() < 0.02
    assert (p_train.argmax(1) == p_lite.argmax(1)).mean() >= 0.8
