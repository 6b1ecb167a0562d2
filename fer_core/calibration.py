"""Confidence calibration: one temperature per model, stored next to it in `calibration.json`.

Label smoothing and heavy augmentation leave a model under-confident, and the app shows
confidence next to every label. Temperature scaling (Guo et al., 2017) fixes the scale
without changing any prediction: p_i' is proportional to p_i ** (1 / T), which equals
softmax(z / T) for the model's logits z. It works on probabilities, so both backends
(Keras and LiteRT) share it and no model file changes. `training.calibrate` fits T.

The file may also say `"flip_average": true`: the model is then meant to see each face with
its mirror image and average the two (faces are near-symmetric, so this cuts noise at twice
the classifier cost), and T was fitted on those averaged outputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Calibration:
    """How a model's outputs become the probabilities shown: flip averaging, then the temperature."""

    temperature: float = 1.0
    flip_average: bool = False


def read_calibration(model_folder: str | Path) -> Calibration:
    """The calibration stored in `model_folder`, or none (T 1.0, no flip averaging) when it has no file."""
    path = Path(model_folder) / CALIBRATION_FILE
    if not path.is_file():
        return Calibration()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(record, dict) or "temperature" not in record:
        raise ModelError(f"{path} has no \"temperature\" (delete it to run uncalibrated)")
    flip_average = record.get("flip_average", False)
    if not isinstance(flip_average, bool):
        raise ModelError(f"{path}: flip_average must be true or false; got {flip_average!r}")
    return Calibration(check_temperature(record["temperature"], str(path)), flip_average)
