"""Re-quantize a model folder in place with the full-integer int8 export of `training.quantize`.

    python -m training.requantize --model models/fer-inceptionv3 --data ../shared/datasets/fer2013 [--faces 1400]

It writes `model_int8.tflite` only if the full-integer file keeps the accuracy, and for a published model
updates metrics.json, its card and the README's results table, and refits the LiteRT ECE figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from fer_core.model_io import TFLITE_FILE, ModelError, load_keras_model
from training.data import DatasetError, load_split
from training.inference import load_predictor, predict, time_per_face
from training.quantize import REPRESENTATIVE_FACES, accuracy_of, try_full_int8


def requantize(model_dir: Path, data: Path, faces: int = REPRESENTATIVE_FACES, readme: Path | None = None,
               skip_corrupt: bool = False) -> dict[str, Any]:
    """Re-export `model_dir`'s int8 file from its model.keras (see the module docstring); returns the record."""
    from fer_core.classify import KerasClassifier
    from training import runs
    from training.calibrate import calibrate_model, update_model_card
    from training.card import METRICS_FILE
    from training.export import LATENCY_BATCHES, convert_to_tflite_int8

    model = load_keras_model(model_dir)
    with tempfile.TemporaryDirectory(prefix="classmood-quantize-", dir=model_dir) as tmp:
        staged = Path(tmp) / TFLITE_FILE
        record = {"dynamic_range": convert_to_tflite_int8(model, staged)}
        record |= try_full_int8(model, staged, data, "val", faces=faces, skip_corrupt=skip_corrupt)
        if record["quantization"] == "full-integer":
            shutil.copy2(staged, model_dir / TFLITE_FILE)
    metrics = runs.read_json(model_dir / METRICS_FILE)
    if record["quantization"] == "full-integer" and metrics and "val" in metrics:
        lite = load_predictor(model_dir, "litert")  # as the app runs it: calibrated, flip choice
        split = load_split(data, "val", require_all_classes=False, skip_corrupt=skip_corrupt)
        accuracy = accuracy_of(predict(lite, split.images), split.labels)
        metrics["litert_int8"] = {
            "val_accuracy": accuracy,
            "accuracy_difference": accuracy - metrics["val"]["accuracy"],
            "ms_per_face": time_per_face(lite, LATENCY_BATCHES, 10),
            "quantization": "full-integer",
        }
        # Keras again in the same sitting, so the card's two speed lines share one machine load.
        metrics["keras_ms_per_face"] = time_per_face(KerasClassifier(model_dir, model=model), LATENCY_BATCHES, 10)
        metrics["files_mb"][TFLITE_FILE] = round((model_dir / TFLITE_FILE).stat().st_size / 2**20, 2)
        if hasattr(os, "getloadavg"):
            metrics["load_average_during_timing"] = round(os.getloadavg()[0], 2)
        runs.write_json_atomic(model_dir / METRICS_FILE, metrics)
        # The temperature stays Keras's; the card's LiteRT calibration figures are measured again.
        update_model_card(model_dir, calibrate_model(model_dir, data, "val", skip_corrupt=skip_corrupt), readme)
        record["published_model_updated"] = True
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.requantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model folder with model.keras")
    parser.add_argument("--data", type=Path, required=True, help="data set: train/ for the representative faces, "
                                                                   "val/ to check the accuracy")
    parser.add_argument("--faces", type=int, default=REPRESENTATIVE_FACES, help="representative faces")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images with a warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fer_core.registry import ModelRegistry
    from fer_core.settings import get_settings
    from training.card import PROJECT_README

    if not args.model.is_dir():
        print(f"error: model folder not found: {args.model}", file=sys.stderr)
        return 2
    shipped = ModelRegistry.from_settings(get_settings()).is_shipped(args.model)
    try:
        record = requantize(args.model, args.data, args.faces, PROJECT_README if shipped else None,
                            args.skip_corrupt)
    except (DatasetError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "full_integer_accuracy" in record:
        print(f"val accuracy: Keras {record['keras_accuracy']:.4f}, dynamic-range int8 "
              f"{record['dynamic_range_accuracy']:.4f}, full-integer int8 {record['full_integer_accuracy']:.4f}")
    kept = record["quantization"] == "full-integer"
    print(f"{'wrote' if kept else 'kept'} {args.model / TFLITE_FILE} ({record['quantization']})"
          + (", updated metrics.json, the model card" + " and the README's table" * shipped
             if record.get("published_model_updated") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
