"""Publish a trained run as ClassMood's shipped model, with its model card.

    python -m training.publish --run data/runs/NAME --data ../shared/datasets/fer2013 [--out models/fer-inceptionv3]
        [--flip-average]

Exports the run's best checkpoint (float16 `model.keras` + int8 `model_int8.tflite`),
fits its confidence temperature on `val/` (`calibration.json`, see `training.calibrate`;
with `--flip-average` the model averages each face with its mirror image, and is measured so),
evaluates both on `val/`, and writes `metrics.json`, `confusion_matrix.png` and a
`README.md` model card next to them (see `training.card`). It refuses to replace a published model unless the
new one is at least `MIN_GAIN` better on val (the git history must not fill up with models);
`--force` overrides that, for the first model or a deliberate replacement.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from fer_core.calibration import CALIBRATION_FILE
from fer_core.model_io import KERAS_FILE, TFLITE_FILE
from fer_core.registry import ModelRegistry
from fer_core.settings import get_settings
from training import runs
from training.calibrate import calibrate_model
from training.card import METRICS_FILE, PROJECT_README, build_metrics, card_writer, percent
from training.evaluate import evaluate_model_file
from training.export import export_model

MIN_GAIN = 0.01
SPLIT = "val"


def publish_refusal(new_accuracy: float, previous: dict[str, Any] | None, force: bool) -> str | None:
    """Why a model must not replace the published one, or None."""
    if previous is None or force:
        return None
    old = previous["val"]["accuracy"]
    if new_accuracy - old < MIN_GAIN:
        return (
            f"not published: val accuracy {percent(new_accuracy)} is not at least "
            f"{100 * MIN_GAIN:.0f} point better than the published {percent(old)} (use --force to replace anyway)"
        )
    return None


def publish(run_dir: Path, data: Path, out: Path, force: bool = False,
            readme: Path | None = None, flip_average: bool = False) -> dict[str, Any]:
    """Export, evaluate and write the model + card to `out`; also update `readme`'s results table if given.

    `flip_average`: the model averages each face with its mirror image, in the app and in every figure.
    """
    best = run_dir / runs.BEST_MODEL_FILE
    if not best.is_file():
        raise SystemExit(f"error: {best} not found (has the run finished an epoch?)")
    with tempfile.TemporaryDirectory(prefix="classmood-publish-") as tmp:
        staging = Path(tmp)
        export_report = export_model(best, staging, data=data, split=SPLIT, half=True)
        # Before the evaluations, which then use it (temperature and flip choice).
        calibration = calibrate_model(staging, data, SPLIT, flip_average=flip_average)
        keras_report = evaluate_model_file(staging, data, SPLIT, out_dir=staging, backend="keras")
        litert_report = evaluate_model_file(staging, data, SPLIT, backend="litert")
        metrics = build_metrics(run_dir, keras_report, litert_report, export_report, calibration)
        refusal = publish_refusal(metrics["val"]["accuracy"], runs.read_json(out / METRICS_FILE), force)
        if refusal:
            raise SystemExit(refusal)
        # Checked before anything is written, so a README without markers leaves the old model whole.
        write_card = card_writer(out, metrics, readme)
        out.mkdir(parents=True, exist_ok=True)
        for name in (KERAS_FILE, TFLITE_FILE, CALIBRATION_FILE, runs.CONFUSION_FILE):
            shutil.copy2(staging / name, out / name)
    write_card()
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the run directory to publish")
    parser.add_argument("--data", type=Path, required=True, help="data set with the val/ split")
    parser.add_argument("--out", type=Path, default=None, help="model directory (default: the shipped model's)")
    parser.add_argument("--force", action="store_true", help="publish even if not 1 point better on val")
    parser.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=False,
                        help="the model averages each face with its mirror image (twice the classifier time)")
    args = parser.parse_args(argv)
    registry = ModelRegistry.from_settings(get_settings())
    out = args.out or registry.shipped.path
    # Only the shipped model's figures belong in the project README.
    readme = PROJECT_README if registry.is_shipped(out) else None
    metrics = publish(args.run.resolve(), args.data, out, force=args.force, readme=readme,
                      flip_average=args.flip_average)
    print(f"published {args.run} to {out}: val accuracy {percent(metrics['val']['accuracy'])}, "
          f"macro-F1 {metrics['val']['macro_f1']:.3f}, int8 {percent(metrics['litert_int8']['val_accuracy'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
