"""Temperature scaling and flip averaging (fer_core.calibration, fer_core.classify) and the fitting of T
(training.calibrate): pure numpy, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fer_core.calibration import CALIBRATION_FILE, Calibration, apply_temperature, read_calibration
from fer_core.classify import EmotionClassifier
from fer_core.model_io import ModelError
from training.calibrate import calibration_record, fit_temperature, negative_log_likelihood
from training.metrics import expected_calibration_error


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def miscalibrated(n: int, true_temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and a model that outputs softmax(z / true_temperature) (z: random logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 7))
    truth = softmax(logits)
    labels = np.array([rng.choice(7, p=row) for row in truth])
    return softmax(logits / true_temperature).astype(np.float32), labels


def test_temperature_equals_scaling_the_logits_and_keeps_every_prediction() -> None:
    logits = np.random.default_rng(1).normal(0, 3, (50, 7))
    probs = softmax(logits)
    for t in (0.5, 0.7, 2.0):
        scaled = apply_temperature(probs, t)
        np.testing.assert_allclose(scaled, softmax(logits / t), atol=1e-5)
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-5)
        assert np.array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
    assert (apply_temperature(probs, 0.5).max(axis=1) > probs.max(axis=1)).all()  # below 1 sharpens
    assert (apply_temperature(probs, 2.0).max(axis=1) < probs.max(axis=1)).all()  # above 1 softens
    np.testing.assert_array_equal(apply_temperature(probs, 1.0), probs.astype(np.float32))


def test_a_probability_that_underflowed_to_zero_stays_finite() -> None:
    probs = np.array([[1.0, 0, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0, 0]], np.float32)
    scaled = apply_temperature(probs, 3.0)
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-6)
    assert apply_temperature(np.empty((0, 7), np.float32), 0.5).shape == (0, 7)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 1.6])
def test_fitting_recovers_the_temperature_that_makes_the_model_calibrated(true_temperature: float) -> None:
    # A model giving softmax(z * t) is calibrated again by T = t: softmax(z * t / T) = softmax(z).
    probs, labels = miscalibrated(20_000, 1.0 / true_temperature)
    assert fit_temperature(probs, labels) == pytest.approx(true_temperature, rel=0.05)


def test_the_fitted_temperature_minimises_the_negative_log_likelihood() -> None:
    probs, labels = miscalibrated(4000, 2.0, seed=3)
    best = fit_temperature(probs, labels)
    at_best = negative_log_likelihood(probs, labels, best)
    for nearby in (best * 0.9, best * 1.1):
        assert negative_log_likelihood(probs, labels, nearby) > at_best
    with pytest.raises(ValueError, match="no images"):
        fit_temperature(probs[:0], labels[:0])


def test_the_record_measures_an_under_confident_model_getting_better_and_accuracy_unchanged() -> None:
    probs, labels = miscalibrated(6000, 2.0, seed=4)  # under-confident, like label smoothing makes a model
    record = calibration_record(probs, labels)
    assert record["temperature"] == pytest.approx(0.5, rel=0.08)
    assert record["nll_after"] < record["nll_before"]
    assert record["ece_before"] == pytest.approx(expected_calibration_error(probs, labels))
    assert record["ece_after"] < record["ece_before"] / 3
    assert record["ece_after_cross_fitted"] < record["ece_before"] / 3
    assert record["mean_confidence_after"] > record["mean_confidence_before"]
    assert record["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert record["n_images"] == 6000
    json.dumps(record)  # stored as calibration.json: plain numbers only


def test_cross_fitting_fits_each_half_on_the_other_half_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.calibrate as calibrate

    probs, labels = miscalibrated(1001, 2.0, seed=5)
    fitted_on: list[set[float]] = []
    real_fit = calibrate.fit_temperature

    def spy(p: np.ndarray, y: np.ndarray) -> float:
        fitted_on.append(set(p[:, 0].tolist()))  # column 0 identifies the (random) rows
        return real_fit(p, y)

    monkeypatch.setattr(calibrate, "fit_temperature", spy)
    ece = calibrate.cross_fitted_ece(probs, labels, folds=2)
    assert len(fitted_on) == 2 and not fitted_on[0] & fitted_on[1]
    assert fitted_on[0] | fitted_on[1] == set(probs[:, 0].tolist())
    assert {len(rows) for rows in fitted_on} == {500, 501}
    assert ece < expected_calibration_error(probs, labels) / 2
    fitted_on.clear()
    calibrate.cross_fitted_ece(probs[:1], labels[:1])  # one face cannot be split: fitted in-sample
    assert len(fitted_on) == 1


def test_a_model_folder_without_a_calibration_file_is_uncalibrated(tmp_path: Path) -> None:
    assert read_calibration(tmp_path) == Calibration(1.0, flip_average=False)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"temperature": 0.7, "fitted_on": "val"}))
    assert read_calibration(tmp_path) == Calibration(0.7, flip_average=False)  # files from before flip averaging
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"temperature": 0.7, "flip_average": True}))
    assert read_calibration(tmp_path) == Calibration(0.7, flip_average=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ("[0.7]", 'has no "temperature"'),
        ('{"fitted_on": "val"}', 'has no "temperature"'),
        ('{"temperature": "0.7"}', "must be a number"),
        ('{"temperature": true}', "must be a number"),
        ('{"temperature": NaN}', "must be a number"),
        ('{"temperature": 0}', "outside 0.05..20"),
        ('{"temperature": 1000}', "outside 0.05..20"),
        ('{"temperature": 0.7, "flip_average": "yes"}', "flip_average must be true or false"),
        ('{"temperature": 0.7, "flip_average": 1}', "flip_average must be true or false"),
    ],
)
def test_a_broken_calibration_file_is_a_clear_model_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / CALIBRATION_FILE).write_text(content)
    with pytest.raises(ModelError, match=message):
        read_calibration(tmp_path)


class LopsidedClassifier(EmotionClassifier):
    """Probabilities from how much brighter a face's left half is than its right: a mirror image changes them."""

    backend = "test"

    def __init__(self, folder: Path, **options: object) -> None:
        super().__init__(folder, **options)
        self.calls: list[int] = []

    def _predict(self, faces: np.ndarray) -> np.ndarray:
        self.calls.append(len(faces))
        lean = faces[:, :, :24].mean(axis=(1, 2, 3)) - faces[:, :, 24:].mean(axis=(1, 2, 3))
        return softmax(np.outer(lean / 50.0, np.arange(7.0)))


def test_flip_averaging_sends_faces_and_mirrors_in_one_call_and_scales_their_mean(tmp_path: Path) -> None:
    faces = np.random.default_rng(2).uniform(0, 255, (5, 48, 48, 1)).astype(np.float32)
    plain = LopsidedClassifier(tmp_path)
    assert (plain.temperature, plain.flip_average) == (1.0, False)
    raw, mirrored = plain.predict(faces), plain.predict(faces[:, :, ::-1, :].copy())
    assert not np.allclose(raw, mirrored)  # the test classifier does see the flip
    assert plain.calls == [5, 5]

    flipped = LopsidedClassifier(tmp_path, temperature=0.5, flip_average=True)
    probs = flipped.predict(faces)
    assert flipped.calls == [10]  # one call for the faces and their mirror images
    np.testing.assert_allclose(probs, apply_temperature((raw + mirrored) / 2, 0.5), atol=1e-5)
    assert flipped.predict(np.empty((0, 48, 48, 1), np.float32)).shape == (0, 7) and flipped.calls == [10]
    assert "flip-averaged" in repr(flipped) and "flip-averaged" not in repr(plain)


def test_the_flip_choice_comes_from_the_calibration_file_unless_given(tmp_path: Path) -> None:
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"temperature": 0.8, "flip_average": True}))
    stored = LopsidedClassifier(tmp_path)
    assert (stored.temperature, stored.flip_average) == (0.8, True)
    assert LopsidedClassifier(tmp_path, flip_average=False).flip_average is False
    raw = LopsidedClassifier(tmp_path, temperature=1.0, flip_average=False)
    assert (raw.temperature, raw.flip_average) == (1.0, False)
    (tmp_path / CALIBRATION_FILE).write_text("{broken")
    assert LopsidedClassifier(tmp_path, temperature=1.0, flip_average=True).flip_average  # both given: not read
    with pytest.raises(ModelError, match="cannot read"):
        LopsidedClassifier(tmp_path, temperature=1.0)
