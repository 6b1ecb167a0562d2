"""Loading ClassMood model files (TensorFlow imported lazily: only the Keras backend needs it).

A model directory holds `model.keras` (weights may be stored in float16 to keep the
repository small) and `model_int8.tflite` (the fast LiteRT export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fer_core.emotions import FACE_SIZE, NUM_EMOTIONS

KERAS_FILE = "model.keras"
H5_FILE = "model.h5"
TFLITE_FILE = "model_int8.tflite"


class ModelError(RuntimeError):
    """A model file is missing, unreadable or not a ClassMood emotion model."""


def resolve_model_file(path: str | Path, filename: str) -> Path:
    """`path` is a model directory or a model file; return the file to load."""
    path = Path(path).expanduser()
    candidate = path / filename if path.is_dir() else path
    if not candidate.is_file():
        raise ModelError(f"model file not found: {candidate}")
    return candidate


_POLICY_CLASSES = ("DTypePolicy", "FloatDTypePolicy")
FLOAT16_MAX = 65504.0


def _with_float_dtype(node: Any, target: str) -> Any:
    """Rewrite every float dtype (policies and plain dtype strings) in a serialized model config to `target`."""
    if isinstance(node, dict):
        if node.get("class_name") in _POLICY_CLASSES and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": target}}
        return {key: _with_float_dtype(value, target) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_float_dtype(value, target) for value in node]
    if node in ("float16", "float32", "mixed_float16"):
        return target
    return node


def check_model_io(input_shape: tuple, output_shape: tuple, source: Path) -> None:
    if tuple(input_shape[1:]) != (FACE_SIZE, FACE_SIZE, 1):
        raise ModelError(
            f"{source}: input shape {tuple(input_shape)} is not a ClassMood model's (None, {FACE_SIZE}, {FACE_SIZE}, 1)"
        )
    if output_shape[-1] != NUM_EMOTIONS:
        raise ModelError(f"{source}: model has {output_shape[-1]} outputs; ClassMood needs {NUM_EMOTIONS} emotions")


def load_keras_model(path: str | Path):
    """Load a `.keras`/`.h5` emotion model in float32 (float16-stored weights are upcast)."""
    import keras
    import numpy as np

    file = resolve_model_file(path, KERAS_FILE)
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelError(f"cannot load model {file}: {type(exc).__name__}: {exc}") from exc
    check_model_io(model.input_shape, model.output_shape, file)
    if any(str(w.dtype) == "float16" for w in model.weights):
        # Rebuild in float32 (computing in float16 on CPU is slower and less accurate) and upcast.
        weights = [w.astype(np.float32) if w.dtype == np.float16 else w for w in model.get_weights()]
        model = keras.Model.from_config(_with_float_dtype(model.get_config(), "float32"))
        model.set_weights(weights)
    return model


def save_keras_float16(model, path: str | Path) -> None:
    """Save `model` as .keras with float16 weights: half the size; load_keras_model restores float32.

    Raises ModelError if a weight does not fit float16 (|w| > 65504) rather than storing inf.
    """
    import keras
    import numpy as np

    weights = model.get_weights()
    for w, var in zip(weights, model.weights, strict=True):
        if np.issubdtype(w.dtype, np.floating) and w.size and float(np.abs(w).max()) > FLOAT16_MAX:
            raise ModelError(f"weight {var.path} reaches {float(np.abs(w).max()):.3g}, beyond float16's range")
    half = keras.Model.from_config(_with_float_dtype(model.get_config(), "float16"))
    half.set_weights([w.astype(np.float16) if np.issubdtype(w.dtype, np.floating) else w for w in weights])
    half.save(path)
