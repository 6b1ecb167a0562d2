"""Fit a model's confidence temperature on `val/` and store it next to the model.

    python -m training.calibrate --model models/fer-inceptionv3 --data ../shared/datasets/fer2013
    python -m training.calibrate --model data/runs/NAME/export --data DATA --flip-average

The temperature T minimises the negative log-likelihood of the val labels; predictions, and
so accuracy, do not change (see `fer_core.calibration`). It is written to `calibration.json`
in the model folder, where both classifier backends pick it up. For a published model (one
with `metrics.json`) the calibration is also recorded there and the model card is rewritten,
and for the shipped model the README's results table too, so all of them keep agreeing.

With `--flip-average` the model is declared to average each face with its mirror image
(twice the classifier time, usually a little more accurate), and T is fitted on those
averaged outputs; without the option the folder's current choice is kept. A published
model's flip choice is part of its measured accuracy, so it changes only by publishing again.

The ECE after calibration is measured on the same faces T was fitted on; the report also
gives a cross-fitted ECE (T fitted on one half of val, measured on the other), the honest one.
`training.train` (at the end of a run) and `training.publish` calibrate their exports the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from fer_core.calibration import CALIBRATION_FILE, TEMPERATURE_RANGE, apply_temperature, read_calibration
from fer_core.model_io import KERAS_FILE, TFLITE_FILE, ModelError, resolve_model_file
from fer_core.registry import ModelRegistry
from fer_core.settings import get_settings
from training import runs
from training.card import METRICS_FILE, PROJECT_README, card_writer
from training.data import DatasetError, load_split
from training.inference import load_predictor, predict
from training.metrics import ECE_BINS, expected_calibration_error, negative_log_likelihood

log = logging.getLogger(__name__)

CROSS_FIT_FOLDS = 2
CROSS_FIT_SEED = 0
_TOLERANCE = 1e-5  # on 1/T; far below what changes a shown percentage


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURE_RANGE that minimises the NLL of `labels` (a bounded scalar search on 1/T).

    The NLL is convex in 1/T (a log-sum-exp minus a linear term), so the search finds its minimum.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no images")
    result = minimize_scalar(lambda inverse: negative_log_likelihood(probs, labels, 1.0 / inverse),
                             bounds=(1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]), method="bounded",
                             options={"xatol": _TOLERANCE})
    return float(np.clip(1.0 / result.x, *TEMPERATURE_RANGE))


def cross_fitted_ece(probs: np.ndarray, labels: np.ndarray, folds: int = CROSS_FIT_FOLDS,
                     seed: int = CROSS_FIT_SEED) -> float:
    """ECE with each face scaled by a temperature fitted on the other folds (an out-of-sample estimate)."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = [part for part in np.array_split(order, folds) if len(part)]
    if len(parts) < 2:
        return expected_calibration_error(apply_temperature(probs, fit_temperature(probs, labels)), labels)
    scaled = np.empty_like(np.asarray(probs, dtype=np.float32))
    for i, held_out in enumerate(parts):
        fit_on = np.concatenate([part for j, part in enumerate(parts) if j != i])
        scaled[held_out] = apply_temperature(probs[held_out], fit_temperature(probs[fit_on], labels[fit_on]))
    return expected_calibration_error(scaled, labels)


def calibration_record(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fit T on (probs, labels) and measure what it changes."""
    temperature = round(fit_temperature(probs, labels), 4)  # the figures below are for the value stored
    scaled = apply_temperature(probs, temperature)
    return {
        "temperature": temperature,
        "n_images": len(labels),
        "nll_before": negative_log_likelihood(probs, labels),
        "nll_after": negative_log_likelihood(probs, labels, temperature),
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(scaled, labels),
        "ece_after_cross_fitted": cross_fitted_ece(probs, labels),
        "mean_confidence_before": float(np.max(probs, axis=1).mean()),
        "mean_confidence_after": float(scaled.max(axis=1).mean()),
        "accuracy": float((np.argmax(probs, axis=1) == labels).mean()),
    }


def current_flip_average(model_dir: Path) -> bool:
    """The folder's stored flip choice; False when it has none or its calibration file is broken (refit)."""
    try:
        return read_calibration(model_dir).flip_average
    except ModelError as exc:
        log.warning("%s; fitting a new calibration without flip averaging", exc)
        return False


def calibrate_model(model_dir: str | Path, data: str | Path, split: str = "val", *,
                    flip_average: bool | None = None, skip_corrupt: bool = False) -> dict[str, Any]:
    """Fit the temperature of the Keras model in `model_dir` on `split` and write `calibration.json` there.

    `flip_average` None keeps the folder's current choice. When the folder also holds the LiteRT
    export, its ECE with the same temperature is measured too.
    Raises DatasetError / ModelError for bad data or model files; writes nothing then.
    """
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise ModelError(f"{model_dir} is a file; give the model folder that holds it (calibration.json goes there)")
    if not model_dir.is_dir():
        raise ModelError(f"model folder not found: {model_dir}")
    resolve_model_file(model_dir, KERAS_FILE)
    if flip_average is None:
        flip_average = current_flip_average(model_dir)
    split_data = load_split(data, split, require_all_classes=False, skip_corrupt=skip_corrupt)
    probs = predict(load_predictor(model_dir, "keras", 1.0, flip_average), split_data.images)
    record = calibration_record(probs, split_data.labels) | {"flip_average": flip_average}
    if (model_dir / TFLITE_FILE).is_file():
        lite = predict(load_predictor(model_dir, "litert", 1.0, flip_average), split_data.images)
        record["litert_ece_before"] = expected_calibration_error(lite, split_data.labels)
        record["litert_ece_after"] = expected_calibration_error(
            apply_temperature(lite, record["temperature"]), split_data.labels)
    record.update(fitted_on=split, data=str(Path(data).expanduser().resolve()), fitted_with="keras",
                  ece_bins=ECE_BINS, fitted_at=time.strftime("%Y-%m-%d"))
    runs.write_json_atomic(model_dir / CALIBRATION_FILE, record)
    return record


def published_flip_average(model_dir: Path) -> bool | None:
    """The flip choice a published model's figures were measured with, or None for an unpublished folder."""
    metrics = runs.read_json(model_dir / METRICS_FILE) if model_dir.is_dir() else None
    if not metrics or "val" not in metrics:
        return None
    return bool((metrics.get("calibration") or {}).get("flip_average", False))


def update_model_card(model_dir: Path, record: dict[str, Any], readme: Path | None) -> bool:
    """Record the calibration in a published model's metrics.json and card (and `readme`'s table)."""
    metrics = runs.read_json(model_dir / METRICS_FILE)
    if not metrics or "val" not in metrics:
        return False
    metrics["calibration"] = record
    metrics["val"]["ece"] = record["ece_after"]  # what evaluate now reports for this folder
    card_writer(model_dir, metrics, readme)()
    return True


def format_record(record: dict[str, Any]) -> str:
    lines = [
        f"temperature {record['temperature']:g} (fitted on {record['n_images']} {record.get('fitted_on', '')} faces; "
        f"accuracy {record['accuracy']:.4f}, unchanged)",
        f"NLL             {record['nll_before']:.4f} -> {record['nll_after']:.4f}",
        f"ECE             {record['ece_before']:.4f} -> {record['ece_after']:.4f} "
        f"(cross-fitted: {record['ece_after_cross_fitted']:.4f})",
        f"mean confidence {record['mean_confidence_before']:.4f} -> {record['mean_confidence_after']:.4f}",
    ]
    if record.get("flip_average"):
        lines.append("flip averaging on: each face is averaged with its mirror image (twice the classifier time)")
    if "litert_ece_after" in record:
        lines.append(f"LiteRT int8 ECE {record['litert_ece_before']:.4f} -> {record['litert_ece_after']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model folder (with model.keras)")
    parser.add_argument("--data", type=Path, required=True, help="data-set folder or fer2013.csv")
    parser.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                        help="declare that the model averages each face with its mirror image, or not "
                             "(default: keep the folder's current choice)")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images with a warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    published = published_flip_average(args.model)
    if published is not None and args.flip_average is not None and args.flip_average != published:
        print(f"error: {args.model} is published with flip averaging {'on' if published else 'off'}, and its "
              "card's accuracy was measured so; to change it, publish the run again with "
              "python -m training.publish --flip-average (or --no-flip-average)", file=sys.stderr)
        return 2
    try:
        record = calibrate_model(args.model, args.data, "val", flip_average=args.flip_average,
                                 skip_corrupt=args.skip_corrupt)
    except (DatasetError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shipped = ModelRegistry.from_settings(get_settings()).is_shipped(args.model)
    print(format_record(record))
    print(f"\nwrote {args.model / CALIBRATION_FILE}")
    if update_model_card(args.model, record, PROJECT_README if shipped else None):
        print("updated the model card and metrics.json" + (" and the README's results table" * shipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
