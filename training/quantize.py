"""Full-integer int8 LiteRT export: weights and activations in int8, calibrated on real training faces.

    python -m training.requantize --model models/fer-inceptionv3 --data ../shared/datasets/fer2013 [--faces 1400]

The dynamic-range export (`training.export`) keeps activations in float and quantizes them again
before every layer; here the whole network runs in int8 (XNNPACK's int8 kernels, on AMX/VNNI where
the CPU has them). `training.export` calls `try_full_int8` whenever it is given a data set, so every
export (`training.train`, `training.publish`) gets it, and keeps it only when its accuracy on the
split stays within `MAX_ACCURACY_LOSS` of the Keras model; otherwise the dynamic-range file stays.

Three choices, each measured on the shipped 96-px model (the numbers are in the README, "Measured"):
- Representative set: `REPRESENTATIVE_FACES` faces of the train split, the same number per class
  (a rare class gives what it has), fixed seed. 300 random faces lost 0.3-0.4 points on val;
  1,400 class-balanced ones lose none.
- InceptionV3's AveragePooling2D(3, stride 1, "same") layers become a depthwise convolution and a
  border correction (the same function): LiteRT's int8 AVERAGE_POOL_2D is not run by XNNPACK and
  took 28% of the time.
- FULLY_CONNECTED and SOFTMAX stay float (tf.lite's selective quantization): they are tiny, and int8
  probabilities come in steps of 1/256, which ties classes and coarsens the temperature scaling.

The CLI (`training.requantize`) re-quantizes a model folder in place (the shipped model, or a run's export): it writes
`model_int8.tflite` only if the full-integer file keeps the accuracy, and for a published model
updates metrics.json, its card and the README's results table, and refits the LiteRT ECE figures.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.emotions import NUM_EMOTIONS
from training.data import DatasetError, load_split
from training.inference import DEFAULT_BATCH_SIZE, as_faces, predict

log = logging.getLogger(__name__)

REPRESENTATIVE_FACES = 1400
MIN_REPRESENTATIVE_FACES = 140  # fewer faces than this cannot stand for the activations' ranges
MAX_ACCURACY_LOSS = 0.003  # 0.3 points of accuracy on the split, against the Keras model
FLOAT_OPS = ("FULLY_CONNECTED", "SOFTMAX")
SEED = 0


def representative_faces(data: str | Path, count: int = REPRESENTATIVE_FACES, seed: int = SEED,
                         skip_corrupt: bool = False) -> np.ndarray:
    """`count` faces of the train split, as many per class as it has up to count / 7, shuffled: (n, 48, 48, 1)."""
    train = load_split(data, "train", require_all_classes=False, skip_corrupt=skip_corrupt)
    rng = np.random.default_rng(seed)
    per_class = max(1, count // NUM_EMOTIONS)
    chosen = [rng.choice(members, min(per_class, len(members)), replace=False)
              for k in range(NUM_EMOTIONS) if len(members := np.flatnonzero(train.labels == k))]
    picked = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    if len(picked) < min(count, MIN_REPRESENTATIVE_FACES):
        raise DatasetError(f"{data}: the train split has {len(picked)} faces to calibrate the int8 model on; "
                           f"it needs at least {min(count, MIN_REPRESENTATIVE_FACES)}")
    rng.shuffle(picked)
    return as_faces(train.images[picked])


def _average_pool_as_depthwise(model: Any) -> Any:
    """A copy of `model` (same weights, same function) with every AveragePooling2D(3, stride 1, "same")
    written as a depthwise convolution times a border correction, which int8 XNNPACK runs."""
    import keras

    class PaddedAverage3x3(keras.layers.Layer):
        """The mean over each pixel's 3x3 neighbourhood inside the map (padding not counted)."""

        def build(self, input_shape: tuple) -> None:
            height, width, channels = input_shape[1:]
            self._kernel = np.full((3, 3, channels, 1), 1.0 / 9.0, np.float32)
            rows = np.array([min(i + 1, height - 1) - max(i - 1, 0) + 1 for i in range(height)])
            cols = np.array([min(j + 1, width - 1) - max(j - 1, 0) + 1 for j in range(width)])
            self._correction = (9.0 / np.outer(rows, cols)).astype(np.float32)[None, :, :, None]
            self._identity = height == 1 and width == 1  # a 1x1 map is its own mean

        def call(self, x: Any) -> Any:
            if self._identity:
                return x
            return keras.ops.depthwise_conv(x, self._kernel, strides=1, padding="same") * self._correction

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if (isinstance(layer, keras.layers.AveragePooling2D) and tuple(config["pool_size"]) == (3, 3)
                and tuple(config["strides"]) == (1, 1) and config["padding"] == "same"):
            return PaddedAverage3x3(name=layer.name)
        return layer.__class__.from_config(config)

    rewritten = keras.models.clone_model(model, clone_function=clone, recursive=True)
    rewritten.set_weights(model.get_weights())
    return rewritten


def convert_full_int8(model: Any, faces: np.ndarray) -> bytes:
    """The full-integer int8 .tflite of `model` (float32 faces in, float32 probabilities out), calibrated on `faces`."""
    import tensorflow as tf

    rewritten = _average_pool_as_depthwise(model)
    faces = as_faces(faces)

    def representative() -> Any:
        for face in faces:
            yield [face[None]]

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(rewritten)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS))
        # The debugger is tf.lite's route to selective quantization; it runs no debugging here.
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([face[None]] for face in faces[:4]), debug_options=options)
        return debugger.get_nondebug_quantized_model()


def accuracy_of(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean()) if len(labels) else 0.0


def try_full_int8(model: Any, tflite_path: Path, data: str | Path, split: str = "val", *,
                  faces: int = REPRESENTATIVE_FACES, skip_corrupt: bool = False,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, Any]:
    """Replace the (dynamic-range) int8 file at `tflite_path` by a full-integer one if that keeps the
    accuracy on `split` within MAX_ACCURACY_LOSS of `model`'s; the record says what was kept and why."""
    from fer_core.classify import KerasClassifier, LiteRTClassifier

    start = time.perf_counter()
    try:
        representative = representative_faces(data, faces, skip_corrupt=skip_corrupt)
    except DatasetError as exc:
        log.warning("full-integer int8 skipped: %s", exc)
        return {"quantization": "dynamic-range", "full_int8_skipped": str(exc)}
    evaluation = load_split(data, split, require_all_classes=False, skip_corrupt=skip_corrupt)
    candidate = tflite_path.with_name(f".full-{tflite_path.name}")
    candidate.write_bytes(convert_full_int8(model, representative))
    try:
        raw = {"temperature": 1.0, "flip_average": False}  # the formats are compared, not a calibration
        keras = accuracy_of(predict(KerasClassifier(tflite_path, model=model, **raw), evaluation.images, batch_size),
                          evaluation.labels)
        dynamic = accuracy_of(predict(LiteRTClassifier(tflite_path, **raw), evaluation.images, batch_size),
                            evaluation.labels)
        full = accuracy_of(predict(LiteRTClassifier(candidate, **raw), evaluation.images, batch_size),
                         evaluation.labels)
        kept = full >= keras - MAX_ACCURACY_LOSS
        if kept:
            os.replace(candidate, tflite_path)
        else:
            log.warning("kept the dynamic-range int8 model: full-integer int8 scores %.4f on %s, Keras %.4f",
                        full, split, keras)
    finally:
        candidate.unlink(missing_ok=True)
    return {
        "quantization": "full-integer" if kept else "dynamic-range",
        "representative_faces": len(representative),
        "float_ops": list(FLOAT_OPS),
        "split": split,
        "keras_accuracy": keras,
        "dynamic_range_accuracy": dynamic,
        "full_integer_accuracy": full,
        "max_accuracy_loss": MAX_ACCURACY_LOSS,
        "seconds": round(time.perf_counter() - start, 1),
    }
