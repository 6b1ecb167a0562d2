"""Emotion classifiers: one interface, one subclass per backend, chosen by a factory.

- `KerasClassifier`: the `.keras` model (the reference; what evaluation uses).
- `LiteRTClassifier`: the int8 export (full-integer, or dynamic-range) run by `ai_edge_litert` (fast path).

Every backend takes a batch of faces (n, 48, 48, 1) float32 in 0..255 (see
`fer_core.preprocess.crop_faces`) and returns (n, 7) probabilities in EMOTIONS order,
rescaled by the model's calibration temperature (`fer_core.calibration`) when it has one.
All faces of a frame go through one call; with flip averaging, the faces and their mirror
images go through that one call together. Models load once per process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.calibration import (
    CALIBRATION_FILE,
    Calibration,
    apply_temperature,
    check_temperature,
    read_calibration,
)
from fer_core.emotions import FACE_SIZE, NUM_EMOTIONS
from fer_core.model_io import KERAS_FILE, TFLITE_FILE, ModelError, check_model_io, resolve_model_file

log = logging.getLogger(__name__)

BACKENDS = ("auto", "keras", "litert")
LITERT_THREADS = 2


class EmotionClassifier(ABC):
    backend: str = "abstract"

    def __init__(self, source: Path, temperature: float | None = None, flip_average: bool | None = None) -> None:
        """None for either: as stored next to the model file (`calibration.json`; none: 1.0 and no flip).

        `temperature=1.0, flip_average=False` gives the model's raw probabilities.
        """
        self.source = source
        stored = Calibration()
        if temperature is None or flip_average is None:
            stored = read_calibration(source if source.is_dir() else source.parent)
        self.temperature = stored.temperature if temperature is None else check_temperature(
            temperature, f"{source} temperature")
        self.flip_average = stored.flip_average if flip_average is None else bool(flip_average)

    @property
    def model_name(self) -> str:
        """The model directory's name (a training run's export: '<run>/export')."""
        folder = self.source.parent if self.source.suffix else self.source
        return f"{folder.parent.name}/{folder.name}" if folder.name == "export" else folder.name

    @functools.cached_property
    def model_sha256(self) -> str:
        """SHA-256 of the model file this classifier loaded ('' when it did not load one from a file)."""
        if not self.source.is_file():
            return ""
        digest = hashlib.sha256()
        with self.source.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(n, 48, 48, 1) float32 0..255 -> (n, 7) probabilities. n may be 0."""
        faces = np.asarray(faces, dtype=np.float32)
        if faces.ndim != 4 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 1):
            raise ValueError(f"faces must be (n, {FACE_SIZE}, {FACE_SIZE}, 1); got {faces.shape}")
        if len(faces) == 0:
            return np.empty((0, NUM_EMOTIONS), dtype=np.float32)
        if not self.flip_average:
            return apply_temperature(self._predict(faces), self.temperature)
        both = self._predict(np.concatenate([faces, faces[:, :, ::-1, :]]))  # one call for faces and mirrors
        n = len(faces)
        return apply_temperature((both[:n] + both[n:]) / 2.0, self.temperature)

    def raw_predict(self, faces: np.ndarray) -> np.ndarray:
        """The model's own probabilities for (n, 48, 48, 1) float32 faces: no temperature, no flip averaging."""
        return self._predict(faces)

    @abstractmethod
    def _predict(self, faces: np.ndarray) -> np.ndarray: ...

    def __repr__(self) -> str:
        calibrated = f", temperature {self.temperature:g}" if self.temperature != 1.0 else ""
        flipped = ", flip-averaged" if self.flip_average else ""
        return f"{type(self).__name__}({self.source}{calibrated}{flipped})"


class KerasClassifier(EmotionClassifier):
    backend = "keras"

    def __init__(self, path: str | Path, model: Any | None = None, temperature: float | None = None,
                 flip_average: bool | None = None) -> None:
        """Load the `.keras` model at `path`, or wrap an already loaded `model` (export checks)."""
        import tensorflow as tf

        from fer_core.model_io import load_keras_model

        if model is None:
            path = resolve_model_file(path, KERAS_FILE)
            model = load_keras_model(path)
        super().__init__(Path(path), temperature, flip_average)
        self.model = model
        # One traced function with a fixed signature: no retracing per batch size, thread-safe.
        spec = tf.TensorSpec([None, FACE_SIZE, FACE_SIZE, 1], tf.float32)
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def _predict(self, faces: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(faces), dtype=np.float32)


class LiteRTClassifier(EmotionClassifier):
    backend = "litert"

    def __init__(self, path: str | Path, num_threads: int = LITERT_THREADS, temperature: float | None = None,
                 flip_average: bool | None = None) -> None:
        super().__init__(resolve_model_file(path, TFLITE_FILE), temperature, flip_average)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=str(self.source), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load LiteRT model {self.source}: {exc}") from exc
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        signature = tuple(int(v) for v in self._input.get("shape_signature", self._input["shape"]))
        check_model_io((None, *signature[1:]), tuple(self._output["shape"]), self.source)
        self._batch = 0
        # One interpreter is not re-entrant: serialise calls from the video threads.
        self._lock = threading.Lock()

    def _predict(self, faces: np.ndarray) -> np.ndarray:
        with self._lock:
            if len(faces) != self._batch:
                self._interpreter.resize_tensor_input(self._input["index"], list(faces.shape))
                self._interpreter.allocate_tensors()
                self._batch = len(faces)
            self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(faces))
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output["index"]), dtype=np.float32)


def _choose_backend(model_dir: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown classifier backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    base = model_dir if model_dir.is_dir() else model_dir.parent
    if (base / TFLITE_FILE).is_file() or model_dir.suffix == ".tflite":
        return "litert"
    return "keras"


@functools.lru_cache(maxsize=4)
def _load_cached(model_path: str, backend: str, flip_average: bool | None,
                 mtimes: tuple[float, float]) -> EmotionClassifier:
    """One classifier per model, backend, flip choice and (model file, calibration file) modification times."""
    path = Path(model_path)
    log.info("loading %s classifier from %s", backend, path)
    if backend == "litert":
        return LiteRTClassifier(path, flip_average=flip_average)
    return KerasClassifier(path, flip_average=flip_average)


def load_classifier(model_dir: str | Path, backend: str = "auto",
                    flip_average: bool | None = None) -> EmotionClassifier:
    """The classifier for `model_dir`, loaded once per process (reloaded when its files change).

    `backend` "auto" takes LiteRT when the folder has its file, else Keras. `flip_average` None
    follows the model's calibration.json. The app's choice of model and options: `fer_core.registry.classifier_for`.
    """
    model_dir = Path(model_dir).expanduser().resolve()
    if not model_dir.exists():
        raise ModelError(f"model not found: {model_dir}")
    chosen = _choose_backend(model_dir, backend)
    file = resolve_model_file(model_dir, TFLITE_FILE if chosen == "litert" else KERAS_FILE)
    calibration = file.parent / CALIBRATION_FILE
    calibrated_at = calibration.stat().st_mtime if calibration.is_file() else 0.0
    return _load_cached(str(model_dir), chosen, flip_average, (file.stat().st_mtime, calibrated_at))
