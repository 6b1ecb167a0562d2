"""Training callbacks of our own: progress log, learning-rate schedules, epoch backups, status updates
and graceful stop."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from training import runs
from training.model import recalibrate_batch_norm
from training.schedules import cosine_lr, warmup_lr

log = logging.getLogger(__name__)


def current_lr(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class ProgressWriter(keras.callbacks.Callback):
    """Appends one JSON line per epoch and every few batches (runs.progress_interval) to `path`.

    Each line has: kind ("batch"/"epoch"), epoch (1-based), epochs, step, steps, loss,
    accuracy, val_loss, val_accuracy (epoch lines), lr, elapsed_s, eta_s, time.
    Another process (the Training page) tails the file to draw live curves.
    """

    def __init__(self, path: Path, epochs: int, steps_per_epoch: int, every_n_batches: int = 20) -> None:
        super().__init__()
        self.path = Path(path)
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.every_n_batches = runs.progress_interval(self.steps_per_epoch, max(1, every_n_batches))
        self._start = 0.0
        self._steps_done = 0
        self._epoch = 0

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _timing(self, step_in_epoch: int) -> tuple[float, float | None]:
        elapsed = time.monotonic() - self._start
        remaining = (self.epochs - self._epoch) * self.steps_per_epoch - step_in_epoch
        eta = elapsed / self._steps_done * max(0, remaining) if self._steps_done else None
        return elapsed, eta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.monotonic()
        self._steps_done = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps_done += 1
        step = batch + 1
        if step % self.every_n_batches and step != self.steps_per_epoch:
            return
        elapsed, eta = self._timing(step)
        self._write(
            {
                "kind": "batch",
                "epoch": self._epoch + 1,
                "epochs": self.epochs,
                "step": step,
                "steps": self.steps_per_epoch,
                "loss": _num(logs, "loss"),
                "accuracy": _num(logs, "accuracy"),
                "lr": current_lr(self.model),
                "elapsed_s": round(elapsed, 2),
                "eta_s": None if eta is None else round(eta, 1),
                "time": time.time(),
            }
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        elapsed, _ = self._timing(self.steps_per_epoch)
        remaining_epochs = self.epochs - (epoch + 1)
        per_step = elapsed / self._steps_done if self._steps_done else None
        eta = None if per_step is None else per_step * remaining_epochs * self.steps_per_epoch
        self._write(
            {
                "kind": "epoch",
                "epoch": epoch + 1,
                "epochs": self.epochs,
                "step": self.steps_per_epoch,
                "steps": self.steps_per_epoch,
                "loss": _num(logs, "loss"),
                "accuracy": _num(logs, "accuracy"),
                "val_loss": _num(logs, "val_loss"),
                "val_accuracy": _num(logs, "val_accuracy"),
                "lr": current_lr(self.model),
                "elapsed_s": round(elapsed, 2),
                "eta_s": None if eta is None else round(eta, 1),
                "time": time.time(),
            }
        )


def _num(logs: dict | None, key: str) -> float | None:
    if not logs or key not in logs:
        return None
    return float(logs[key])


class StepLearningRate(keras.callbacks.Callback):
    """Base for schedules that set the learning rate before each batch from the global step alone.

    A function of the step, not of what came before, so a resumed run goes on exactly where it stopped.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0

    def lr_at(self, step: int) -> float | None:
        """The rate for global step `step`, or None to leave the current rate alone."""
        raise NotImplementedError

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        lr = self.lr_at(self._epoch * self.steps_per_epoch + batch)
        if lr is not None:
            self.model.optimizer.learning_rate.assign(lr)


class LinearWarmup(StepLearningRate):
    """Ramps the learning rate from `target/10` to `target` over the first `warmup_steps` (schedules.warmup_lr).

    After the warm-up the schedule (ReduceLROnPlateau or CosineDecay) owns the learning rate; on resume
    past the warm-up this does nothing.
    """

    def __init__(self, target_lr: float, warmup_steps: int, steps_per_epoch: int) -> None:
        super().__init__(steps_per_epoch)
        self.target_lr = target_lr
        self.warmup_steps = warmup_steps

    def lr_at(self, step: int) -> float | None:
        return warmup_lr(step, self.target_lr, self.warmup_steps)


class CosineDecay(StepLearningRate):
    """A half cosine from `base_lr` at global step `start_step` down to `min_lr` at `end_step` (schedules.cosine_lr).

    `start_step` is the end of any warm-up, which owns the steps before it; `end_step` is the end
    of the phase's last epoch.
    """

    def __init__(self, base_lr: float, min_lr: float, start_step: int, end_step: int, steps_per_epoch: int) -> None:
        super().__init__(steps_per_epoch)
        self.base_lr = base_lr
        self.min_lr = min_lr
        self.start_step = start_step
        self.end_step = end_step

    def lr_at(self, step: int) -> float | None:
        return cosine_lr(step, self.base_lr, self.min_lr, self.start_step, self.end_step)


def swap_average_and_weights(model: keras.Model) -> None:
    """Exchange the model's weights with the optimizer's moving average of them (use_ema), once.

    An EMA run's backups and checkpoints hold the average in the model and the raw weights in the
    optimizer (keras.callbacks.SwapEMAWeights(swap_on_epoch=True) swaps at each epoch end, before they
    are saved). A run resumed from a backup swaps once before training goes on from the raw weights.
    """
    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    swap.on_test_begin()  # the callback's public hook that swaps the average in


class EpochBackup(keras.callbacks.Callback):
    """After each epoch, saves the model with its optimizer state and the number of epochs done, for resuming.

    The weights go to a new file first; the metadata naming it is then replaced atomically, and only
    then are older files removed: a kill at any moment leaves a complete backup of the last epoch
    or of the one before. `restore_backup` reads it (and the backups Keras' BackupAndRestore made).
    """

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self.backup_dir = Path(backup_dir)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        self.model.save_weights(self.backup_dir / name, overwrite=True)
        runs.write_json_atomic(self.backup_dir / runs.BACKUP_METADATA,
                               {"epoch": epoch + 1, "batch": 0, "weights_file": name})
        for stale in [*self.backup_dir.glob("*.weights.h5*"), *self.backup_dir.glob("*.json.bkp")]:
            if stale.name != name:
                stale.unlink(missing_ok=True)


def restore_backup(model: keras.Model, backup_dir: Path, *, averaged: bool) -> int | None:
    """Load a phase's last backup into `model` (compiled) and return the epochs it had done, or None.

    `averaged`: the run keeps a moving average of its weights (see swap_average_and_weights).
    """
    epoch = runs.backup_epoch(backup_dir)
    weights = runs.backup_weights_file(backup_dir)
    if epoch is None or weights is None:
        return None
    model.optimizer.build(model.trainable_variables)  # the file holds the optimizer's state too
    try:
        model.load_weights(weights)
    except (OSError, ValueError) as exc:
        # Keras' BackupAndRestore(double_checkpoint=True) kept the epoch before as *.bkp.
        previous = weights.with_name(weights.name + ".bkp")
        meta = runs.read_json(backup_dir / (runs.BACKUP_METADATA + ".bkp"))
        if not previous.is_file() or meta is None:
            raise
        log.warning("backup %s is unreadable (%s); using the one before it", weights, exc)
        model.load_weights(previous)
        epoch = int(meta["epoch"])
    if averaged:
        swap_average_and_weights(model)
    return epoch


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each validation, re-estimates BatchNorm statistics on clean training faces.

    So validation, ModelCheckpoint and the exported model use statistics that fit the weights
    being validated (with --ema: the average, so this callback must come after the EMA swap).
    Training itself is unaffected: in training mode BatchNorm uses each batch's own statistics.
    """

    def __init__(self, faces: Any, batch_size: int = 128) -> None:
        super().__init__()
        self.faces = faces
        self.batch_size = batch_size

    def on_test_begin(self, logs: dict | None = None) -> None:
        recalibrate_batch_norm(self.model, self.faces, self.batch_size)


class StatusUpdater(keras.callbacks.Callback):
    """Keeps the run's status.json epoch and val accuracy current."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        runs.update_status(
            self.run_dir, "running", epoch=epoch + 1, val_accuracy=_num(logs, "val_accuracy")
        )


class TrainingStopped(Exception):
    """Raised out of `fit` when a stop was requested: see StopOnRequest."""


class StopOnRequest(keras.callbacks.Callback):
    """Ends `fit` at the next batch boundary once `requested()` is true, by raising TrainingStopped.

    Why raise instead of `model.stop_training = True`: Keras would then still validate and call
    on_epoch_end for the half-done epoch (EpochBackup would record it as complete, CSVLogger would
    log it), so a resume would skip the rest of that epoch. Raising leaves the last complete epoch's
    backup and logs exactly as a crash would, which a resume handles.
    """

    def __init__(self, requested: Callable[[], bool]) -> None:
        super().__init__()
        self.requested = requested

    def _check(self) -> None:
        if self.requested():
            raise TrainingStopped()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._check()  # a Stop that came while the data loaded or the model was built

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._check()
