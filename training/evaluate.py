"""Evaluate an emotion model on a data-set split: accuracy, macro-F1, per-class scores,
confusion matrix and calibration.

    python -m training.evaluate --model models/fer-inceptionv3 --data ../shared/datasets/fer2013
    python -m training.evaluate --model data/runs/base/export/model_int8.tflite --backend litert \\
        --data DIR --split val --json out/eval.json --tta

The model is used as the app uses it: with its stored calibration (`calibration.json`:
temperature, and flip averaging if the model declares it). `--tta` / `--no-tta` override
the flip averaging.

A split holding only some of the 7 classes is scored on the classes present; the report
says which were scored and which were absent. Accuracy still counts a prediction of an
absent class as wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from fer_core.model_io import KERAS_FILE, TFLITE_FILE, ModelError, resolve_model_file
from training import runs
from training.config import SPLITS
from training.data import DatasetError, load_split
from training.inference import BACKENDS, DEFAULT_BATCH_SIZE, load_predictor, predict
from training.metrics import score

log = logging.getLogger(__name__)

def evaluate_model_file(
    model_path: str | Path,
    data: str | Path,
    split: str,
    *,
    out_dir: str | Path | None = None,
    skip_corrupt: bool = False,
    tta: bool | None = None,
    backend: str = "keras",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Evaluate a model file (or model directory) on one split of a data set.

    `tta` None averages with mirrored faces only if the model's calibration says so (as the app does).
    With `out_dir`, writes `evaluation.json` and `confusion_matrix.png` there.
    Raises DatasetError for data problems and ModelError for model-file problems.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    resolve_model_file(model_path, KERAS_FILE if backend == "keras" else TFLITE_FILE)  # fail fast, before the data
    split_data = load_split(data, split, require_all_classes=False, skip_corrupt=skip_corrupt)
    predictor = load_predictor(model_path, backend, flip_average=tta)
    t0 = time.perf_counter()
    probs = predict(predictor, split_data.images, batch_size)
    seconds = time.perf_counter() - t0
    report = score(probs, split_data.labels, split_data.classes_present)
    report.update(
        model=str(predictor.source),
        backend=backend,
        temperature=predictor.temperature,
        data=str(Path(data).expanduser().resolve()),
        split=split,
        tta=predictor.flip_average,
        tta_from="option" if tta is not None else "model",
        skipped_images=list(split_data.skipped),
        predict_seconds=round(seconds, 3),  # includes the first call's tracing; see export for latency
        evaluated_at=time.time(),
    )
    if report["classes_absent"]:
        report["note"] = (
            f"split {split!r} holds only {len(report['classes_scored'])} of {NUM_EMOTIONS} classes; "
            f"per-class scores and macro-F1 cover {', '.join(report['classes_scored'])}; "
            f"absent and not scored: {', '.join(report['classes_absent'])}"
        )
    if out_dir is not None:
        out = Path(out_dir)
        write_outputs(report, out / runs.EVALUATION_FILE, out / runs.CONFUSION_FILE)
    return report


def write_outputs(report: dict[str, Any], json_path: Path, png_path: Path | None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if png_path is not None:
        save_confusion_png(report, png_path)
        report["confusion_png"] = str(png_path)
    runs.write_json_atomic(json_path, report)


def save_confusion_png(report: dict[str, Any], path: Path) -> None:
    """Row-normalised confusion matrix (rows: scored true classes; columns: all 7 predictions)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = [EMOTION_INDEX[name] for name in report["classes_scored"]]
    counts = cm[rows]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.62 * len(rows)), dpi=110)
    try:
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(NUM_EMOTIONS), EMOTIONS, rotation=35, ha="right")
        ax.set_yticks(range(len(rows)), report["classes_scored"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(rows)):
            for j in range(NUM_EMOTIONS):
                ax.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
        title = f"{report.get('split', '')}: accuracy {report['accuracy']:.1%}, macro-F1 {report['macro_f1']:.3f}"
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)


def format_report(report: dict[str, Any]) -> str:
    tta = ""
    if report.get("tta"):
        tta = ", flip-averaged" + (" as the model declares" if report.get("tta_from") == "model" else "")
    calibrated = f", calibrated: temperature {report['temperature']:g}" if report.get("temperature", 1.0) != 1.0 else ""
    lines = [
        f"model   {report.get('model', '?')}  ({report.get('backend', '?')}{tta}{calibrated})",
        f"data    {report.get('data', '?')}  split {report.get('split', '?')}: {report['n_images']} images"
        + (f" ({len(report['skipped_images'])} unreadable skipped)" if report.get("skipped_images") else ""),
    ]
    if report["classes_absent"]:
        lines.append(
            f"classes scored: {', '.join(report['classes_scored'])}; "
            f"absent from this split (not scored): {', '.join(report['classes_absent'])}"
        )
    lines += ["", f"{'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"]
    for name, m in report["per_class"].items():
        lines.append(f"{name:<10} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>8}")
    lines += [
        "",
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
        f"balanced accuracy {report['balanced_accuracy']:.4f}   ECE ({report['ece_bins']} bins) {report['ece']:.4f}",
        "",
        "confusion matrix (rows: true, columns: predicted)",
        " " * 10 + "".join(f"{name[:7]:>8}" for name in EMOTIONS),
    ]
    cm = report["confusion_matrix"]
    for name in report["classes_scored"]:
        lines.append(f"{name:<10}" + "".join(f"{v:>8}" for v in cm[EMOTION_INDEX[name]]))
    if report.get("predicted_absent") and any(report["predicted_absent"].values()):
        shown = ", ".join(f"{k} {v}" for k, v in report["predicted_absent"].items() if v)
        lines.append(f"predictions of absent classes (counted wrong): {shown}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a ClassMood emotion model on a data-set split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="model file (.keras/.h5/.tflite) or model folder")
    parser.add_argument("--data", type=Path, required=True, help="data-set folder or fer2013.csv")
    parser.add_argument("--split", default="val", choices=SPLITS, help="split to evaluate on")
    parser.add_argument("--json", type=Path, help="write the report here (and <name>_confusion.png next to it)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average each face with its mirror image, or not (default: as the model's "
                             "calibration.json says)")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="keras (float32) or litert (.tflite)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="faces per prediction batch")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images with a warning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be positive")
    try:
        report = evaluate_model_file(
            args.model, args.data, args.split, skip_corrupt=args.skip_corrupt, tta=args.tta,
            backend=args.backend, batch_size=args.batch_size,
        )
    except (DatasetError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        write_outputs(report, args.json, args.json.with_name(args.json.stem + "_confusion.png"))
    print(format_report(report))
    if args.json:
        print(f"\nwrote {args.json} and {report['confusion_png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
