"""Promoting a finished run's model, side by side with the active model on the same validation figures.

A candidate (a finished run's export) is compared with the active model on accuracy, macro-F1 and
calibration error (ECE, with each model's own temperature), measured on the same data and split.
The active model's figures come from its own records when they were measured on that split, else
from `measure_active`, which evaluates it there (`python -m training.evaluate`, in a subprocess so
the page's process does not load TensorFlow). Promotion itself is the registry's (fer_core.registry):
an atomic swap that keeps every earlier model.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_core.calibration import CALIBRATION_FILE
from fer_core.model_io import KERAS_FILE, TFLITE_FILE
from fer_core.registry import ModelEntry, ModelRegistry, model_fingerprint
from training import runs
from training.card import METRICS_FILE
from training.export import REPORT_FILE
from training.launch import PROJECT_ROOT
from training.runs import RunInfo

COMPARISONS_DIR = "comparisons"  # <run>/comparisons/<fingerprint>.json: another model evaluated on the run's split
PROMOTED_TRAINING_CONFIG = "training_config.json"
MEASURE_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ValFigures:
    """A model's validation figures and where they were measured."""

    accuracy: float
    macro_f1: float
    ece: float | None  # with the model's calibration, as the app shows confidences; None: not measured
    data: str | None
    split: str | None
    n_images: int | None

    def same_data(self, other: ValFigures) -> bool:
        if None in (self.data, self.split, other.data, other.split):
            return False
        return (Path(str(self.data)).resolve(), self.split, self.n_images) == (
            Path(str(other.data)).resolve(), other.split, other.n_images)


def _figures(report: dict[str, Any] | None, ece: float | None) -> ValFigures | None:
    if not report or "accuracy" not in report:
        return None
    return ValFigures(float(report["accuracy"]), float(report.get("macro_f1", 0.0)), ece, report.get("data"),
                      report.get("split"), report.get("n_images"))


def _calibrated_ece(folder: Path) -> float | None:
    value = (runs.read_json(folder / CALIBRATION_FILE) or {}).get("ece_after")
    return None if value is None else float(value)


def candidate_figures(run: RunInfo) -> ValFigures | None:
    """A finished run's val figures: its evaluation, with the calibration error of its calibrated export."""
    return _figures(runs.read_json(run.path / runs.EVALUATION_FILE), _calibrated_ece(run.path / runs.EXPORT_DIR))


def recorded_figures(model_dir: Path) -> ValFigures | None:
    """The val figures a model folder records: a published model's metrics.json, or a promoted run's evaluation."""
    metrics = runs.read_json(model_dir / METRICS_FILE)
    if metrics and isinstance(metrics.get("val"), dict):
        val, calibration = metrics["val"], metrics.get("calibration") or {}
        return ValFigures(float(val["accuracy"]), float(val["macro_f1"]), val.get("ece"), calibration.get("data"),
                          calibration.get("fitted_on"), val.get("n_images"))
    return _figures(runs.read_json(model_dir / runs.EVALUATION_FILE), _calibrated_ece(model_dir))


@dataclass(frozen=True)
class Comparison:
    candidate: ValFigures | None
    active: ValFigures | None  # None: no figures for the active model on the candidate's split yet
    active_model: ModelEntry

    @property
    def worse(self) -> list[str]:
        """The measures on which the candidate is worse than the active model."""
        if self.candidate is None or self.active is None:
            return []
        worse = []
        if self.candidate.accuracy < self.active.accuracy:
            worse.append("accuracy")
        if self.candidate.macro_f1 < self.active.macro_f1:
            worse.append("macro-F1")
        if self.candidate.ece is not None and self.active.ece is not None and self.candidate.ece > self.active.ece:
            worse.append("calibration")
        return worse


def _comparison_file(run: RunInfo, model_dir: Path) -> Path:
    return run.path / COMPARISONS_DIR / f"{model_fingerprint(model_dir)[:16]}.json"


def compare_with_active(run: RunInfo, registry: ModelRegistry) -> Comparison:
    candidate = candidate_figures(run)
    active = registry.active()
    figures = None
    if candidate is not None and active.available:
        recorded = recorded_figures(active.path)
        measured = runs.read_json(_comparison_file(run, active.path))
        for option in (recorded, _figures(measured, (measured or {}).get("ece"))):
            if option is not None and option.same_data(candidate):
                figures = option
                break
    return Comparison(candidate, figures, active)


def measure_active(run: RunInfo, registry: ModelRegistry, python: str = sys.executable) -> ValFigures:
    """Evaluate the active model on the run's validation split (a subprocess); kept in the run folder."""
    candidate = candidate_figures(run)
    if candidate is None or candidate.data is None or candidate.split is None:
        raise ValueError(f"run {run.name!r} has no evaluation to compare with")
    active = registry.active()
    out = _comparison_file(run, active.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", "training.evaluate", "--model", str(active.path), "--data", str(candidate.data),
               "--split", str(candidate.split), "--json", str(out)]
    try:
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ValueError(f"evaluating {active.name} took longer than {MEASURE_TIMEOUT_S // 60} minutes") from None
    report = runs.read_json(out)
    if done.returncode != 0 or report is None:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise ValueError(f"could not evaluate {active.name}: {lines[-1] if lines else 'no output'}")
    figures = _figures(report, report.get("ece"))
    assert figures is not None
    return figures


def is_active(run: RunInfo, registry: ModelRegistry) -> bool:
    """Whether the active model is this run's export (the same model files)."""
    active = registry.active()
    export = run.path / runs.EXPORT_DIR
    return active.available and export.is_dir() and model_fingerprint(active.path) == model_fingerprint(export)


def promote_run(run: RunInfo, registry: ModelRegistry) -> ModelEntry:
    """Make a finished run's export the active model (a new model folder; earlier ones are kept)."""
    info = runs.read_run(run.path)
    if info is None or info.status != "finished":
        status = "not a run" if info is None else info.status
        raise ValueError(f"run {run.name!r} is {status}; only a finished run can be promoted")
    export_dir = info.path / runs.EXPORT_DIR
    missing = [f for f in (KERAS_FILE, TFLITE_FILE) if not (export_dir / f).is_file()]
    if missing:
        raise ValueError(
            f"run {run.name!r} has no complete export (missing {', '.join(missing)} in {export_dir}); "
            f"create it with: python -m training.export --model {info.path / runs.BEST_MODEL_FILE} --out {export_dir}"
        )
    sources = [export_dir / name for name in (KERAS_FILE, TFLITE_FILE, CALIBRATION_FILE, REPORT_FILE)]
    sources += [info.path / name for name in (runs.EVALUATION_FILE, runs.CONFUSION_FILE, runs.CONFIG_FILE)]
    record = {"run": info.name, "run_dir": str(info.path), "val_accuracy": info.state.get("val_accuracy"),
              "finished_at": info.state.get("finished_at", time.time())}
    return registry.promote([src for src in sources if src.is_file()], info.name, record,
                            renamed={runs.CONFIG_FILE: PROMOTED_TRAINING_CONFIG})
