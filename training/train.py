"""Train ClassMood's emotion model (InceptionV3 transfer learning on FER2013): the command line.

    python -m training.train --data ../shared/datasets/fer2013 --epochs 40 --run-name base
    python -m training.train --resume data/runs/base            # continue a stopped or killed run
    python -m training.train --data DIR --init-from models/fer-inceptionv3 --lr 1e-4   # fine-tune
    python -m training.train --config data/runs/NAME/config.json  # a run the Training page prepared

Every option is a field of `training.config.TrainConfig` (its bounds, default and help come from
there); the run's folder (see `training.runs`) keeps them as config.json. The recipe is
`training.trainer`'s.

Stopping and resuming: SIGTERM/SIGINT (the Training page's Stop) ends the run after the current
batch with status "stopped"; a killed run reads as "interrupted". Either way the backup of the
last completed epoch is kept, and --resume continues after that epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, get_args, get_origin

from training import runs
from training.card import init_record
from training.config import ConfigError, TrainConfig, cli_flag, option_help, resolve_inputs
from training.data import DatasetError
from training.distill import TeacherTargetsError
from training.pretrained import BLOCKS
from training.trainer import TRAINED, RunSetupError, Trainer, finish

log = logging.getLogger("training")

# Options that only a new run takes from the command line (the others come from its config.json).
RUN_OPTIONS = tuple(name for name in TrainConfig.model_fields if name != "base_weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train, fine-tune or resume ClassMood's InceptionV3 emotion model.",
    )
    for name in RUN_OPTIONS:
        _add_option(parser, name)
    parser.add_argument("--pretrained-through", choices=BLOCKS, metavar="BLOCK",
                        help="with a --weights file: the last pretrained InceptionV3 block (mixed0 ... mixed10); the "
                             "blocks above it are random. Default: from a <file>.json sidecar, else known files "
                             "by their SHA-256, else the whole base")
    parser.add_argument("--run-name", help="name of the run folder (default: run-<timestamp>)")
    parser.add_argument("--runs-dir", type=Path, help="where run folders go (default: <data_dir>/runs)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a stopped or interrupted run after its last completed epoch "
                             "(with --epochs: a new total)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="train the run prepared in FILE's folder (FILE: its config.json, as the Training "
                             "page writes it)")
    return parser


def _add_option(parser: argparse.ArgumentParser, name: str) -> None:
    """One command-line option from its TrainConfig field. default=None: "not given" takes the field's default."""
    field = TrainConfig.model_fields[name]
    help_text = option_help(name)
    if field.annotation is bool:
        action = "store_false" if field.default else "store_true"
        parser.add_argument(cli_flag(name), dest=name, action=action, default=None, help=help_text)
        return
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if get_origin(field.annotation) is tuple:  # a list of paths (more teachers)
        parser.add_argument(cli_flag(name), dest=name, type=Path, nargs="+", default=None,
                            metavar=extra.get("metavar"), help=help_text)
        return
    choices = get_args(field.annotation) if field.annotation is not None and get_args(field.annotation) else None
    kind: Any = {int: int, float: float}.get(field.annotation, str)  # type: ignore[call-overload]
    if choices and all(isinstance(c, str) for c in choices):
        kind = str
    else:
        choices = None
    parser.add_argument(cli_flag(name), dest=name, type=kind, choices=choices, default=None,
                        metavar=extra.get("metavar"), help=help_text)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: value for name in RUN_OPTIONS if (value := getattr(args, name)) is not None}


def prepare_run(args: argparse.Namespace) -> tuple[Path, TrainConfig]:
    """The run folder and its config: reopened (--resume), prepared by the launcher (--config), or new."""
    given = given_options(args)
    if args.resume or args.config:
        extra = sorted(set(given) - ({"epochs"} if args.resume else set()))
        if extra or args.run_name or args.pretrained_through:
            what = "--resume takes only --epochs" if args.resume else "--config takes no other options"
            raise SystemExit(f"error: {what}; the run's options are in its {runs.CONFIG_FILE}")
        if args.resume:
            return reopen_run(Path(args.resume), given.get("epochs"))
        return prepared_run(Path(args.config))
    if "data" not in given:
        raise SystemExit("error: --data is required (or --resume RUN_DIR)")
    try:
        config = resolve_inputs(TrainConfig.from_options(given), args.pretrained_through)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.runs_dir:
        runs_dir = Path(args.runs_dir)
    else:
        from fer_core.settings import get_settings

        runs_dir = get_settings().runs_dir
    name = runs.validate_run_name(args.run_name) if args.run_name else runs.default_run_name()
    try:
        run_dir = runs.create_run(runs_dir, name, config)
    except ValueError:
        raise SystemExit(f"error: run {name!r} already exists at {(runs_dir / name).resolve()}; use --resume "
                         f"{(runs_dir / name).resolve()} or another --run-name") from None
    _record_start(run_dir, config)
    return run_dir, config


def _load(run_dir: Path) -> TrainConfig:
    try:
        return runs.load_config(run_dir)
    except FileNotFoundError:
        raise SystemExit(f"error: {run_dir} is not a run directory (no {runs.CONFIG_FILE})") from None
    except ConfigError as exc:
        raise SystemExit(f"error: {run_dir / runs.CONFIG_FILE}: {exc}") from None


def reopen_run(run_dir: Path, epochs: int | None) -> tuple[Path, TrainConfig]:
    """A stopped, interrupted or failed run, to continue (`epochs`: a new total, from now on the run's own)."""
    run_dir = run_dir.expanduser().resolve()
    config = _load(run_dir)
    existing = runs.read_run(run_dir)
    if existing and existing.status == "running" and existing.state.get("pid") != os.getpid():
        raise SystemExit(f"error: run {run_dir.name!r} is still running (pid {existing.state.get('pid')}); "
                         "stop it first")
    if existing and existing.status == "finished":
        raise SystemExit(f"error: run {run_dir.name!r} has finished; to train further start a new run with "
                         f"--init-from {run_dir / runs.BEST_MODEL_FILE}")
    if epochs is not None:
        try:
            config = config.with_changes(epochs=epochs)
        except ConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
        runs.save_config(run_dir, config)
    return run_dir, config


def prepared_run(config_file: Path) -> tuple[Path, TrainConfig]:
    """A run the launcher created: its folder holds config.json and a 'queued' status."""
    config_file = config_file.expanduser().resolve()
    if config_file.name != runs.CONFIG_FILE:
        raise SystemExit(f"error: --config takes a run folder's {runs.CONFIG_FILE}, not {config_file.name}")
    run_dir = config_file.parent
    config = _load(run_dir)
    existing = runs.read_run(run_dir)
    if existing is not None and existing.status != "queued":
        raise SystemExit(f"error: run {run_dir.name!r} has already started; continue it with --resume {run_dir}")
    _record_start(run_dir, config)
    return run_dir, config


def _record_start(run_dir: Path, config: TrainConfig) -> None:
    if config.init_from is not None and not (run_dir / runs.INIT_FROM_FILE).is_file():
        # Read now: the model it starts from may be replaced (published over) before this run is published.
        runs.write_json_atomic(run_dir / runs.INIT_FROM_FILE, init_record(config.init_from))


# --- the process: logging and signals -------------------------------------------------------------


def _stderr_is(path: Path) -> bool:
    """True when stderr already goes to `path` (launched by training.launch): log each line once."""
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
    """Close our handlers (main may run in-process, e.g. in tests) and put back the old ones."""
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

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        log.info("stop requested (signal %d); stopping after the current batch", signum)


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
        return run(run_dir, config, lambda: stop.requested)
    finally:
        for signum, handler in previous_signals.items():
            signal.signal(signum, handler)
        restore_logging(previous_handlers)


# Problems with the run's inputs: the run fails with their message (no traceback needed).
INPUT_PROBLEMS = (DatasetError, RunSetupError, TeacherTargetsError)


def run(run_dir: Path, config: TrainConfig, stop_requested: Any) -> int:
    """Train (or finish training) the run in `run_dir`, keeping its status current; the process's exit code."""
    from fer_core.model_io import ModelError

    previous = runs.read_json(run_dir / runs.STATUS_FILE) or {}
    runs.update_status(
        run_dir, "running", pid=os.getpid(), created_at=previous.get("created_at", time.time()),
        started_at=time.time(), message="", phase="starting",
        resume_command=f"python -m training.train --resume {run_dir}",
    )
    log.info("run %s: %s", run_dir.name, config.stored())
    try:
        if TRAINED in previous.get("phases_done", []):
            log.info("training already complete; evaluating and exporting")
        else:
            if not Trainer(run_dir, config, stop_requested).train():
                runs.update_status(run_dir, "stopped", message="stopped on request")
                log.info("stopped; resume with: python -m training.train --resume %s", run_dir)
                return 0
            # Marked before export: a run killed while exporting resumes straight to export.
            phases_done = list((runs.read_json(run_dir / runs.STATUS_FILE) or {}).get("phases_done", []))
            runs.update_status(run_dir, "running", phases_done=[*phases_done, TRAINED])
            # The backups (weights + optimizer state, ~3x the model) are no longer needed to resume.
            shutil.rmtree(run_dir / runs.BACKUP_DIR, ignore_errors=True)
        summary = finish(run_dir, config) if config.export else {}
        runs.update_status(run_dir, "finished", finished_at=time.time(), message="", **summary)
        log.info("finished: %s", summary)
        return 0
    except (*INPUT_PROBLEMS, ModelError) as exc:
        runs.update_status(run_dir, "failed", message=str(exc))
        log.error("%s", exc)
        return 2
    except Exception as exc:
        runs.update_status(run_dir, "failed", message=f"{type(exc).__name__}: {exc}")
        log.exception("run failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
