"""Distillation targets: each training face's label mixed with a teacher model's prediction.

The teacher may be one model (self-distillation from the shipped model, say) or the mean of several
(an ensemble teacher: `distill_from` plus `distill_also`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from fer_core.emotions import NUM_EMOTIONS
from training import inference, runs
from training.config import TrainConfig
from training.data import SplitData

log = logging.getLogger(__name__)


class TeacherTargetsError(RuntimeError):
    """The kept teacher predictions do not fit the training faces any more."""


def distillation_targets(run_dir: Path, config: TrainConfig, train_data: SplitData) -> np.ndarray:
    """(n, 7) training targets: each face's one-hot label and the teacher's prediction, mixed by distill_weight.

    FER2013's labels are noisy (about 65% human agreement): the teacher's soft prediction says how much
    a face also looks like the other classes, where a one-hot label says it is one class only. The teacher
    averages each clean face with its mirror image (flip averaging), then its stored temperature applies;
    several teachers' calibrated predictions are averaged.
    The predictions are kept in the run folder, so a resume trains towards the same targets even when
    the teacher file has been replaced since (a publish over models/, say).
    """
    if config.distill_from is None:
        raise ValueError("the run has no teacher (distill_from)")
    path = run_dir / runs.TEACHER_TARGETS_FILE
    shape = (len(train_data), NUM_EMOTIONS)
    if path.is_file():
        teacher = np.load(path)
        if teacher.shape != shape:
            raise TeacherTargetsError(f"{path} holds {teacher.shape} teacher predictions for {shape[0]} training "
                                      "faces; the data set has changed since this run started")
        log.info("distillation: teacher predictions read from %s", path)
    else:
        teacher = np.mean([_predictions(model, train_data) for model in (config.distill_from, *config.distill_also)],
                          axis=0)
        if config.distill_also:
            log.info("distillation: the ensemble of %d teachers agrees with %.1f%% of the training labels",
                     1 + len(config.distill_also), 100 * float((teacher.argmax(1) == train_data.labels).mean()))
        partial = path.with_suffix(".partial.npy")
        np.save(partial, teacher.astype(np.float32))
        os.replace(partial, path)
    weight = config.distill_weight
    onehot = np.eye(NUM_EMOTIONS, dtype=np.float32)[train_data.labels]
    return ((1.0 - weight) * onehot + weight * teacher).astype(np.float32)


def _predictions(model: Path, train_data: SplitData) -> np.ndarray:
    """One teacher's calibrated, flip-averaged predictions on the clean training faces."""
    t0 = time.monotonic()
    predictions = inference.predict(inference.load_predictor(model, "keras", flip_average=True), train_data.images)
    log.info("distillation: teacher %s agrees with %.1f%% of the %d training labels (%.0fs)",
             model, 100 * float((predictions.argmax(1) == train_data.labels).mean()), len(train_data),
             time.monotonic() - t0)
    return predictions
