"""Export a trained emotion model for the app: model.keras, model.h5 and an int8 LiteRT model.

    python -m training.export --model data/runs/base/best.keras --out data/runs/base/export
    python -m training.export --model best.keras --out export --data ../shared/datasets/fer2013 --split val --half

- model.keras: what the app loads with the Keras backend (`--half`: float16 weights, half the size;
  fer_core.model_io.load_keras_model upcasts them to float32 on load);
- model.h5: the legacy format users of the original project load directly (always float32);
- model_int8.tflite: with --data, full-integer int8 when its accuracy on the split stays within
  0.3 points of the Keras model (`training.quantize`); else dynamic-range int8 (weights int8,
  activations float) via `tf.lite.TFLiteConverter` with `Optimize.DEFAULT`. Run through ai_edge_litert.

With --data, report.json gets the accuracy of the Keras and LiteRT models on the split,
their difference, and milliseconds per face at batch 1, 8 and 32 for both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.calibration import CALIBRATION_FILE
from fer_core.classify import KerasClassifier, LiteRTClassifier
from fer_core.emotions import FACE_SIZE
from fer_core.model_io import H5_FILE, KERAS_FILE, TFLITE_FILE, ModelError, load_keras_model, save_keras_float16
from training import runs
from training.config import SPLITS
from training.data import DatasetError, load_split
from training.inference import DEFAULT_BATCH_SIZE, predict, time_per_face

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
LATENCY_BATCHES = (1, 8, 32)
HALF_CHECK_IMAGES = 256  # faces compared between the float32 model and its float16 round trip


def convert_to_tflite_int8(model: Any, out_path: Path) -> dict[str, Any]:
    """Write a dynamic-range int8 .tflite of `model`; returns how (method) and how long it took.

    With TF 2.21 / Keras 3.15 `from_keras_model` works (it exports a SavedModel internally and
    prints its signature, which we swallow); the SavedModel route is kept for Keras versions where
    it does not.
    """
    import tensorflow as tf

    t0 = time.perf_counter()
    method = "from_keras_model"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flat = converter.convert()
    except Exception as exc:  # converter failures come as many types
        log.info("from_keras_model failed (%s: %s); converting via a SavedModel", type(exc).__name__, exc)
        method = "saved_model"
        with tempfile.TemporaryDirectory(prefix="classmood-export-") as tmp:
            with contextlib.redirect_stdout(io.StringIO()):
                model.export(tmp, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flat = converter.convert()
    out_path.write_bytes(flat)
    return {"method": method, "seconds": round(time.perf_counter() - t0, 2)}


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean()) if len(labels) else 0.0


def export_model(
    keras_model_path: str | Path,
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    half: bool = False,
    skip_corrupt: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timing_repeats: int = 10,
) -> dict[str, Any]:
    """Export `keras_model_path` into `out_dir` and write `out_dir/report.json`; returns the report.

    Files appear in `out_dir` only once all of them were written (a reader never sees half an export).
    """
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    model = load_keras_model(keras_model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    report: dict[str, Any] = {
        "source": str(Path(keras_model_path).resolve()),
        "created_at": time.time(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "half": half,
    }
    try:
        if half:
            save_keras_float16(model, staging / KERAS_FILE)
        else:
            model.save(staging / KERAS_FILE)
        with warnings_quiet():
            model.save(staging / H5_FILE)  # Keras warns that HDF5 is legacy; users of the seed need it
        report["tflite"] = convert_to_tflite_int8(model, staging / TFLITE_FILE)
        if data is not None:  # full-integer int8 instead, when it keeps the accuracy (training.quantize)
            from training.quantize import try_full_int8

            report["tflite"] |= try_full_int8(model, staging / TFLITE_FILE, data, split, skip_corrupt=skip_corrupt)

        # Raw probabilities throughout: the formats are compared, not any stored calibration.
        keras_ref = KerasClassifier(Path(keras_model_path), model=model, temperature=1.0, flip_average=False)
        litert = LiteRTClassifier(staging / TFLITE_FILE, temperature=1.0, flip_average=False)
        half_model = KerasClassifier(staging / KERAS_FILE, temperature=1.0, flip_average=False) if half else None

        if data is not None:
            split_data = load_split(data, split, require_all_classes=False, skip_corrupt=skip_corrupt)
            faces, labels = split_data.images, split_data.labels
            p_keras = predict(keras_ref, faces, batch_size)
            p_lite = predict(litert, faces, batch_size)
            report.update(
                data=str(Path(data).expanduser().resolve()),
                split=split,
                n_images=len(labels),
                classes_present=split_data.classes_present,
                keras_accuracy=_accuracy(p_keras, labels),
                tflite_accuracy=_accuracy(p_lite, labels),
                prediction_agreement=float((p_keras.argmax(1) == p_lite.argmax(1)).mean()),
                max_abs_prob_difference=float(np.abs(p_keras - p_lite).max()),
            )
            report["accuracy_difference"] = report["tflite_accuracy"] - report["keras_accuracy"]
            if half_model is not None:
                p_half = predict(half_model, faces, batch_size)
                report["half_accuracy"] = _accuracy(p_half, labels)
                report["half_accuracy_difference"] = report["half_accuracy"] - report["keras_accuracy"]
            # Timed on this (shared, possibly busy) machine: compare keras vs litert, not absolutes.
            report["latency_ms"] = {
                "keras": time_per_face(keras_ref, LATENCY_BATCHES, timing_repeats),
                "litert": time_per_face(litert, LATENCY_BATCHES, timing_repeats),
            }
            if hasattr(os, "getloadavg"):
                report["load_average_1m"] = round(os.getloadavg()[0], 2)
        if half_model is not None:
            report["half_check"] = _half_check(keras_ref, half_model, data, split, skip_corrupt, batch_size)

        # Publish: move the finished files over any previous export.
        for name in (KERAS_FILE, H5_FILE, TFLITE_FILE):
            os.replace(staging / name, out_dir / name)
        stale = out_dir / CALIBRATION_FILE
        if stale.is_file():  # fitted to the model just replaced; it would mis-scale the new one
            stale.unlink()
            log.warning("removed %s (it belonged to the previous model); refit with python -m training.calibrate",
                        stale)
        report["files"] = {
            name: {"path": str(out_dir / name), "mb": round((out_dir / name).stat().st_size / 2**20, 2)}
            for name in (KERAS_FILE, H5_FILE, TFLITE_FILE)
        }
        runs.write_json_atomic(out_dir / REPORT_FILE, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _half_check(
    reference: KerasClassifier, half: KerasClassifier, data: str | Path | None, split: str, skip_corrupt: bool,
    batch_size: int,
) -> dict[str, Any]:
    """Float32 vs float16-stored predictions on real faces when we have them, else random ones."""
    if data is not None:
        faces = load_split(data, split, require_all_classes=False, skip_corrupt=skip_corrupt).images
        faces, source = faces[:HALF_CHECK_IMAGES], f"{split} split"
    else:
        rng = np.random.default_rng(0)
        faces, source = rng.integers(0, 256, (64, FACE_SIZE, FACE_SIZE)).astype(np.uint8), "random faces"
    p_ref, p_half = predict(reference, faces, batch_size), predict(half, faces, batch_size)
    dtypes = sorted({str(w.dtype) for w in half.model.weights})
    return {
        "images": len(faces),
        "on": source,
        "loaded_weight_dtypes": dtypes,
        "max_abs_prob_difference": float(np.abs(p_ref - p_half).max()),
        "argmax_agreement": float((p_ref.argmax(1) == p_half.argmax(1)).mean()),
    }


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def format_report(report: dict[str, Any]) -> str:
    lines = [f"exported {report['source']}"]
    for name, info in report.get("files", {}).items():
        lines.append(f"  {name:<20} {info['mb']:>8.1f} MB  {info['path']}")
    lines.append(f"  int8 conversion: {report['tflite']['method']}, {report['tflite']['seconds']} s; "
                 f"{report['tflite'].get('quantization', 'dynamic-range')}")
    if "keras_accuracy" in report:
        lines.append(
            f"{report['split']} ({report['n_images']} images): keras {report['keras_accuracy']:.4f}  "
            f"litert int8 {report['tflite_accuracy']:.4f}  difference {report['accuracy_difference']:+.4f}  "
            f"agreement {report['prediction_agreement']:.4f}"
        )
        if "half_accuracy" in report:
            lines.append(
                f"float16 model.keras: {report['half_accuracy']:.4f} ({report['half_accuracy_difference']:+.4f})"
            )
        lines.append(f"ms per face (median; machine load 1m: {report.get('load_average_1m', '?')})")
        for backend, table in report["latency_ms"].items():
            cells = "  ".join(f"batch {b}: {v['ms_per_face']:.2f}" for b, v in table.items())
            lines.append(f"  {backend:<7} {cells}")
    if "half_check" in report:
        hc = report["half_check"]
        lines.append(
            f"float16 round trip on {hc['images']} {hc['on']}: "
            f"weights load as {', '.join(hc['loaded_weight_dtypes'])}, "
            f"max prob difference {hc['max_abs_prob_difference']:.2e}, argmax agreement {hc['argmax_agreement']:.4f}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a ClassMood emotion model (.keras, .h5, int8 .tflite) and check the conversion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="trained model (.keras/.h5, or a model folder)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data", type=Path, help="data set to measure keras vs int8 accuracy and speed on")
    parser.add_argument("--split", default="val", choices=SPLITS, help="split of --data to measure on")
    parser.add_argument("--half", action="store_true", help="store model.keras with float16 weights")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images with a warning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export_model(
            args.model, args.out, data=args.data, split=args.split, half=args.half, skip_corrupt=args.skip_corrupt
        )
    except (DatasetError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {args.out / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
