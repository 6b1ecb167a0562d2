"""A missing, corrupt or wrong model file gives a clear ModelError, for both backends."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fer_core.classify import KerasClassifier, LiteRTClassifier, load_classifier
from fer_core.model_io import ModelError

pytestmark = pytest.mark.slow


def _tiny_model(outputs: int, input_shape: tuple[int, ...] = (48, 48, 1)):
    import keras

    inputs = keras.Input(shape=input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="softmax")(x))


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model not found"):
        load_classifier(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="model file not found"):
        load_classifier(tmp_path / "empty", "keras")


def test_corrupt_model_files(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"this is not a zip file" * 10)
    (tmp_path / "model_int8.tflite").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="cannot load model"):
        KerasClassifier(tmp_path)
    with pytest.raises(ModelError, match="cannot load LiteRT model"):
        LiteRTClassifier(tmp_path)


def test_wrong_number_of_outputs_or_wrong_input(tmp_path: Path) -> None:
    import tensorflow as tf

    five = tmp_path / "five"
    five.mkdir()
    model = _tiny_model(5)
    model.save(five / "model.keras")
    with pytest.raises(ModelError, match="5 outputs; ClassMood needs 7"):
        KerasClassifier(five)
    (five / "model_int8.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    with pytest.raises(ModelError, match="5 outputs"):
        LiteRTClassifier(five)

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    _tiny_model(7, (75, 75, 3)).save(rgb / "model.keras")
    with pytest.raises(ModelError, match="input shape"):
        KerasClassifier(rgb)


def test_a_valid_model_predicts_probabilities_in_one_batched_call(tmp_path: Path) -> None:
    _tiny_model(7).save(tmp_path / "model.keras")
    classifier = KerasClassifier(tmp_path)
    probs = classifier.predict(np.random.default_rng(0).uniform(0, 255, (5, 48, 48, 1)).astype(np.float32))
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert classifier.predict(np.empty((0, 48, 48, 1), np.float32)).shape == (0, 7)
    with pytest.raises(ValueError, match="faces must be"):
        classifier.predict(np.zeros((2, 75, 75, 3), np.float32))


def test_a_stored_temperature_rescales_both_backends_and_a_recalibration_is_picked_up(tmp_path: Path) -> None:
    import tensorflow as tf

    from fer_core.calibration import apply_temperature

    model = _tiny_model(7)
    model.save(tmp_path / "model.keras")
    (tmp_path / "model_int8.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    faces = np.random.default_rng(1).uniform(0, 255, (6, 48, 48, 1)).astype(np.float32)
    raw = KerasClassifier(tmp_path).predict(faces)  # no calibration.json: raw softmax
    (tmp_path / "calibration.json").write_text('{"temperature": 0.25}')
    for classifier in (KerasClassifier(tmp_path), LiteRTClassifier(tmp_path)):
        assert classifier.temperature == 0.25
        np.testing.assert_allclose(classifier.predict(faces), apply_temperature(raw, 0.25), atol=1e-4)
    np.testing.assert_allclose(KerasClassifier(tmp_path, temperature=1.0).predict(faces), raw, atol=1e-6)

    assert load_classifier(tmp_path, "keras").temperature == 0.25
    (tmp_path / "calibration.json").write_text('{"temperature": 2.0}')
    os.utime(tmp_path / "calibration.json", (1e9, 1e9))  # a new mtime even on a coarse-clock file system
    assert load_classifier(tmp_path, "keras").temperature == 2.0  # not the cached 0.25 classifier

    (tmp_path / "calibration.json").write_text('{"temperature": -1}')
    with pytest.raises(ModelError, match="outside"):
        LiteRTClassifier(tmp_path)


def test_a_model_that_declares_flip_averaging_is_flip_averaged_on_both_backends_unless_overridden(
    tmp_path: Path,
) -> None:
    import keras
    import tensorflow as tf

    from fer_core.calibration import apply_temperature

    inputs = keras.Input(shape=(48, 48, 1))  # sees where each pixel is, so a mirror image changes its output
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(flat))
    model.save(tmp_path / "model.keras")
    (tmp_path / "model_int8.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    faces = np.random.default_rng(3).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    raw = KerasClassifier(tmp_path).predict(faces)
    mirrored = KerasClassifier(tmp_path).predict(faces[:, :, ::-1, :].copy())
    assert not np.allclose(raw, mirrored, atol=1e-4)
    (tmp_path / "calibration.json").write_text('{"temperature": 0.5, "flip_average": true}')
    expected = apply_temperature((raw + mirrored) / 2, 0.5)
    for classifier in (KerasClassifier(tmp_path), LiteRTClassifier(tmp_path)):
        assert classifier.flip_average
        np.testing.assert_allclose(classifier.predict(faces), expected, atol=1e-4)
    assert load_classifier(tmp_path, "litert").flip_average
    assert not load_classifier(tmp_path, "litert", flip_average=False).flip_average  # the setting's override
