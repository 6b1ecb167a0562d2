"""The training recipe: fit a run's model as its TrainConfig says, resumably, then evaluate, export and calibrate.

- A fully pretrained base (ImageNet) trains its head first, then its top blocks at lr/10 (FINE_TUNE_LR_FACTOR);
  a partly pretrained base trains as a whole, its pretrained blocks at pretrained_lr_factor x the rate;
  from scratch everything trains, with a short learning-rate warm-up.
- Adam, Keras augmentation layers on training batches, optional class weights and label smoothing;
  ReduceLROnPlateau (or a cosine decay over the run's epochs), ModelCheckpoint (best val accuracy),
  EarlyStopping, CSVLogger, an epoch backup and a JSON-lines progress log;
- optionally a moving average of the weights (ema), which is what gets validated, checkpointed and exported;
- before each validation, BatchNorm statistics re-estimated on clean training faces (precise_bn).

Resuming: each fit phase keeps a backup of its last completed epoch (callbacks.EpochBackup); the
fit goes on after it (the unfinished epoch's log lines are dropped and it is redone). EarlyStopping
and ReduceLROnPlateau counters restart; the learning rate and the best val accuracy carry over.
The status says which phase the run is in (runs.PHASES), for the Training page.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import runs
from training.config import TrainConfig
from training.pretrained import IMAGENET_SOURCE, LAST_BLOCK, BaseWeights, WeightsFileError, describe_file
from training.schedules import MIN_LR, REDUCE_LR_FACTOR, REDUCE_LR_PATIENCE, WARMUP_EPOCHS

log = logging.getLogger("training")

FINE_TUNE_LR_FACTOR = 0.1
EARLY_STOP_PATIENCE = 8
PROGRESS_EVERY_N_BATCHES = 20
HEAD_WEIGHTS_FILE = "head_done.weights.h5"
TRAINED = "trained"  # phases_done marker: fitting is over, only evaluation/export remain


class RunSetupError(RuntimeError):
    """The run cannot start as configured (its base weights or init_from model do not fit); the message says why."""


def set_phase(run_dir: Path, phase: str, **fields: Any) -> None:
    """Say what the run is doing now (runs.PHASES) in its status."""
    log.info("phase: %s", phase)
    runs.update_status(run_dir, "running", phase=phase, **fields)


def data_seed(run_dir: Path, seed: int) -> int:
    """The seed for shuffling and augmentation: a resumed run goes on with fresh epochs, not its first ones again."""
    return seed + runs.completed_epochs(run_dir)


def base_weights_of(config: TrainConfig) -> BaseWeights | None:
    """The run's base weights: its described file, Keras' ImageNet file, or None (from scratch)."""
    from training.model import resolve_imagenet_weights

    if config.base_weights is not None:
        return config.base_weights
    weights = resolve_imagenet_weights(config.weights)  # "imagenet": the cache, else a download
    if weights is None:
        return None
    if config.weights.lower() == "imagenet":
        return BaseWeights(weights, LAST_BLOCK, IMAGENET_SOURCE)
    return describe_file(weights)  # a run from before base_weights was recorded


@dataclass
class _Phase:
    """One call of fit: its name (and backup folder), first and end epoch, base rate and whether it warms up."""

    name: str
    first_epoch: int
    end_epoch: int
    lr: float
    warmup: bool


class Trainer:
    """Fits one run's model. `stop_requested` is polled between batches (the Training page's Stop)."""

    def __init__(self, run_dir: Path, config: TrainConfig, stop_requested: Callable[[], bool]) -> None:
        self.run_dir = run_dir
        self.config = config
        self.stop_requested = stop_requested

    def train(self) -> bool:
        """Train to the end (True) or until a stop was requested (False)."""
        import keras

        from training.callbacks import TrainingStopped

        keras.utils.set_random_seed(data_seed(self.run_dir, self.config.seed))
        # The model first: a weights file that does not fit fails before the data loads.
        set_phase(self.run_dir, "building the model")
        self.model, base = self._build_model()
        set_phase(self.run_dir, "loading data")
        self._load_data()
        set_phase(self.run_dir, "training")
        fully_pretrained = base is not None and not base.partial
        state = runs.read_json(self.run_dir / runs.STATUS_FILE) or {}
        phases_done: list[str] = list(state.get("phases_done", []))
        epochs, lr = self.config.epochs, self.config.lr
        try:
            if fully_pretrained:
                head_epochs = min(self.config.head_epochs, epochs)
                head_weights = self.run_dir / runs.BACKUP_DIR / HEAD_WEIGHTS_FILE
                if "head" not in phases_done:
                    self._freeze_base()
                    self._fit(_Phase("head", 0, head_epochs, lr, warmup=False))
                    self.model.save_weights(head_weights)
                    phases_done.append("head")
                    runs.update_status(self.run_dir, "running", phases_done=phases_done)
                else:
                    self.model.load_weights(head_weights)
                self._unfreeze_top()
                fine_tune_lr = lr * FINE_TUNE_LR_FACTOR
                self._fit(_Phase("finetune", head_epochs, epochs, fine_tune_lr, warmup=False))
            else:
                self._unfreeze_all()
                self._fit(_Phase("all", 0, epochs, lr, warmup=True))
        except TrainingStopped:
            return False
        return True

    # --- setting up -----------------------------------------------------------------------------------

    def _build_model(self) -> tuple[Any, BaseWeights | None]:
        from fer_core.model_io import load_keras_model
        from training import model as model_lib

        config = self.config
        self.rate_multipliers: dict[str, float] | None = None
        if config.init_from is not None:
            init = load_keras_model(config.init_from)
            model = model_lib.build_model(config.image_size, None, config.dropout)
            try:
                model.set_weights(init.get_weights())
            except ValueError as exc:
                raise RunSetupError(
                    f"the init_from model does not match image size {config.image_size}: {exc}") from exc
            log.info("initialised from %s", config.init_from)
            return model, None
        try:
            base = base_weights_of(config)
            model = model_lib.build_model(config.image_size, base.path if base else None, config.dropout,
                                          partly_pretrained=bool(base and base.partial))
        except WeightsFileError as exc:
            raise RunSetupError(str(exc)) from None
        log.info("base weights: %s", base.describe() if base else "none (training from scratch)")
        runs.update_status(self.run_dir, "running", weights_used=base.path if base else "none")
        if base is not None and base.partial and config.pretrained_lr_factor != 1.0:
            self.rate_multipliers = model_lib.pretrained_rate_multipliers(
                model, base.pretrained_through, config.pretrained_lr_factor)
            log.info("partly pretrained base: %d variables of the stem to %s learn at %g x the learning rate",
                     len(self.rate_multipliers), base.pretrained_through, config.pretrained_lr_factor)
        return model, base

    def _load_data(self) -> None:
        from training import data as data_lib
        from training.distill import distillation_targets

        config = self.config
        t0 = time.monotonic()
        train_data = data_lib.load_split(config.data, config.train_split, skip_corrupt=config.skip_corrupt)
        val_data = data_lib.load_split(config.data, config.val_split, skip_corrupt=config.skip_corrupt,
                                       require_all_classes=False)
        if config.limit:
            keep = np.random.default_rng(config.seed).permutation(len(train_data))[: config.limit]
            train_data = data_lib.SplitData(train_data.images[keep], train_data.labels[keep],
                                            train_data.classes_present)
        log.info("data: %d train / %d val images (%.1fs); train counts %s",
                 len(train_data), len(val_data), time.monotonic() - t0, train_data.class_counts())
        targets = distillation_targets(self.run_dir, config, train_data) if config.distill_from else None
        self.train_ds = data_lib.make_dataset(
            train_data, config.batch_size, training=True, augment=config.augment, erasing=config.erasing,
            mixup=config.mixup, targets=targets, seed=data_seed(self.run_dir, config.seed),
        )
        self.val_ds = data_lib.make_dataset(val_data, config.batch_size, training=False)
        self.steps = int(np.ceil(len(train_data) / config.batch_size))
        precise_bn_images = min(config.precise_bn, len(train_data))
        self.precise_bn_faces = None
        if precise_bn_images:
            pick = np.random.default_rng(config.seed).permutation(len(train_data))[:precise_bn_images]
            self.precise_bn_faces = train_data.images[pick][..., None].astype(np.float32)
            log.info("BatchNorm statistics re-estimated on %d clean training faces before each validation",
                     precise_bn_images)
        self.class_weight = data_lib.balanced_class_weights(train_data.labels) if config.class_weights else None

    def _freeze_base(self) -> None:
        from training.model import freeze_base

        freeze_base(self.model)

    def _unfreeze_top(self) -> None:
        from training.model import unfreeze

        unfreeze(self.model)

    def _unfreeze_all(self) -> None:
        from training.model import unfreeze_all

        unfreeze_all(self.model)

    def _compile(self, lr: float) -> None:
        import keras

        from training.model import make_optimizer

        config = self.config
        optimizer = make_optimizer(lr, config.adam_epsilon, config.ema, config.weight_decay, self.rate_multipliers)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        self.model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])

    # --- fitting ----------------------------------------------------------------------------------------

    def _fit(self, phase: _Phase) -> None:
        """One fit call, resumed after its backup's last epoch if it has one; its backup goes when it ends."""
        from training.callbacks import restore_backup

        backup_dir = self.run_dir / runs.BACKUP_DIR / phase.name
        self._compile(phase.lr)
        restored = restore_backup(self.model, backup_dir, averaged=self.config.ema > 0)
        first = max(phase.first_epoch, restored or 0)
        runs.trim_logs_to_epoch(self.run_dir, first)  # drop what the backup does not hold: it is redone
        if first > phase.first_epoch:
            log.info("phase %s: resuming after epoch %d of %d", phase.name, first, self.config.epochs)
            runs.update_status(self.run_dir, "running", resumed_from_epoch=first)
        callbacks = self._callbacks(phase, backup_dir)
        try:
            self.model.fit(self.train_ds, validation_data=self.val_ds, initial_epoch=first, epochs=phase.end_epoch,
                           class_weight=self.class_weight, callbacks=callbacks, shuffle=False,  # the data set shuffles
                           verbose=1 if sys.stderr.isatty() else 2)
        finally:
            for callback in callbacks:  # CSVLogger only closes its file in on_train_end, which a stop skips
                handle = getattr(callback, "csv_file", None)
                if handle is not None and not handle.closed:
                    handle.close()
        shutil.rmtree(backup_dir, ignore_errors=True)  # the phase is done; a resume starts after it

    def _callbacks(self, phase: _Phase, backup_dir: Path) -> list[Any]:
        import keras

        from training.callbacks import EpochBackup, PreciseBatchNorm, ProgressWriter, StatusUpdater, StopOnRequest

        # Order matters: logs are written before the backup, so a kill between the two can only
        # leave an extra logged epoch (trimmed on resume), never a backed-up epoch missing from
        # the logs; ReduceLROnPlateau runs before the backup so the backup holds the reduced rate.
        run_dir = self.run_dir
        callbacks: list[Any] = [StopOnRequest(self.stop_requested)]
        if self.config.ema:  # before ModelCheckpoint: the checkpoint and the backup hold the averaged weights
            callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        if self.precise_bn_faces is not None:  # before ModelCheckpoint, after the EMA swap
            callbacks.append(PreciseBatchNorm(self.precise_bn_faces))
        warmup_steps = WARMUP_EPOCHS * self.steps
        if phase.warmup:
            from training.callbacks import LinearWarmup

            callbacks.append(LinearWarmup(phase.lr, warmup_steps, self.steps))
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                str(run_dir / runs.BEST_MODEL_FILE), monitor="val_accuracy", mode="max", save_best_only=True,
                initial_value_threshold=runs.best_logged(run_dir, "val_accuracy"),  # resume: keep a better best
            ),
            self._schedule(phase, warmup_steps),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=EARLY_STOP_PATIENCE, restore_best_weights=False
            ),
            keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY_FILE), append=True),
            ProgressWriter(run_dir / runs.PROGRESS_FILE, self.config.epochs, self.steps, PROGRESS_EVERY_N_BATCHES),
            StatusUpdater(run_dir),
            EpochBackup(backup_dir),
        ]
        return callbacks

    def _schedule(self, phase: _Phase, warmup_steps: int) -> Any:
        import keras

        from training.callbacks import CosineDecay

        if self.config.lr_schedule == "cosine":
            start = phase.first_epoch * self.steps + (warmup_steps if phase.warmup else 0)
            return CosineDecay(phase.lr, MIN_LR, start, phase.end_epoch * self.steps, self.steps)
        return keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=REDUCE_LR_FACTOR,
            patience=REDUCE_LR_PATIENCE, min_lr=MIN_LR, verbose=1,
        )


def finish(run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """Evaluate the best model on val, export it (.keras, .h5, int8 LiteRT) and calibrate the export."""
    from training.calibrate import calibrate_model
    from training.evaluate import evaluate_model_file
    from training.export import export_model

    best = run_dir / runs.BEST_MODEL_FILE
    data, split = config.data, config.val_split
    set_phase(run_dir, "evaluating")
    report = evaluate_model_file(best, data, split, out_dir=run_dir, skip_corrupt=config.skip_corrupt)
    set_phase(run_dir, "exporting")
    export = export_model(best, run_dir / runs.EXPORT_DIR, data=data, split=split, skip_corrupt=config.skip_corrupt)
    set_phase(run_dir, "calibrating")
    calibration = calibrate_model(run_dir / runs.EXPORT_DIR, data, split, skip_corrupt=config.skip_corrupt)
    summary_keys = ("files", "keras_accuracy", "tflite_accuracy", "accuracy_difference")
    return {
        "val_accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "export": {key: export.get(key) for key in summary_keys},
        "calibration": {key: calibration[key] for key in ("temperature", "ece_before", "ece_after")},
    }
