"""training.evaluate's metrics (pure numpy): accuracy, F1, calibration, class subsets, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_core.emotions import EMOTION_INDEX, EMOTIONS
from training.evaluate import format_report, write_outputs
from training.metrics import expected_calibration_error, score


def one_hot_probs(preds: list[int], confidence: float = 0.9) -> np.ndarray:
    probs = np.full((len(preds), 7), (1 - confidence) / 6)
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_perfect_predictions() -> None:
    labels = np.arange(7).repeat(2)
    report = score(one_hot_probs(labels.tolist(), 1.0), labels)
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0
    assert report["ece"] == pytest.approx(0.0)
    assert report["classes_absent"] == []
    assert np.array_equal(np.array(report["confusion_matrix"]), 2 * np.eye(7, dtype=int))


def test_per_class_precision_recall_f1_by_hand() -> None:
    a, h, s = EMOTION_INDEX["angry"], EMOTION_INDEX["happy"], EMOTION_INDEX["sad"]
    labels = np.array([a, a, a, h, h, s])
    preds = [a, a, h, h, h, a]
    report = score(one_hot_probs(preds), labels)
    angry, happy, sad = (report["per_class"][n] for n in ("angry", "happy", "sad"))
    assert angry == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3),
                     "support": 3}
    assert happy["precision"] == pytest.approx(2 / 3) and happy["recall"] == 1.0 and happy["f1"] == pytest.approx(0.8)
    assert sad == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)  # only the 3 present classes
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_class_subset_is_scored_on_present_classes_only() -> None:
    a, h, f = EMOTION_INDEX["angry"], EMOTION_INDEX["happy"], EMOTION_INDEX["fear"]
    labels = np.array([a, a, h, h])
    report = score(one_hot_probs([a, f, h, h]), labels, ["angry", "happy"])
    assert report["classes_scored"] == ["angry", "happy"]
    assert report["classes_absent"] == ["disgust", "fear", "neutral", "sad", "surprise"]
    assert set(report["per_class"]) == {"angry", "happy"}
    assert report["predicted_absent"]["fear"] == 1  # the wrong "fear" prediction is visible...
    assert report["accuracy"] == 0.75  # ...and counted wrong
    text = format_report(report)
    assert "absent from this split (not scored): disgust, fear, neutral, sad, surprise" in text
    assert "predictions of absent classes (counted wrong): fear 1" in text


def test_expected_calibration_error_by_hand() -> None:
    # 4 faces at confidence 0.9 (3 right) and 2 at 0.5 (both wrong), 15 bins:
    # ECE = 4/6 * |0.75 - 0.9| + 2/6 * |0 - 0.5|
    probs = np.zeros((6, 7))
    probs[:4, 0], probs[:4, 1] = 0.9, 0.1
    probs[4:, 0], probs[4:, 1] = 0.5, 0.5  # argmax 0
    labels = np.array([0, 0, 0, 1, 1, 1])
    expected = 4 / 6 * 0.15 + 2 / 6 * 0.5
    assert expected_calibration_error(probs, labels, 15) == pytest.approx(expected)
    assert score(probs, labels)["ece"] == pytest.approx(expected)


def test_score_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"need \(n, 7\) probabilities"):
        score(np.zeros((3, 5)), np.zeros(3))


def test_outputs_are_json_and_a_png(tmp_path: Path) -> None:
    labels = np.array([0, 3, 3, 5])
    report = score(one_hot_probs([0, 3, 5, 5]), labels)
    report["split"] = "val"
    write_outputs(report, tmp_path / "eval.json", tmp_path / "eval_confusion.png")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["accuracy"] == 0.75 and saved["classes_scored"] == ["angry", "happy", "sad"]
    assert saved["confusion_labels"] == list(EMOTIONS)
    assert (tmp_path / "eval_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_library_modules_do_not_import_tensorflow() -> None:
    # The Training page imports these; TensorFlow costs seconds and hundreds of MB.
    code = (
        "import sys; import training.runs, training.evaluate, training.data, training.export, training.bench;"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'streamlit' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
