"""The model card of a published model: metrics.json, the card README.md and the project README's results table.

`build_metrics` gathers what a run did (its training stages: every --init-from run before it, see
`init_record`) and what its export measured; `model_card` and `results_table` word the same
figures, so the card, the table and metrics.json cannot disagree. `card_writer` writes all three.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fer_core.emotions import EMOTIONS
from fer_core.model_io import KERAS_FILE, TFLITE_FILE
from training import runs
from training.config import DEFAULT_ADAM_EPSILON
from training.pretrained import IMAGENET_SOURCE, LAST_BLOCK, BaseWeights
from training.schedules import MIN_LR

METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
# The project README's results table sits between these markers; publish rewrites it from metrics.json.
PROJECT_README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS_START = "<!-- model-results:start -->"
RESULTS_END = "<!-- model-results:end -->"
# The run options a model card repeats for each training stage.
STAGE_OPTIONS = (
    "lr", "lr_schedule", "adam_epsilon", "weight_decay", "ema", "precise_bn", "batch_size", "image_size", "augment",
    "label_smoothing", "erasing", "mixup", "dropout", "class_weights", "distill_from", "distill_also", "distill_weight",
    "base_weights", "pretrained_lr_factor",
)


def init_record(model: Path) -> dict[str, Any]:
    """What a fine-tuning run starts from: the model, and the training stages behind it if they are known.

    A published model folder (or a file in one) has a metrics.json whose stages are carried over,
    and a run's own checkpoint (`RUN/best.keras`) has the run's files; either way the next model
    card tells the whole training, not only its last run.
    """
    model = Path(model).resolve()
    folder = model if model.is_dir() else model.parent
    metrics = runs.read_json(folder / METRICS_FILE)
    record: dict[str, Any] = {"model": str(model)}
    if metrics and isinstance(metrics.get("training"), dict):
        record.update(
            weights_init=metrics.get("weights_init"),
            val_accuracy=(metrics.get("val") or {}).get("accuracy"),
            stages=training_stages(metrics["training"]),
        )
    elif (folder / runs.CONFIG_FILE).is_file() and (folder / runs.HISTORY_FILE).is_file():
        stages, weights_init = run_stages(folder)
        best = max((float(r.get("val_accuracy") or 0) for r in runs.read_history(folder)), default=None)
        record.update(weights_init=weights_init, val_accuracy=best, stages=stages)
    return record


def training_stages(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages of a published model's training (models published before stages were recorded had one)."""
    if training.get("stages"):
        return list(training["stages"])
    return [_stage(training.get("run"), training.get("config") or {}, training.get("epochs_trained"),
                   training.get("best_epoch"), training.get("training_time_s"))]


def _stage(run: str | None, config: Mapping[str, Any], epochs: int | None, best_epoch: int | None,
           seconds: float | None) -> dict[str, Any]:
    """One stage's record; `config` is a run config in its stored (JSON) form, of any version."""
    return {
        "run": run,
        "init_from": config.get("init_from"),
        "epochs_trained": epochs,
        "best_epoch": best_epoch,
        "training_time_s": seconds,
        "options": {key: config.get(key) for key in STAGE_OPTIONS},
    }


def _training_time_s(run_dir: Path) -> float | None:
    epochs = [r for r in runs.read_progress(run_dir) if r.get("kind") == "epoch"]
    if not epochs:
        return None
    # elapsed_s restarts with each (resumed) process: add up each segment's last value.
    total, previous = 0.0, 0.0
    for record in epochs:
        elapsed = float(record["elapsed_s"])
        if elapsed < previous:
            total += previous
        previous = elapsed
    return round(total + previous, 1)


def run_stages(run_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """A run's training stages, its own last, and where the first stage's weights came from."""
    config = runs.load_config(run_dir)
    history = runs.read_history(run_dir)
    best = max(history, key=lambda r: float(r.get("val_accuracy") or 0), default={}).get("epoch")
    best_epoch = None if best is None else int(best) + 1
    # An init_from run continues the training of the model it started from (see init_record).
    start = runs.read_json(run_dir / runs.INIT_FROM_FILE) if config.init_from else None
    earlier = (start or {}).get("stages") or []
    stages = [*earlier, _stage(run_dir.name, config.stored(), len(history), best_epoch, _training_time_s(run_dir))]
    if start is not None and start.get("weights_init"):
        weights_init = start["weights_init"]
    elif config.init_from:
        weights_init = "fine-tuned from an unpublished model"
    else:
        status = runs.read_json(run_dir / runs.STATUS_FILE) or {}
        if config.base_weights is not None:
            weights_init = config.base_weights.describe()
        elif status.get("weights_used", "none") == "none":
            weights_init = "from scratch"
        else:
            weights_init = BaseWeights(status["weights_used"], LAST_BLOCK, IMAGENET_SOURCE).describe()
    return stages, weights_init


def build_metrics(run_dir: Path, keras_report: dict, litert_report: dict, export_report: dict,
                  calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    config = runs.load_config(run_dir)
    stages, weights_init = run_stages(run_dir)
    this_run = stages[-1]
    return {
        "model": "InceptionV3 (Keras, include_top=False) + GAP + dropout + Dense(7, softmax)",
        "classes": list(EMOTIONS),
        "input": "48x48 grayscale face, 0..255; resized inside the model",
        "image_size": config.image_size,
        "weights_init": weights_init,
        "training": {
            "run": run_dir.name,
            "config": config.stored(),
            "epochs_trained": this_run["epochs_trained"],
            "best_epoch": this_run["best_epoch"],
            "training_time_s": this_run["training_time_s"],
            "stages": stages,
            "total_epochs": sum(stage.get("epochs_trained") or 0 for stage in stages),
            "total_training_time_s": round(sum(stage.get("training_time_s") or 0 for stage in stages), 1),
        },
        "data": {"train": "FER2013 train/ (27,965 images)", "validation": "FER2013 val/ = PublicTest (3,589)"},
        "val": {
            "accuracy": keras_report["accuracy"],
            "macro_f1": keras_report["macro_f1"],
            "balanced_accuracy": keras_report["balanced_accuracy"],
            "ece": keras_report["ece"],
            "per_class_recall": {k: v["recall"] for k, v in keras_report["per_class"].items()},
            "per_class_f1": {k: v["f1"] for k, v in keras_report["per_class"].items()},
            "confusion_matrix": keras_report["confusion_matrix"],
            "n_images": keras_report["n_images"],
        },
        "litert_int8": {
            "val_accuracy": litert_report["accuracy"],
            "accuracy_difference": litert_report["accuracy"] - keras_report["accuracy"],
            "ms_per_face": export_report.get("latency_ms", {}).get("litert"),
            "quantization": export_report.get("tflite", {}).get("quantization", "dynamic-range"),
        },
        "keras_ms_per_face": export_report.get("latency_ms", {}).get("keras"),
        "float16_weights_accuracy_difference": export_report.get("half_accuracy_difference"),
        "files_mb": {name: info["mb"] for name, info in export_report.get("files", {}).items()
                     if name in (KERAS_FILE, TFLITE_FILE)},
        "load_average_during_timing": export_report.get("load_average_1m"),
        "calibration": calibration,
        "published_at": time.strftime("%Y-%m-%d"),
    }


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _latency_line(table: dict | None) -> str:
    if not table:
        return "not measured"
    return ", ".join(f"batch {batch}: {row['ms_per_face']:.2f} ms" for batch, row in table.items())


def _training_summary(train: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The stages of a metrics.json training record (old or new) and "N epochs in K stages, H h"."""
    stages = train.get("stages") or training_stages(train)
    total_epochs = train.get("total_epochs", train["epochs_trained"])
    hours = (train.get("total_training_time_s", train["training_time_s"]) or 0) / 3600
    plural = "s" * (len(stages) != 1)
    return stages, f"{total_epochs} epochs in {len(stages)} stage{plural}, {hours:.1f} h"


def _points(difference: float | None) -> str:
    return "not measured" if difference is None else f"{100 * difference:+.2f} points"


def _int8_accuracy(lite: dict[str, Any]) -> str:
    return f"{percent(lite['val_accuracy'])} ({100 * lite['accuracy_difference']:+.2f} points)"


def _stage_line(number: int, stage: dict[str, Any]) -> str:
    options = stage.get("options") or {}
    epsilon = options.get("adam_epsilon") or DEFAULT_ADAM_EPSILON  # None: a run from before the option
    start = "from scratch" if number == 1 and not stage.get("init_from") else "from the stage above"
    if number == 1 and stage.get("init_from"):
        start = f"from `{Path(stage['init_from']).name}` (its training is not recorded)"
    base = BaseWeights(**options["base_weights"]) if options.get("base_weights") else None
    if base is not None:
        start = (f"from ImageNet weights in the stem to {base.pretrained_through}"
                 + (f" (learning at {options.get('pretrained_lr_factor')} x the rate of the random blocks)"
                    if base.partial else ""))
    hours = (stage.get("training_time_s") or 0) / 3600
    size = options.get("image_size")  # stages may differ: a later one can fine-tune at a larger input
    return (
        f"{number}. run `{stage.get('run')}`, {start}: {stage.get('epochs_trained')} epochs "
        f"(best: epoch {stage.get('best_epoch')}), {hours:.1f} h; "
        + (f"input {size} px, " if size else "")
        + f"learning rate {options.get('lr')}"
        + (f" with cosine decay to {MIN_LR:g}" if options.get("lr_schedule") == "cosine" else "")
        + f", batch {options.get('batch_size')}, augmentation `{options.get('augment')}`, "
        f"label smoothing {options.get('label_smoothing')}, dropout {options.get('dropout')}"
        + (f", random erasing (p {options['erasing']})" if options.get("erasing") else "")
        + (f", mixup (alpha {options['mixup']})" if options.get("mixup") else "")
        + (", class weights" if options.get("class_weights") else "")
        + (f", distilled from {_teachers(options)} (teacher share {options['distill_weight']}, "
           "flip-averaged)" if options.get("distill_from") else "")
        + (f", Adam epsilon {epsilon}" if epsilon != DEFAULT_ADAM_EPSILON else "")
        + (f", weight decay {options['weight_decay']}" if options.get("weight_decay") else "")
        + (f", weight moving average (momentum {options['ema']})" if options.get("ema") else "")
        + (f", BatchNorm statistics re-estimated on {options['precise_bn']} clean training faces"
           if options.get("precise_bn") else "")
    )


def _teachers(options: dict[str, Any]) -> str:
    """`a`, or an ensemble of `a` and `b`: the distillation teachers of a stage."""
    names = [f"`{_short_path(str(path))}`" for path in (options["distill_from"], *(options.get("distill_also") or ()))]
    return names[0] if len(names) == 1 else f"an ensemble of {', '.join(names[:-1])} and {names[-1]}"


def _short_path(path: str) -> str:
    """models/fer-inceptionv3 or runs/NAME/best.keras: enough to tell which model, not the machine's layout."""
    parts = Path(path).parts
    return "/".join(parts[-3:] if parts[-1].endswith((".keras", ".h5")) else parts[-2:])


def _flipped(metrics: dict[str, Any]) -> bool:
    return bool((metrics.get("calibration") or {}).get("flip_average"))


def _calibration_lines(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return "- Confidences are the model's raw softmax outputs: not calibrated (`python -m training.calibrate`)."
    lines = (
        "- Flip averaging is on (`calibration.json`): each face and its mirror image go through the same\n"
        "  classifier call and their probabilities are averaged; every figure on this card is measured so.\n"
    ) * bool(calibration.get("flip_average")) + (
        f"- Confidences are temperature-scaled with T = {calibration['temperature']:.2f} (`calibration.json`), "
        f"fitted on val by minimising the\n  negative log-likelihood; predictions and accuracy do not change.\n"
        f"- Expected calibration error on val: {calibration['ece_before']:.3f} raw, "
        f"{calibration['ece_after']:.3f} calibrated; {calibration['ece_after_cross_fitted']:.3f} cross-fitted\n"
        f"  (T fitted on one half of val, measured on the other: the out-of-sample figure)."
    )
    if "litert_ece_after" in calibration:
        lines += (f"\n- int8 LiteRT, same temperature: ECE {calibration['litert_ece_before']:.3f} raw, "
                  f"{calibration['litert_ece_after']:.3f} calibrated.")
    return lines + (
        f"\n- Mean confidence {percent(calibration['mean_confidence_before'])} raw, "
        f"{percent(calibration['mean_confidence_after'])} calibrated, "
        f"against {percent(calibration['accuracy'])} accuracy."
    )


def _ece_value(metrics: dict[str, Any]) -> str:
    calibration = metrics.get("calibration")
    suffix = f" (temperature-scaled, T = {calibration['temperature']:.2f})" if calibration else " (not calibrated)"
    return f"{metrics['val']['ece']:.3f}{suffix}"


def model_card(metrics: dict[str, Any]) -> str:
    val, lite, train = metrics["val"], metrics["litert_int8"], metrics["training"]
    rows = "\n".join(
        f"| {name} | {percent(val['per_class_recall'].get(name, 0))} | {percent(val['per_class_f1'].get(name, 0))} |"
        for name in EMOTIONS
    )
    stages, summary = _training_summary(train)
    stage_lines = "\n".join(_stage_line(i, stage) for i, stage in enumerate(stages, start=1))
    cosine = any((stage.get("options") or {}).get("lr_schedule") == "cosine" for stage in stages)
    lr_rule = "ReduceLROnPlateau or, where a stage says so, cosine decay" if cosine else "ReduceLROnPlateau"
    scratch_note = " (no ImageNet weights could be had on the training machine)" * (
        metrics["weights_init"] == "from scratch"
    )
    return f"""# ClassMood emotion model: {metrics['model']}

The model ClassMood ships and uses by default (Live page, `fer_core.analyze`, `fer_core.bench`).

## Data and splits
- Trained on FER2013 `train/` (27,965 48x48 grayscale faces, duplicates of the test split removed).
- Chosen on FER2013 `val/` (PublicTest, 3,589 faces). All figures below are **validation** figures.
- FER2013's PrivateTest split was never used: it is kept apart as the independent test.

## Training
- Weights: {metrics['weights_init']}{scratch_note};
  input {metrics['image_size']}x{metrics['image_size']} (48x48 faces upscaled inside the model).
- {summary} on 2 CPU cores; Adam, {lr_rule},
  the best epoch on val kept. Each stage after the first continued from the previous stage's best model
  with a fresh optimizer (`python -m training.train --init-from ...`):

{stage_lines}

## Validation results ({val['n_images']} images)

| metric | value |
|---|---|
| accuracy | **{percent(val['accuracy'])}** |
| macro-F1 | {val['macro_f1']:.3f} |
| balanced accuracy | {percent(val['balanced_accuracy'])} |
| expected calibration error (15 bins) | {_ece_value(metrics)} |
| int8 LiteRT accuracy | {_int8_accuracy(lite)} |

| class | recall | F1 |
|---|---|---|
{rows}

![confusion matrix on val](confusion_matrix.png)

## Confidence calibration
{_calibration_lines(metrics.get("calibration"))}

## Files and speed
- `model.keras`: Keras model with float16-stored weights ({metrics['files_mb'].get(KERAS_FILE)} MiB);
  loads as float32; accuracy difference from float32: {_points(metrics['float16_weights_accuracy_difference'])}.
- `model_int8.tflite`: {lite.get('quantization', 'dynamic-range')} int8 LiteRT export
  ({metrics['files_mb'].get(TFLITE_FILE)} MiB), the live path.
- ms per face, LiteRT int8: {_latency_line(lite['ms_per_face'])}.
- ms per face, Keras: {_latency_line(metrics['keras_ms_per_face'])}.{_flip_cost_line(metrics)}
  (Timed on a shared 2-core machine, load average {metrics['load_average_during_timing']}.)

## Known limits
- FER2013 labels are noisy (human agreement is estimated around 65%), so no model's accuracy means
  "reads feelings": an expression label is weak evidence of an inner state.
- FER2013 is skewed in age, ethnicity and setting (web images of mostly adults, mostly light-skinned);
  accuracy on under-represented groups is likely lower and was not measured.
- Frontal, upright faces only, like the Haar detector that feeds it.
- `disgust` is rare (1.4% of training images): its recall is the least reliable.
- See the README's responsible-use section before using it on people.
"""


def _flip_cost_line(metrics: dict[str, Any]) -> str:
    if not _flipped(metrics):
        return ""
    return "\n  With flip averaging each face is classified twice, so the live cost per face is twice these figures."


def results_table(metrics: dict[str, Any]) -> str:
    """The project README's results table: the model card's headline figures, in the same rounding."""
    val, lite = metrics["val"], metrics["litert_int8"]
    _, summary = _training_summary(metrics["training"])
    recalls = ", ".join(f"{name} {100 * val['per_class_recall'].get(name, 0):.0f}%" for name in EMOTIONS)
    return f"""| measure (FER2013 `val/`, {val['n_images']:,} faces) | value |
|---|---|
| accuracy (Keras, float16-stored weights{", flip-averaged" * _flipped(metrics)}) | **{percent(val['accuracy'])}** |
| macro-F1 | {val['macro_f1']:.3f} |
| expected calibration error | {_ece_value(metrics)} |
| int8 LiteRT accuracy (the live path) | {_int8_accuracy(lite)} |
| per-class recall | {recalls} |
| training | {metrics['weights_init']}, {summary} on 2 CPU cores |
"""


def readme_with_results(text: str, metrics: dict[str, Any]) -> str:
    """`text` with the results table between the markers rewritten, so README and card cannot disagree."""
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start < 0 or end < start:
        raise SystemExit(f"error: the README has no {RESULTS_START} ... {RESULTS_END} block to update")
    return text[:start] + f"{RESULTS_START}\n{results_table(metrics)}{RESULTS_END}" + text[end + len(RESULTS_END):]


def card_writer(out: Path, metrics: dict[str, Any], readme: Path | None) -> Callable[[], None]:
    """Check `readme` now (SystemExit without the results markers); the returned call writes
    metrics.json, the model card and the README's results table."""
    new_readme = readme_with_results(readme.read_text(encoding="utf-8"), metrics) if readme else None

    def write() -> None:
        runs.write_json_atomic(out / METRICS_FILE, metrics)
        (out / CARD_FILE).write_text(model_card(metrics), encoding="utf-8")
        if readme is not None and new_readme is not None:
            readme.write_text(new_readme, encoding="utf-8")

    return write
