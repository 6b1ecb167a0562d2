"""Batched emotion prediction over whole data sets, for evaluation, export checks and timing.

The backends are `fer_core.classify`'s (the live path's): keras (float16-stored weights are
upcast) and litert (the int8 `.tflite` export through `ai_edge_litert`).

Both take (n, 48, 48, 1) float32 faces in 0..255 and return (n, 7) probabilities in
fer_core.emotions.EMOTIONS order. TensorFlow is imported only when a Keras model is used.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from fer_core.classify import EmotionClassifier, KerasClassifier, LiteRTClassifier
from fer_core.emotions import FACE_SIZE, NUM_EMOTIONS

BACKENDS = ("keras", "litert")
DEFAULT_BATCH_SIZE = 64


def as_faces(images: np.ndarray) -> np.ndarray:
    """(n, 48, 48) or (n, 48, 48, 1) uint8/float -> (n, 48, 48, 1) float32 in 0..255."""
    faces = np.asarray(images)
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 1):
        raise ValueError(f"faces must be (n, {FACE_SIZE}, {FACE_SIZE}[, 1]); got {faces.shape}")
    return faces.astype(np.float32, copy=False)


def load_predictor(path: str | Path, backend: str = "keras", temperature: float | None = None,
                   flip_average: bool | None = None) -> EmotionClassifier:
    """The live pipeline's own classifier classes, so evaluation sees exactly what the app sees.

    None for either applies the model's stored calibration (`calibration.json`), as the app does;
    `temperature=1.0, flip_average=False` gives raw probabilities; `flip_average=True` is flip TTA.
    """
    if backend == "keras":
        return KerasClassifier(path, temperature=temperature, flip_average=flip_average)
    if backend == "litert":
        return LiteRTClassifier(path, temperature=temperature, flip_average=flip_average)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def predict(predictor: EmotionClassifier, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Probabilities for all `images`, in fixed-size batches (the last one padded, so LiteRT keeps one shape)."""
    faces = as_faces(images)
    out = np.empty((len(faces), NUM_EMOTIONS), dtype=np.float32)
    for start in range(0, len(faces), batch_size):
        chunk = faces[start : start + batch_size]
        n = len(chunk)
        if n < batch_size and len(faces) > batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), np.float32)])
        out[start : start + n] = predictor.predict(chunk)[:n]
    return out


def time_per_face(
    predictor: EmotionClassifier, batch_sizes: tuple[int, ...] = (1, 8, 32), repeats: int = 10, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Median latency per batch and per face, in ms, for each batch size (after two warm-up calls)."""
    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, float]] = {}
    for b in batch_sizes:
        faces = rng.integers(0, 256, (b, FACE_SIZE, FACE_SIZE, 1)).astype(np.float32)
        for _ in range(2):
            predictor.predict(faces)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            predictor.predict(faces)
            times.append((time.perf_counter() - t) * 1000.0)
        per_batch = statistics.median(times)
        result[str(b)] = {"ms_per_batch": round(per_batch, 3), "ms_per_face": round(per_batch / b, 3)}
    return result
