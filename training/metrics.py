"""Scores of (n, 7) predicted probabilities against labels: accuracy, macro-F1, per-class figures,
the confusion matrix, expected calibration error and negative log-likelihood. Pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fer_core.calibration import apply_temperature
from fer_core.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins (top-1)."""
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 goes to bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    scaled = apply_temperature(probs, temperature).astype(np.float64)
    return float(-np.mean(np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1.0))))


def score(probs: np.ndarray, labels: np.ndarray, classes_scored: list[str] | None = None) -> dict[str, Any]:
    """All metrics for (n, 7) probabilities against (n,) label indices; per-class only for `classes_scored`."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[1] != NUM_EMOTIONS or len(probs) != len(labels):
        raise ValueError(f"need (n, {NUM_EMOTIONS}) probabilities for n labels; got {probs.shape} and {labels.shape}")
    if classes_scored is None:
        classes_scored = [EMOTIONS[i] for i in sorted(set(labels.tolist()))]
    preds = probs.argmax(axis=1)
    cm = np.zeros((NUM_EMOTIONS, NUM_EMOTIONS), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    for name in classes_scored:
        c = EMOTION_INDEX[name]
        tp, support, predicted = int(cm[c, c]), int(cm[c].sum()), int(cm[:, c].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    absent = [name for name in EMOTIONS if name not in classes_scored]
    n = len(labels)
    return {
        "n_images": n,
        "accuracy": float((preds == labels).mean()) if n else 0.0,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])) if per_class else 0.0,
        "balanced_accuracy": float(np.mean([m["recall"] for m in per_class.values()])) if per_class else 0.0,
        "ece": expected_calibration_error(probs, labels),
        "ece_bins": ECE_BINS,
        "mean_confidence": float(probs.max(axis=1).mean()) if n else 0.0,
        "per_class": per_class,
        "classes_scored": list(classes_scored),
        "classes_absent": absent,
        # Predictions of classes the split does not hold: always wrong, worth seeing.
        "predicted_absent": {name: int(cm[:, EMOTION_INDEX[name]].sum()) for name in absent},
        "confusion_labels": list(EMOTIONS),
        "confusion_matrix": cm.tolist(),  # rows: true class, columns: predicted class
    }
