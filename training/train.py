"""Train ClassMood's emotion model (InceptionV3 transfer learning on FER2013).

    python -m training.train --data ../shared/datasets/fer2013 --epochs 40 --run-name base
    python -m training.train --resume data/runs/base            # continue a killed run
    python -m training.train --data DIR --init-from models/fer-inceptionv3 --lr 1e-4   # fine-tune

Every run lives in its own directory (see training.runs). The recipe:
- ImageNet weights when they can be had: train the head, then unfreeze the top blocks at lr/10;
- otherwise from scratch: everything trains, with a short learning-rate warm-up;
- Adam, Keras augmentation layers on training batches, optional class weights and label smoothing;
- ReduceLROnPlateau (or, with --lr-schedule cosine, a cosine decay over the run's epochs),
  ModelCheckpoint (best val accuracy), EarlyStopping, CSVLogger,
  BackupAndRestore and a JSON-lines progress log;
- optionally (--ema) an exponential moving average of the weights, which is what gets validated,
  checkpointed and exported;
- before each validation, BatchNorm statistics re-estimated on clean training faces (--precise-bn).

Stopping and resuming: SIGTERM/SIGINT (the Training page's Stop) ends the run after the current
batch with status "stopped"; a killed run reads as "interrupted". Either way the backup of the
last completed epoch is kept, and --resume continues after that epoch (the unfinished epoch's
log lines are dropped and it is redone). EarlyStopping and ReduceLROnPlateau counters restart
on resume; the learning rate itself and the best val accuracy so far carry over.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training import runs
from training.data import AUGMENT_LEVELS, DatasetError
from training.pretrained import BLOCKS, IMAGENET_SOURCE, LAST_BLOCK, BaseWeights, WeightsFileError, describe_file

log = logging.getLogger("training")

DEFAULT_EPOCHS = 40
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-3
DEFAULT_HEAD_EPOCHS = 3
FINE_TUNE_LR_FACTOR = 0.1
WARMUP_EPOCHS = 1
# Keras' default. Its docs suggest 0.1-1.0 for Inception on ImageNet: a larger epsilon damps the
# occasional huge Adam step on weights whose gradient history is near zero.
DEFAULT_ADAM_EPSILON = 1e-7
# Off by default, as in Keras. 0.999 averages over ~1000 steps (about 2 epochs of FER2013 at batch 64).
DEFAULT_EMA_MOMENTUM = 0.0
# Clean training faces the BatchNorm statistics are re-estimated on before each validation (about
# 25 s on the 2-core machine). On the 60.2% model this alone gave +2.1 val points: the moving statistics
# had followed the last ~10 strongly augmented batches.
DEFAULT_PRECISE_BN_IMAGES = 8192
# Off by default, as in Keras' Adam. Decoupled (AdamW-style): each step shrinks a weight by lr x decay.
DEFAULT_WEIGHT_DECAY = 0.0
# Not decayed: BatchNorm scales and offsets and biases (shrinking them only fights the normalisation).
NO_DECAY_VARIABLES = ("gamma", "beta", "bias")
REDUCE_LR_FACTOR = 0.5
REDUCE_LR_PATIENCE = 2
MIN_LR = 1e-6  # ReduceLROnPlateau's floor, and where the cosine schedule ends
# plateau: halve the rate when val accuracy stalls (the classic recipe; a run's length can be open).
# cosine: decay to MIN_LR by the last epoch, for a run whose epochs fit the time there is.
LR_SCHEDULES = ("plateau", "cosine")
EARLY_STOP_PATIENCE = 8
# With --distill-from: the teacher's share of each training target (the label keeps the rest).
DEFAULT_DISTILL_WEIGHT = 0.5
# The teacher's predictions on the training faces, kept so a resume trains towards the same targets
# even when the teacher file has been replaced since (a publish over models/, say).
TEACHER_TARGETS_FILE = "teacher_targets.npy"
# A partly pretrained base: its pretrained blocks learn at this share of the rate of the random ones.
# Measured on the shared mixed5 file (75 px, 8,000 faces, lr 1e-3 cosine, 3 epochs): factor 1.0 reached 50.2% on
# val, 0.3 48.9%, and 0.1 trailed both after 2 epochs (46.3% against 48.9% and 47.5%); so all blocks learn alike.
DEFAULT_PRETRAINED_LR_FACTOR = 1.0
PROGRESS_EVERY_N_BATCHES = 20
BACKUP_DIR = "backup"
TRAINED = "trained"  # phases_done marker: fitting is over, only evaluation/export remain


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train, fine-tune or resume ClassMood's InceptionV3 emotion model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, help="data set: a folder with train/ and val/ class folders, or fer2013.csv"
    )
    # default None so --resume can tell "not given" (keep the run's total) from an explicit value.
    parser.add_argument(
        "--epochs", type=int, default=None,
        help=f"total epochs (default {DEFAULT_EPOCHS}; with --resume: the new total, default the run's own)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per training step")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="plateau",
                        help="plateau: halve the rate when val accuracy stalls for "
                             f"{REDUCE_LR_PATIENCE} epochs; cosine: decay it to {MIN_LR:g} by the last epoch "
                             "(a resume with a new --epochs stretches the curve)")
    parser.add_argument("--adam-epsilon", type=float, default=DEFAULT_ADAM_EPSILON,
                        help="Adam epsilon (larger = steadier, smaller steps)")
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY, metavar="DECAY",
                        help="decoupled weight decay: each step shrinks the weights (not BatchNorm or biases) "
                             "by learning rate x DECAY, e.g. 0.05 (0: off)")
    parser.add_argument("--ema", type=float, default=DEFAULT_EMA_MOMENTUM, metavar="MOMENTUM",
                        help="validate, checkpoint and export a moving average of the weights with this "
                             "momentum, e.g. 0.999 (0: off)")
    parser.add_argument("--precise-bn", type=int, default=DEFAULT_PRECISE_BN_IMAGES, metavar="N",
                        help="re-estimate BatchNorm statistics on N clean training faces before each "
                             "validation (0: off)")
    parser.add_argument("--image-size", type=int, default=75, help="InceptionV3 input side in pixels (>= 75)")
    parser.add_argument("--run-name", help="name of the run directory (default: run-<timestamp>)")
    parser.add_argument("--runs-dir", type=Path, help="where run directories go (default: <data_dir>/runs)")
    parser.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last epoch"
    )
    parser.add_argument("--init-from", type=Path, metavar="MODEL", help="start from this model's weights (fine-tuning)")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="base weights: 'imagenet' (Keras cache, else download), 'none' (from scratch), or a .h5 path",
    )
    parser.add_argument("--pretrained-through", choices=BLOCKS, metavar="BLOCK",
                        help="with a --weights file: the last pretrained InceptionV3 block (mixed0 ... mixed10); the "
                             "blocks above it are random. Default: from a <file>.json sidecar, else known files "
                             "by their SHA-256, else the whole base")
    parser.add_argument("--pretrained-lr-factor", type=float, default=DEFAULT_PRETRAINED_LR_FACTOR, metavar="F",
                        help="partly pretrained base: the pretrained blocks learn at F x the learning rate of the "
                             "random blocks and the head, in (0, 1]")
    parser.add_argument("--augment", choices=AUGMENT_LEVELS, default="standard", help="augmentation strength")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing in [0, 0.3]")
    parser.add_argument("--erasing", type=float, default=0.0, metavar="P",
                        help="chance that a training face also gets a random patch of noise "
                             "(random erasing), e.g. 0.5 (0: off)")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                        help="blend training faces and labels in pairs, weights from Beta(ALPHA, ALPHA), "
                             "e.g. 0.2 (0: off)")
    parser.add_argument("--distill-from", type=Path, metavar="MODEL",
                        help="self-distillation: train towards this model's predictions (calibrated, averaged "
                             "with the mirror image) on the clean training faces, mixed with the labels; "
                             "it may be the --init-from model")
    parser.add_argument("--distill-weight", type=float, default=DEFAULT_DISTILL_WEIGHT, metavar="W",
                        help="with --distill-from: the teacher's share of each training target, in (0, 1]")
    parser.add_argument("--class-weights", action="store_true", help="weight classes by inverse frequency (capped)")
    parser.add_argument("--dropout", type=float, default=0.4, help="dropout before the softmax head")
    parser.add_argument("--head-epochs", type=int, default=DEFAULT_HEAD_EPOCHS, help="head-only epochs (pretrained)")
    parser.add_argument("--train-split", default="train", help="split to fit on")
    parser.add_argument("--val-split", default="val", help="split to choose on")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images with a warning")
    parser.add_argument("--limit", type=int, default=0, help="use at most N training images (smoke tests)")
    parser.add_argument("--no-export", action="store_true", help="skip evaluation and export at the end")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: a new one for each run, recorded in its config.json)")
    return parser


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.data is None:
        raise SystemExit("error: --data is required (or --resume RUN_DIR)")
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.adam_epsilon <= 0:
        raise SystemExit("error: --epochs, --batch-size, --lr and --adam-epsilon must be positive")
    if not 0.0 <= args.label_smoothing <= 0.3:
        raise SystemExit("error: --label-smoothing must be between 0 and 0.3")
    if not 0.0 <= args.erasing <= 1.0:
        raise SystemExit("error: --erasing must be a probability between 0 (off) and 1")
    if not 0.0 <= args.mixup <= 1.0:
        raise SystemExit("error: --mixup must be between 0 (off) and 1")
    if not 0.0 <= args.weight_decay <= 1.0:
        raise SystemExit("error: --weight-decay must be between 0 (off) and 1")
    if args.precise_bn < 0:
        raise SystemExit("error: --precise-bn must be 0 (off) or a number of training images")
    if not 0.0 <= args.ema < 1.0:
        raise SystemExit("error: --ema must be in [0, 1): 0 turns it off, 0.999 averages over ~1000 steps")
    if args.image_size < 75:
        raise SystemExit("error: --image-size must be at least 75 (InceptionV3's minimum)")
    if not 0.0 < args.distill_weight <= 1.0:
        raise SystemExit("error: --distill-weight must be in (0, 1]: the teacher's share of each target")
    if not 0.0 < args.pretrained_lr_factor <= 1.0:
        raise SystemExit("error: --pretrained-lr-factor must be in (0, 1]: the pretrained blocks' share of the rate")
    base_weights = None
    if not args.init_from and str(args.weights).lower() not in ("none", "scratch", "", "imagenet"):
        try:  # a missing or unknown file fails here, not after the data has loaded
            base_weights = describe_file(args.weights, args.pretrained_through)
        except WeightsFileError as exc:
            raise SystemExit(f"error: {exc}") from None
    elif args.pretrained_through and args.pretrained_through != LAST_BLOCK:
        raise SystemExit("error: --pretrained-through applies to a --weights file only")
    distill_from = None
    if args.distill_from:
        from fer_core.model_io import KERAS_FILE, ModelError, resolve_model_file

        try:  # a missing teacher fails here, not after the data has loaded
            distill_from = str(resolve_model_file(args.distill_from, KERAS_FILE).resolve())
        except ModelError as exc:
            raise SystemExit(f"error: --distill-from: {exc}") from None
    return {
        "data": str(Path(args.data).expanduser().resolve()),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "adam_epsilon": args.adam_epsilon,
        "weight_decay": args.weight_decay,
        "ema": args.ema,
        "precise_bn": args.precise_bn,
        "image_size": args.image_size,
        "init_from": str(Path(args.init_from).resolve()) if args.init_from else None,
        "weights": base_weights.path if base_weights else args.weights,
        # What the base holds (None: from scratch, Keras' ImageNet file, or --init-from); its card names it.
        "base_weights": asdict(base_weights) if base_weights else None,
        "pretrained_lr_factor": args.pretrained_lr_factor,
        "augment": args.augment,
        "label_smoothing": args.label_smoothing,
        "erasing": args.erasing,
        "mixup": args.mixup,
        "class_weights": args.class_weights,
        "distill_from": distill_from,
        "distill_weight": args.distill_weight if distill_from else 0.0,
        "dropout": args.dropout,
        "head_epochs": args.head_epochs,
        "train_split": args.train_split,
        "val_split": args.val_split,
        "skip_corrupt": args.skip_corrupt,
        "limit": args.limit,
        "export": not args.no_export,
        # A fixed default made every run (and every --init-from stage) replay the same shuffles and
        # augmentations epoch by epoch, so later stages kept seeing views they had already fitted.
        "seed": args.seed if args.seed is not None else secrets.randbelow(2**31),
    }


def prepare_run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Create (or reopen, for --resume) the run directory and its config."""
    if args.resume:
        run_dir = Path(args.resume).expanduser().resolve()
        config = runs.read_json(run_dir / runs.CONFIG_FILE)
        if config is None:
            raise SystemExit(f"error: {run_dir} is not a run directory (no {runs.CONFIG_FILE})")
        existing = runs.read_run(run_dir)
        state = existing.state if existing else {}
        if existing and existing.status == "running" and state.get("pid") != os.getpid():
            raise SystemExit(f"error: run {run_dir.name!r} is still running (pid {state.get('pid')}); stop it first")
        if existing and existing.status == "finished":
            raise SystemExit(
                f"error: run {run_dir.name!r} has finished; to train further start a new run with "
                f"--init-from {run_dir / runs.BEST_MODEL_FILE}"
            )
        if args.epochs is not None:
            if args.epochs < 1:
                raise SystemExit("error: --epochs must be positive")
            config["epochs"] = args.epochs
            runs.write_json_atomic(run_dir / runs.CONFIG_FILE, config)  # the new total is the run's from now on
        return run_dir, config
    config = config_from_args(args)
    from fer_core.settings import get_settings

    runs_dir = Path(args.runs_dir) if args.runs_dir else get_settings().runs_dir
    name = runs.validate_run_name(args.run_name) if args.run_name else runs.default_run_name()
    run_dir = (runs_dir / name).resolve()
    existing = runs.read_run(run_dir)
    if existing is not None and existing.status not in ("queued",):
        raise SystemExit(
            f"error: run {name!r} already exists at {run_dir}; use --resume {run_dir} or another --run-name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(run_dir / runs.CONFIG_FILE, config)
    if config["init_from"]:
        from training.publish import init_record

        # Read now: the model it starts from may be replaced (published over) before this run is published.
        runs.write_json_atomic(run_dir / runs.INIT_FROM_FILE, init_record(Path(config["init_from"])))
    return run_dir, config


def _stderr_is(path: Path) -> bool:
    """True when stderr already goes to `path` (launched by runs.launch_run): log each line once."""
    try:
        err, log_file = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (err.st_dev, err.st_ino) == (log_file.st_dev, log_file.st_ino)


def setup_logging(run_dir: Path) -> list[logging.Handler]:
    """Log to the run's train.log (and stderr); returns the handlers it replaced, for restore_logging."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(run_dir / runs.LOG_FILE, encoding="utf-8")
    file_handler.setFormatter(fmt)
    handlers: list[logging.Handler] = [file_handler]
    if not _stderr_is(run_dir / runs.LOG_FILE):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        handlers.append(console)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    previous = list(root.handlers)
    root.handlers[:] = handlers
    return previous


def restore_logging(previous: list[logging.Handler]) -> None:
    """Close our handlers (train.main may run in-process, e.g. in tests) and put back the old ones."""
    root = logging.getLogger()
    for handler in root.handlers:
        if handler not in previous:
            handler.close()
    root.handlers[:] = previous


class StopRequested:
    """SIGTERM/SIGINT (the Training page's Stop) ends the run after the current batch.

    The handler only sets a flag; callbacks.StopOnRequest acts on it between batches.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True
        log.info("stop requested (signal %d); stopping after the current batch", signum)


def _completed_epochs(run_dir: Path, phase: str, floor: int) -> int:
    """Epochs a phase's BackupAndRestore will resume after (`floor` when it has no backup yet)."""
    done = runs.backup_epoch(run_dir / BACKUP_DIR / phase)
    return floor if done is None else max(done, floor)


def data_seed(run_dir: Path, seed: int) -> int:
    """The seed for shuffling and augmentation: a resumed run goes on with fresh epochs, not its first ones again."""
    return seed + max(_completed_epochs(run_dir, phase, 0) for phase in ("head", "finetune", "all"))


def train(run_dir: Path, config: dict[str, Any], stop: StopRequested) -> dict[str, Any]:
    import keras
    import numpy as np

    from fer_core.model_io import load_keras_model
    from training import data as data_lib
    from training import model as model_lib
    from training.callbacks import (
        CosineDecay,
        LinearWarmup,
        PreciseBatchNorm,
        ProgressWriter,
        ResumableSwapEMAWeights,
        StatusUpdater,
        StopOnRequest,
        TrainingStopped,
    )

    shuffle_seed = data_seed(run_dir, config["seed"])
    keras.utils.set_random_seed(shuffle_seed)
    # The model first: a weights file that does not fit fails before the data loads.
    base_weights: BaseWeights | None = None
    if config["init_from"]:
        init = load_keras_model(config["init_from"])
        model = model_lib.build_model(config["image_size"], None, config["dropout"])
        try:
            model.set_weights(init.get_weights())
        except ValueError as exc:
            raise SystemExit(
                f"error: --init-from model does not match --image-size {config['image_size']}: {exc}"
            ) from exc
        log.info("initialised from %s", config["init_from"])
    else:
        try:
            base_weights = base_weights_of(config)
            model = model_lib.build_model(
                config["image_size"], base_weights.path if base_weights else None, config["dropout"],
                partly_pretrained=bool(base_weights and base_weights.partial),
            )
        except WeightsFileError as exc:
            raise SystemExit(f"error: {exc}") from None
        log.info("base weights: %s", base_weights.describe() if base_weights else "none (training from scratch)")
        runs.update_status(run_dir, "running", weights_used=base_weights.path if base_weights else "none")
    # A fully pretrained base trains its head first, then its top blocks; anything else trains as a whole.
    pretrained = base_weights is not None and not base_weights.partial
    rate_multipliers = None
    factor = config.get("pretrained_lr_factor", DEFAULT_PRETRAINED_LR_FACTOR)
    if base_weights is not None and base_weights.partial and factor != 1.0:
        rate_multipliers = model_lib.pretrained_rate_multipliers(model, base_weights.pretrained_through, factor)
        log.info("partly pretrained base: %d variables of the stem to %s learn at %g x the learning rate",
                 len(rate_multipliers), base_weights.pretrained_through, factor)

    t0 = time.monotonic()
    train_data = data_lib.load_split(config["data"], config["train_split"], skip_corrupt=config["skip_corrupt"])
    val_data = data_lib.load_split(
        config["data"], config["val_split"], skip_corrupt=config["skip_corrupt"], require_all_classes=False
    )
    if config["limit"]:
        rng = np.random.default_rng(config["seed"])
        keep = rng.permutation(len(train_data))[: config["limit"]]
        train_data = data_lib.SplitData(train_data.images[keep], train_data.labels[keep], train_data.classes_present)
    log.info(
        "data: %d train / %d val images (%.1fs); train counts %s",
        len(train_data), len(val_data), time.monotonic() - t0, train_data.class_counts(),
    )
    targets = distillation_targets(run_dir, config, train_data) if config.get("distill_from") else None
    train_ds = data_lib.make_dataset(
        train_data, config["batch_size"], training=True, augment=config["augment"],
        erasing=config.get("erasing", 0.0),  # runs from before these options resume without them
        mixup=config.get("mixup", 0.0),
        targets=targets,
        seed=shuffle_seed,
    )
    val_ds = data_lib.make_dataset(val_data, config["batch_size"], training=False)
    steps = int(np.ceil(len(train_data) / config["batch_size"]))

    # Runs from before --precise-bn resume without it.
    precise_bn_images = min(config.get("precise_bn", 0), len(train_data))
    precise_bn_faces = None
    if precise_bn_images:
        pick = np.random.default_rng(config["seed"]).permutation(len(train_data))[:precise_bn_images]
        precise_bn_faces = train_data.images[pick][..., None].astype(np.float32)
        log.info("BatchNorm statistics re-estimated on %d clean training faces before each validation",
                 precise_bn_images)

    class_weight = data_lib.balanced_class_weights(train_data.labels) if config["class_weights"] else None
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"])

    def compile_with(lr: float) -> None:
        # Runs started before --adam-epsilon / --weight-decay existed resume with what they were started with.
        optimizer = make_optimizer(lr, config.get("adam_epsilon", DEFAULT_ADAM_EPSILON), ema,
                                   config.get("weight_decay", DEFAULT_WEIGHT_DECAY), rate_multipliers)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])

    def callbacks_for(
        phase: str, initial_epoch: int, lr: float, warmup: bool, resumed: bool
    ) -> list[keras.callbacks.Callback]:
        # Order matters: logs are written before the backup, so a kill between the two can only
        # leave an extra logged epoch (trimmed on resume), never a backed-up epoch missing from
        # the logs; ReduceLROnPlateau runs before the backup so the backup holds the reduced rate.
        cbs: list[keras.callbacks.Callback] = [
            StopOnRequest(lambda: stop.requested),
            keras.callbacks.ModelCheckpoint(
                str(run_dir / runs.BEST_MODEL_FILE), monitor="val_accuracy", mode="max", save_best_only=True,
                initial_value_threshold=runs.best_logged(run_dir, "val_accuracy"),  # resume: keep a better best
            ),
            schedule(initial_epoch, phase_end[phase], lr, warmup),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=EARLY_STOP_PATIENCE, restore_best_weights=False
            ),
            keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY_FILE), append=True),
            ProgressWriter(run_dir / runs.PROGRESS_FILE, epochs, steps, PROGRESS_EVERY_N_BATCHES),
            StatusUpdater(run_dir),
            # double_checkpoint: a kill while the backup is being written leaves the previous one.
            keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR / phase), double_checkpoint=True),
        ]
        if warmup:
            cbs.insert(1, LinearWarmup(lr, warmup_steps, steps))
        if precise_bn_faces is not None:  # before ModelCheckpoint, after the EMA swap
            cbs.insert(1, PreciseBatchNorm(precise_bn_faces))
        if ema:  # before ModelCheckpoint: the checkpoint and the backup hold the averaged weights
            cbs.insert(1, ResumableSwapEMAWeights(restored_from_backup=resumed))
        return cbs

    def schedule(first_epoch: int, end_epoch: int, lr: float, warmup: bool) -> keras.callbacks.Callback:
        # Runs from before --lr-schedule resume with the plateau rule they were started with.
        if config.get("lr_schedule", "plateau") == "cosine":
            start = first_epoch * steps + (warmup_steps if warmup else 0)
            return CosineDecay(lr, MIN_LR, start, end_epoch * steps, steps)
        return keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=REDUCE_LR_FACTOR,
            patience=REDUCE_LR_PATIENCE, min_lr=MIN_LR, verbose=1,
        )

    def fit(phase: str, *, initial_epoch: int, lr: float, warmup: bool) -> None:
        completed = _completed_epochs(run_dir, phase, initial_epoch)
        runs.trim_logs_to_epoch(run_dir, completed)  # drop what the backup does not hold: it is redone
        if completed > initial_epoch:
            log.info("phase %s: resuming after epoch %d of %d", phase, completed, epochs)
            runs.update_status(run_dir, "running", resumed_from_epoch=completed)
        cbs = callbacks_for(phase, initial_epoch, lr, warmup, resumed=completed > initial_epoch)
        # Keras keeps the epoch a previous fit's BackupAndRestore restored on the model; forget it.
        model._initial_epoch = None
        try:
            model.fit(train_ds, validation_data=val_ds, initial_epoch=initial_epoch, epochs=phase_end[phase],
                      class_weight=class_weight, callbacks=cbs, verbose=verbose, shuffle=False)  # ds shuffles
        finally:
            for cb in cbs:  # CSVLogger only closes its file in on_train_end, which a stop skips
                handle = getattr(cb, "csv_file", None)
                if handle is not None and not handle.closed:
                    handle.close()

    verbose = 1 if sys.stderr.isatty() else 2
    ema = config.get("ema", DEFAULT_EMA_MOMENTUM)  # runs from before --ema resume without it
    state = runs.read_json(run_dir / runs.STATUS_FILE) or {}
    phases_done: list[str] = list(state.get("phases_done", []))
    epochs = config["epochs"]
    lr = config["lr"]
    head_epochs = min(config["head_epochs"], epochs) if pretrained else 0
    phase_end = {"head": head_epochs, "finetune": epochs, "all": epochs}
    warmup_steps = WARMUP_EPOCHS * steps

    try:
        if pretrained:
            head_weights = run_dir / BACKUP_DIR / "head_done.weights.h5"
            if "head" not in phases_done:
                model_lib.freeze_base(model)
                compile_with(lr)
                fit("head", initial_epoch=0, lr=lr, warmup=False)
                model.save_weights(head_weights)
                phases_done.append("head")
                runs.update_status(run_dir, "running", phases_done=phases_done)
            else:
                model.load_weights(head_weights)
            model_lib.unfreeze(model)
            compile_with(lr * FINE_TUNE_LR_FACTOR)
            fit("finetune", initial_epoch=head_epochs, lr=lr * FINE_TUNE_LR_FACTOR, warmup=False)
        else:
            model_lib.unfreeze_all(model)
            compile_with(lr)
            fit("all", initial_epoch=0, lr=lr, warmup=True)
    except TrainingStopped:
        return {"stopped": True}
    return {"stopped": False}


def distillation_targets(run_dir: Path, config: dict[str, Any], train_data: Any) -> Any:
    """(n, 7) training targets: each face's one-hot label and the teacher's prediction, mixed by distill_weight.

    FER2013's labels are noisy (about 65% human agreement): the teacher's soft prediction says how much
    a face also looks like the other classes, where a one-hot label says it is one class only. The teacher
    averages each clean face with its mirror image (flip averaging), then its stored temperature applies.
    """
    import numpy as np

    from fer_core.emotions import NUM_EMOTIONS

    path = run_dir / TEACHER_TARGETS_FILE
    shape = (len(train_data), NUM_EMOTIONS)
    if path.is_file():
        teacher = np.load(path)
        if teacher.shape != shape:
            raise SystemExit(f"error: {path} holds {teacher.shape} teacher predictions for {shape[0]} training "
                             "faces; the data set has changed since this run started")
        log.info("distillation: teacher predictions read from %s", path)
    else:
        from training.inference import load_predictor, predict

        t0 = time.monotonic()
        teacher = predict(load_predictor(config["distill_from"], "keras", flip_average=True), train_data.images)
        partial = path.with_suffix(".partial.npy")
        np.save(partial, teacher.astype(np.float32))
        os.replace(partial, path)
        log.info("distillation: teacher %s agrees with %.1f%% of the %d training labels (%.0fs)",
                 config["distill_from"], 100 * float((teacher.argmax(1) == train_data.labels).mean()),
                 len(train_data), time.monotonic() - t0)
    weight = config["distill_weight"]
    onehot = np.eye(NUM_EMOTIONS, dtype=np.float32)[train_data.labels]
    return ((1.0 - weight) * onehot + weight * teacher).astype(np.float32)


def base_weights_of(config: dict[str, Any]) -> BaseWeights | None:
    """The run's base weights: its described file, Keras' ImageNet file, or None (from scratch)."""
    from training import model as model_lib

    if config.get("base_weights"):
        return BaseWeights(**config["base_weights"])
    weights = model_lib.resolve_imagenet_weights(config["weights"])  # "imagenet": the cache, else a download
    if weights is None:
        return None
    if str(config["weights"]).lower() == "imagenet":
        return BaseWeights(weights, LAST_BLOCK, IMAGENET_SOURCE)
    return describe_file(weights)  # a run from before base_weights was recorded


def make_optimizer(lr: float, epsilon: float, ema: float, weight_decay: float,
                   rate_multipliers: dict[str, float] | None = None) -> Any:
    """Adam, with a moving average of the weights if `ema`, decoupled weight decay if `weight_decay`,
    and per-variable learning-rate multipliers if `rate_multipliers` (a partly pretrained base)."""
    import keras

    from training.model import LayerwiseAdam

    options = {"epsilon": epsilon, "weight_decay": weight_decay or None, "use_ema": ema > 0,
               "ema_momentum": ema or 0.99}
    if rate_multipliers:
        optimizer = LayerwiseAdam(lr, rate_multipliers=rate_multipliers, **options)
    else:
        optimizer = keras.optimizers.Adam(lr, **options)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_VARIABLES))
    return optimizer


def finish(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the best model on val, export it (.keras, .h5, int8 LiteRT) and calibrate the export."""
    from training.calibrate import calibrate_model
    from training.evaluate import evaluate_model_file
    from training.export import export_model

    best = run_dir / runs.BEST_MODEL_FILE
    report = evaluate_model_file(
        best, config["data"], config["val_split"], out_dir=run_dir, skip_corrupt=config["skip_corrupt"]
    )
    export = export_model(
        best, run_dir / runs.EXPORT_DIR, data=config["data"], split=config["val_split"],
        skip_corrupt=config["skip_corrupt"],
    )
    calibration = calibrate_model(
        run_dir / runs.EXPORT_DIR, config["data"], config["val_split"], skip_corrupt=config["skip_corrupt"]
    )
    summary_keys = ("files", "keras_accuracy", "tflite_accuracy", "accuracy_difference")
    return {
        "val_accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "export": {key: export.get(key) for key in summary_keys},
        "calibration": {key: calibration[key] for key in ("temperature", "ece_before", "ece_after")},
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_dir, config = prepare_run(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    previous_handlers = setup_logging(run_dir)
    stop = StopRequested()
    previous_signals: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: no signal handling, no Stop
            previous_signals[signum] = signal.signal(signum, stop)
    try:
        return _run(run_dir, config, stop)
    finally:
        for signum, handler in previous_signals.items():
            signal.signal(signum, handler)
        restore_logging(previous_handlers)


def _run(run_dir: Path, config: dict[str, Any], stop: StopRequested) -> int:
    previous = runs.read_json(run_dir / runs.STATUS_FILE) or {}
    runs.update_status(
        run_dir, "running", pid=os.getpid(), created_at=previous.get("created_at", time.time()),
        started_at=time.time(), message="", resume_command=f"python -m training.train --resume {run_dir}",
    )
    log.info("run %s: %s", run_dir.name, config)
    try:
        phases_done = list(previous.get("phases_done", []))
        if TRAINED in phases_done:
            log.info("training already complete; evaluating and exporting")
        else:
            outcome = train(run_dir, config, stop)
            if outcome.get("stopped"):
                runs.update_status(run_dir, "stopped", message="stopped by request; --resume continues it")
                log.info("stopped; resume with: python -m training.train --resume %s", run_dir)
                return 0
            # Marked before export: a run killed while exporting resumes straight to export.
            phases_done = list((runs.read_json(run_dir / runs.STATUS_FILE) or {}).get("phases_done", []))
            runs.update_status(run_dir, "running", phases_done=[*phases_done, TRAINED])
            # The backups (weights + optimizer state, ~3x the model) are no longer needed to resume.
            shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
        summary = finish(run_dir, config) if config.get("export", True) else {}
        runs.update_status(run_dir, "finished", finished_at=time.time(), message="", **summary)
        log.info("finished: %s", summary)
        return 0
    except DatasetError as exc:
        runs.update_status(run_dir, "failed", message=str(exc))
        log.error("data set problem: %s", exc)
        return 2
    except SystemExit as exc:
        runs.update_status(run_dir, "failed", message=str(exc.code))
        log.error("%s", exc.code)
        return 2
    except Exception as exc:
        runs.update_status(run_dir, "failed", message=f"{type(exc).__name__}: {exc}")
        log.exception("run failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
