"""Training callbacks of our own: progress log, learning-rate warm-up, status updates and graceful stop."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras


def current_lr(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class ProgressWriter(keras.callbacks.Callback):
    """Appends one JSON line per epoch and every `every_n_batches` batches to `path`.

    Each line has: kind ("batch"/"epoch"), epoch (1-based), epochs, step, steps, loss,
    accuracy, val_loss, val_accuracy (epoch lines), lr, elapsed_s, eta_s, time.
    Another process (the Training page) tails the file to draw live curves.
    """

    def __init__(self, path: Path, epochs: int, steps_per_epoch: int, every_n_batches: int = 20) -> None:
        super().__init__()
        self.path = Path(path)
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.every_n_batches = max(1, every_n_batches)
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
    """Ramps the learning rate from `target/10` to `target` over the first `warmup_steps`.

    Adam's first steps move every weight by about the learning rate, whatever its gradient: a
    freshly initialised InceptionV3 diverges easily, and a trained one (--init-from, no warm-up)
    lost 6-7 val points in its first epoch. After the warm-up, the schedule (ReduceLROnPlateau or
    CosineDecay) owns the learning rate. On resume past the warm-up it does nothing.
    """

    def __init__(self, target_lr: float, warmup_steps: int, steps_per_epoch: int) -> None:
        super().__init__(steps_per_epoch)
        self.target_lr = target_lr
        self.warmup_steps = warmup_steps

    def lr_at(self, step: int) -> float | None:
        if step > self.warmup_steps:
            return None
        if step == self.warmup_steps:
            return self.target_lr
        return self.target_lr * (0.1 + 0.9 * step / self.warmup_steps)


class CosineDecay(StepLearningRate):
    """A half cosine from `base_lr` at global step `start_step` down to `min_lr` at `end_step`.

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
        if step < self.start_step:
            return None
        span = self.end_step - self.start_step  # <= 0: a phase no longer than its warm-up
        progress = min(1.0, (step - self.start_step) / span) if span > 0 else 1.0
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


class ResumableSwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights(swap_on_epoch=True), told whether `fit` resumes from a backup.

    At each epoch end it swaps the averaged weights into the model (so ModelCheckpoint and
    BackupAndRestore save them) and at the next epoch start swaps the raw ones back. A backup is
    therefore always in the swapped state; Keras' callback starts out assuming it is not and
    would go on training the average. Validation (on_test_begin/end) uses the average either way.
    """

    def __init__(self, restored_from_backup: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = restored_from_backup


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
        from training.model import recalibrate_batch_norm

        recalibrate_batch_norm(self.model, self.faces, self.batch_size)


class StatusUpdater(keras.callbacks.Callback):
    """Keeps the run's status.json epoch and val accuracy current."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from training import runs

        logs = logs or {}
        runs.update_status(
            self.run_dir, "running", epoch=epoch + 1, val_accuracy=_num(logs, "val_accuracy")
        )


class TrainingStopped(Exception):
    """Raised out of `fit` when a stop was requested: see StopOnRequest."""


class StopOnRequest(keras.callbacks.Callback):
    """Ends `fit` at the next batch boundary once `requested()` is true, by raising TrainingStopped.

    Why raise instead of `model.stop_training = True`: Keras would then still validate, call
    on_epoch_end for the half-done epoch (BackupAndRestore would record it as complete, CSVLogger
    would log it) and on_train_end (BackupAndRestore would delete the backup), so --resume
    would skip the rest of that epoch or start over. Raising leaves the last complete epoch's
    backup and logs exactly as a crash would, which --resume handles.
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
