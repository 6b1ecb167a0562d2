"""Confidence calibration: one temperature per model, stored next to it in `calibration.json`.

Label smoothing and heavy augmentation leave a model under-confident, and the app shows
confidence next to every label. Temperature scaling (Guo et al., 2017) fixes the scale
without changing any prediction: p_i' is proportional to p_i ** (1 / T), which equals
softmax(z / T) for the model's logits z. It works on probabilities, so both backends
(Keras and LiteRT) share it and no model file changes. `training.calibrate` fits T.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fer_core.model_io import ModelError

CALIBRATION_FILE = "calibration.json"
# A fitted temperature outside this range means a broken model or file, not a calibration.
TEMPERATURE_RANGE = (0.05, 20.0)
_TINY = 1e-12  # probabilities are clipped here before the log: a softmax can underflow to 0


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(n, k) probabilities rescaled by `temperature` (> 1 softens, < 1 sharpens); argmax unchanged."""
    probs = np.asarray(probs, dtype=np.float32)
    if temperature == 1.0 or probs.size == 0:
        return probs
    logits = np.log(np.clip(probs, _TINY, 1.0)) / np.float32(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def check_temperature(value: object, source: str) -> float:
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"{source}: temperature must be a number; got {value!r}")
    if not low <= value <= high:
        raise ModelError(f"{source}: temperature {value} is outside {low}..{high}")
    return float(value)


def read_temperature(model_folder: str | Path) -> float:
    """The temperature stored in `model_folder`, or 1.0 (uncalibrated) when it has no calibration file."""
    path = Path(model_folder) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(record, dict) or "temperature" not in record:
        raise ModelError(f"{path} has no \"temperature\" (delete it to run uncalibrated)")
    return check_temperature(record["temperature"], str(path))
