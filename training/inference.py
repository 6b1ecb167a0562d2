"""Batched emotion prediction with either backend, for evaluation, export checks and timing.

- keras: the float32 model (fer_core.model_io.load_keras_model upcasts float16-stored weights);
- litert: the int8 `.tflite` export through `ai_edge_litert` (tf.lite.Interpreter is deprecated).

Both take (n, 48, 48, 1) float32 faces in 0..255 and return (n, 7) probabilities in
fer_core.emotions.EMOTIONS order. TensorFlow is imported only when a Keras model is used.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fer_core.emotions import FACE_SIZE, NUM_EMOTIONS
from fer_core.model_io import TFLITE_FILE, ModelError, check_model_io, resolve_model_file

BACKENDS = ("keras", "litert")
DEFAULT_BATCH_SIZE = 64


class Predictor(Protocol):
    source: Path

    def predict_batch(self, faces: np.ndarray) -> np.ndarray: ...


def as_faces(images: np.ndarray) -> np.ndarray:
    """(n, 48, 48) or (n, 48, 48, 1) uint8/float -> (n, 48, 48, 1) float32 in 0..255."""
    faces = np.asarray(images)
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 1):
        raise ValueError(f"faces must be (n, {FACE_SIZE}, {FACE_SIZE}[, 1]); got {faces.shape}")
    return faces.astype(np.float32, copy=False)


class KerasPredictor:
    """A Keras model behind one traced function (no per-call retracing, unlike model.predict per batch)."""

    def __init__(self, model: Any, source: Path | str = "<model>") -> None:
        import tensorflow as tf

        self.model = model
        self.source = Path(source)
        spec = tf.TensorSpec([None, FACE_SIZE, FACE_SIZE, 1], tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    @classmethod
    def load(cls, path: str | Path) -> KerasPredictor:
        from fer_core.model_io import KERAS_FILE, load_keras_model

        path = Path(path)
        return cls(load_keras_model(path), resolve_model_file(path, KERAS_FILE))

    def predict_batch(self, faces: np.ndarray) -> np.ndarray:
        return np.asarray(self._call(as_faces(faces)), dtype=np.float32)


class LiteRTPredictor:
    """A `.tflite` model in the LiteRT interpreter; its input is resized once per batch size."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.source = resolve_model_file(path, TFLITE_FILE)
        threads = num_threads or max(1, min(4, os.cpu_count() or 1))
        try:
            self.interpreter = Interpreter(model_path=str(self.source), num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load LiteRT model {self.source}: {exc}") from exc
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        signature = tuple(int(v) for v in self._input.get("shape_signature", self._input["shape"]))
        check_model_io((None, *signature[1:]), tuple(self._output["shape"]), self.source)
        self._batch = -1

    def predict_batch(self, faces: np.ndarray) -> np.ndarray:
        faces = as_faces(faces)
        n = len(faces)
        if n != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [n, FACE_SIZE, FACE_SIZE, 1])
            self.interpreter.allocate_tensors()
            self._batch = n
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(faces))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output["index"]), dtype=np.float32)


def load_predictor(path: str | Path, backend: str = "keras") -> Predictor:
    if backend == "keras":
        return KerasPredictor.load(path)
    if backend == "litert":
        return LiteRTPredictor(path)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def predict(predictor: Predictor, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Probabilities for all `images`, in fixed-size batches (the last one padded, so LiteRT keeps one shape)."""
    faces = as_faces(images)
    out = np.empty((len(faces), NUM_EMOTIONS), dtype=np.float32)
    for start in range(0, len(faces), batch_size):
        chunk = faces[start : start + batch_size]
        n = len(chunk)
        if n < batch_size and len(faces) > batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), np.float32)])
        out[start : start + n] = predictor.predict_batch(chunk)[:n]
    return out


def predict_tta(predictor: Predictor, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Mean of the probabilities for the faces and their mirror images (faces are near-symmetric)."""
    faces = as_faces(images)
    return (predict(predictor, faces, batch_size) + predict(predictor, faces[:, :, ::-1, :], batch_size)) / 2.0


def time_per_face(
    predictor: Predictor, batch_sizes: tuple[int, ...] = (1, 8, 32), repeats: int = 10, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Median latency per batch and per face, in ms, for each batch size (after two warm-up calls)."""
    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, float]] = {}
    for b in batch_sizes:
        faces = rng.integers(0, 256, (b, FACE_SIZE, FACE_SIZE, 1)).astype(np.float32)
        for _ in range(2):
            predictor.predict_batch(faces)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            predictor.predict_batch(faces)
            times.append((time.perf_counter() - t) * 1000.0)
        per_batch = statistics.median(times)
        result[str(b)] = {"ms_per_batch": round(per_batch, 3), "ms_per_face": round(per_batch / b, 3)}
    return result
