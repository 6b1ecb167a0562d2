"""Promoting a finished run's model: the registry's atomic swap (fer_core.registry), which keeps every earlier model."""

from __future__ import annotations

import time

from fer_core.calibration import CALIBRATION_FILE
from fer_core.model_io import KERAS_FILE, TFLITE_FILE
from fer_core.registry import ModelEntry, ModelRegistry
from training import runs
from training.export import REPORT_FILE
from training.runs import RunInfo

PROMOTED_TRAINING_CONFIG = "training_config.json"


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
