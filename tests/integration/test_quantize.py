"""Full-integer int8 export on a small trained model (TensorFlow; slow): same function after the
average-pool rewrite, int8 inside with float faces in and float probabilities out, kept only when
it keeps the accuracy, and the representative faces balanced over the classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_core.emotions import NUM_EMOTIONS
from training import quantize

pytestmark = pytest.mark.slow


def small_model(pool_input: int = 48):
    """A small CNN with the layers the rewrite and the float ops concern: 3x3/1/same average pools on
    a 6x6 and a 1x1 map, and a softmax Dense head."""
    import keras
    from keras import layers

    faces = keras.Input((48, 48, 1))
    x = layers.Rescaling(1 / 127.5, offset=-1)(faces)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.MaxPooling2D(4)(x)  # 23 -> 5
    x = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)  # 5 -> 3
    x = layers.MaxPooling2D(3)(x)  # -> 1x1
    x = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(faces, layers.Dense(NUM_EMOTIONS, activation="softmax")(x))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import write_folder_dataset

    return write_folder_dataset(tmp_path_factory.mktemp("quantize-data"), {"train": 24, "val": 6})


@pytest.fixture(scope="module")
def trained(data: Path):
    """The small CNN trained until it tells the (easy, stripe-patterned) classes apart."""
    import keras

    from training.data import load_split

    keras.utils.set_random_seed(0)
    model = small_model()
    train = load_split(data, "train")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.images[..., None].astype("float32"), train.labels, epochs=60, batch_size=32, verbose=0)
    val = load_split(data, "val")
    assert (model.predict(val.images[..., None].astype("float32"), verbose=0).argmax(1) == val.labels).mean() >= 0.9
    return model


def test_the_average_pool_rewrite_computes_the_same_function(trained) -> None:
    import keras

    rewritten = quantize._average_pool_as_depthwise(trained)
    assert not any(isinstance(layer, keras.layers.AveragePooling2D) for layer in rewritten.layers)
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(rewritten(faces).numpy(), trained(faces).numpy(), atol=1e-6)


def test_full_integer_export_is_int8_inside_and_keeps_float_faces_and_probabilities(
        trained, data: Path, tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from fer_core.classify import LiteRTClassifier
    from training.data import load_split
    from training.export import convert_to_tflite_int8

    path = tmp_path / "model_int8.tflite"
    convert_to_tflite_int8(trained, path)
    dynamic = path.read_bytes()
    record = quantize.try_full_int8(trained, path, data, "val", faces=140)
    assert record["quantization"] == "full-integer" and path.read_bytes() != dynamic
    assert record["representative_faces"] == 140
    assert record["full_integer_accuracy"] >= record["keras_accuracy"] - quantize.MAX_ACCURACY_LOSS

    interpreter = Interpreter(model_path=str(path))
    ops = {op["op_name"]: op for op in interpreter._get_ops_details()}
    assert "AVERAGE_POOL_2D" not in ops and "DEPTHWISE_CONV_2D" in ops
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert all(tensors[op["inputs"][0]]["dtype"] == np.int8 for op in convs)  # activations in int8
    assert ops["SOFTMAX"] and tensors[ops["SOFTMAX"]["outputs"][0]]["dtype"] == np.float32
    assert interpreter.get_input_details()[0]["dtype"] == np.float32

    val = load_split(data, "val")
    faces = val.images[..., None].astype("float32")
    probs = LiteRTClassifier(path, temperature=1.0, flip_average=False).predict(faces)
    assert probs.shape == (len(faces), NUM_EMOTIONS) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert len(np.unique(probs)) > 256  # float probabilities, not int8's 1/256 steps
    assert (probs.argmax(1) == trained.predict(faces, verbose=0).argmax(1)).mean() >= 0.95


def test_the_dynamic_range_file_stays_when_full_integer_loses_accuracy(
        trained, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.export import convert_to_tflite_int8

    path = tmp_path / "model_int8.tflite"
    convert_to_tflite_int8(trained, path)
    dynamic = path.read_bytes()
    monkeypatch.setattr(quantize, "MAX_ACCURACY_LOSS", -1.0)  # nothing can be that good
    record = quantize.try_full_int8(trained, path, data, "val", faces=140)
    assert record["quantization"] == "dynamic-range" and path.read_bytes() == dynamic
    assert not list(tmp_path.glob(".full-*"))


def test_too_few_training_faces_keep_the_dynamic_range_file(trained, tmp_path: Path) -> None:
    from tests.conftest import write_folder_dataset
    from training.export import convert_to_tflite_int8

    tiny = write_folder_dataset(tmp_path / "tiny", {"train": 3, "val": 2})
    path = tmp_path / "model_int8.tflite"
    convert_to_tflite_int8(trained, path)
    dynamic = path.read_bytes()
    record = quantize.try_full_int8(trained, path, tiny, "val")
    assert record["quantization"] == "dynamic-range" and "21 faces" in record["full_int8_skipped"]
    assert path.read_bytes() == dynamic


def test_representative_faces_are_balanced_over_the_classes(data: Path) -> None:
    from training.data import load_split

    faces = quantize.representative_faces(data, 140)
    assert faces.shape == (140, 48, 48, 1) and faces.dtype == np.float32
    train = load_split(data, "train")
    flat = train.images.reshape(len(train), -1)
    index = {row.tobytes(): label for row, label in zip(flat, train.labels, strict=True)}
    labels = [index[f[..., 0].astype(np.uint8).reshape(-1).tobytes()] for f in faces]
    assert np.bincount(labels, minlength=NUM_EMOTIONS).tolist() == [20] * NUM_EMOTIONS
    np.testing.assert_array_equal(faces, quantize.representative_faces(data, 140))  # the same set each time
