"""Run folders: where each training run keeps its config, status, logs and models, read and written atomically.

Layout of `<runs_dir>/<name>/`:
    config.json       the run's TrainConfig (training.config), written before training starts
    status.json       {"status", "phase", "pid", "created_at", "started_at", "updated_at", "epoch", "message", ...}
    progress.jsonl    one JSON line per epoch and every few batches (see callbacks.ProgressWriter)
    history.csv       Keras CSVLogger
    train.log         the run's log (for launched runs also the process's stdout/stderr)
    launch.json       {"pid", "command", "launched_at", "stop_requested_at"}: written by training.launch only
    best.keras        best model on val accuracy (ModelCheckpoint)
    backup/<phase>/   the last completed epoch's weights and optimizer state, for resuming
                      (see callbacks.EpochBackup; removed once training is over)
    export/           model.keras, model.h5, model_int8.tflite, calibration.json, report.json
    evaluation.json, confusion_matrix.png

Statuses: queued (launched, process starting), running, finished, failed, stopped (Stop /
SIGTERM; resumable), interrupted (the process died without saying so, e.g. SIGKILL or a
reboot; resumable). `read_run` derives interrupted/failed from a dead process. A running run
also says which phase it is in (PHASES).

This is the bottom of `training/`: it imports only `training.config`, never TensorFlow or Streamlit.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from training.config import ConfigError, TrainConfig

STATUSES = ("queued", "running", "finished", "failed", "stopped", "interrupted")
RESUMABLE = ("stopped", "interrupted")
# What a run is doing, in order (status.json "phase"); the Training page names them.
PHASES = ("starting", "building the model", "loading data", "training", "evaluating", "exporting", "calibrating")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.jsonl"
HISTORY_FILE = "history.csv"
LOG_FILE = "train.log"
LAUNCH_FILE = "launch.json"  # written by the launcher only; train.py never touches it
BEST_MODEL_FILE = "best.keras"
EXPORT_DIR = "export"
EVALUATION_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.png"
INIT_FROM_FILE = "init_from.json"  # what an init_from run started from (see training.card.init_record)
TEACHER_TARGETS_FILE = "teacher_targets.npy"  # distillation targets, kept so a resume trains towards the same ones
BACKUP_DIR = "backup"
BACKUP_WEIGHTS = "latest.weights.h5"  # the names Keras' BackupAndRestore used, so older runs resume too
BACKUP_METADATA = "training_metadata.json"
QUEUED_GRACE_S = 60.0  # a 'queued' status with no process after this long is a failed launch
EXEC_GRACE_S = 10.0  # a launched process not yet running training.train after this long is not our run
TRAINING_PHASES = ("head", "finetune", "all")  # fit phases, each with its own backup folder


def validate_run_name(name: str) -> str:
    if not RUN_NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


# --- atomic JSON ------------------------------------------------------------------------------


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Readers (the Training page) never see a half-written file."""
    # Per-process temp name: the training process and the page may both write status.json.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


# --- the config ---------------------------------------------------------------------------------


def save_config(run_dir: Path, config: TrainConfig) -> None:
    write_json_atomic(run_dir / CONFIG_FILE, config.stored())


def load_config(run_dir: Path) -> TrainConfig:
    """The run's config.json as a TrainConfig (also from runs of older versions). Raises ConfigError."""
    stored = read_json(run_dir / CONFIG_FILE)
    if stored is None:
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    return TrainConfig.from_stored(stored)


def create_run(runs_dir: Path, name: str, config: TrainConfig) -> Path:
    """A new run folder `<runs_dir>/<name>` holding `config` and a 'queued' status; ValueError if it exists."""
    run_dir = (Path(runs_dir).expanduser() / validate_run_name(name)).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run {name!r} already exists in {run_dir.parent}; resume it or choose another name")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)
    update_status(run_dir, "queued", created_at=time.time(), phase="starting")
    return run_dir


# --- status -------------------------------------------------------------------------------------


def update_status(run_dir: Path, status: str, **fields: Any) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    current = read_json(run_dir / STATUS_FILE) or {}
    current.update(fields)
    current["status"] = status
    current["updated_at"] = time.time()
    write_json_atomic(run_dir / STATUS_FILE, current)
    return current


def pid_alive(pid: int | None) -> bool:
    """A process with this pid exists and has not exited (a zombie, not yet reaped by its parent, has)."""
    if not pid:
        return False
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def is_training_process(pid: int | None) -> bool:
    """Alive and running training.train: a pid recycled by an unrelated process after a reboot is not our run."""
    if not pid_alive(pid):
        return False
    if int(pid) == os.getpid():  # training.train run in this process (tests)
        return True
    try:
        command = " ".join(psutil.Process(int(pid)).cmdline())
    except psutil.AccessDenied:
        return True  # cannot tell: trust the pid
    except psutil.NoSuchProcess:
        return False
    return "training.train" in command or "training/train.py" in command


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str
    config: TrainConfig | None  # None: no (readable) config.json yet
    state: dict[str, Any]

    @property
    def is_active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def launch_pid(self) -> int | None:
        return self.state.get("pid") or (read_json(self.path / LAUNCH_FILE) or {}).get("pid")


def _config_or_none(run_dir: Path) -> TrainConfig | None:
    try:
        return load_config(run_dir)
    except (FileNotFoundError, ConfigError):
        return None


def read_run(run_dir: Path) -> RunInfo | None:
    state = read_json(run_dir / STATUS_FILE)
    if state is None:
        return None
    status = state.get("status", "failed")
    if status == "running" and not is_training_process(state.get("pid")):
        status = "interrupted"  # killed without a chance to say so; resumable
    elif status == "queued":
        launch = read_json(run_dir / LAUNCH_FILE) or {}
        pid = state.get("pid") or launch.get("pid")
        if not pid and time.time() - float(state.get("updated_at", 0)) > QUEUED_GRACE_S:
            status = "failed"  # the launcher died between writing the status and starting the process
            state = {**state, "message": "the training process was never started"}
        elif pid and not is_training_process(pid) and not _still_starting(pid, launch):
            # Launched, but the process ended before train.py took over (bad option, import error, Stop).
            if launch.get("stop_requested_at"):
                status, message = "stopped", "stopped before training started"
            else:
                status, message = "failed", f"the training process exited before starting; see {LOG_FILE}"
            state = {**state, "message": message}
    return RunInfo(run_dir.name, run_dir, status, _config_or_none(run_dir), state)


def _still_starting(pid: int, launch: dict[str, Any]) -> bool:
    """Just launched and alive: until it has exec'd, the child's command line is still its parent's."""
    return pid_alive(pid) and time.time() - float(launch.get("launched_at") or 0.0) < EXEC_GRACE_S


def list_runs(runs_dir: Path) -> list[RunInfo]:
    if not runs_dir.is_dir():
        return []
    runs = [info for p in runs_dir.iterdir() if p.is_dir() and (info := read_run(p)) is not None]
    return sorted(runs, key=lambda r: r.state.get("created_at", 0), reverse=True)


def active_run(runs_dir: Path) -> RunInfo | None:
    """The run currently queued or training, if any (stale 'running' statuses do not count)."""
    return next((info for info in list_runs(Path(runs_dir)) if info.is_active), None)


# --- progress and logs ----------------------------------------------------------------------------


def progress_interval(steps_per_epoch: int, every_n_batches: int, lines_per_epoch: int = 10) -> int:
    """Batches between two progress lines: `every_n_batches`, but often enough for `lines_per_epoch` lines
    in a short epoch, so that its training curve has points before the epoch ends."""
    return max(1, min(every_n_batches, steps_per_epoch // lines_per_epoch))


def read_progress(run_dir: Path) -> list[dict[str, Any]]:
    """All complete progress lines (a line being written is skipped)."""
    path = run_dir / PROGRESS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def tail_log(run_dir: Path, lines: int = 30) -> list[str]:
    path = run_dir / LOG_FILE
    if not path.is_file():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


# TensorFlow's and CUDA's start-up chatter in a launched run's log: C++ log lines (I0000 00:00:... file.cc:N]),
# absl's notice, and the CPU-instructions advice that continues on a line of its own.
_NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.]+:\d+\] ")
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called",
    "To enable the following instructions:",
)


def readable_log(lines: Iterable[str]) -> list[str]:
    """Log lines without TensorFlow/CUDA start-up noise (the full log keeps them)."""
    return [line for line in lines if not _NATIVE_LOG_LINE.match(line) and not line.startswith(_STARTUP_NOISE)]


# --- epoch bookkeeping for resuming -------------------------------------------------------


def read_history(run_dir: Path) -> list[dict[str, str]]:
    """Rows of the run's history.csv (Keras CSVLogger: `epoch` is 0-based)."""
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row.get("epoch", "").strip().isdigit()]


def best_logged(run_dir: Path, key: str = "val_accuracy") -> float | None:
    """Best value of `key` in history.csv, so a resumed ModelCheckpoint does not overwrite a better best.keras."""
    values = []
    for row in read_history(run_dir):
        try:
            values.append(float(row[key]))
        except (KeyError, TypeError, ValueError):
            continue
    finite = [v for v in values if v == v]  # drop NaN
    return max(finite) if finite else None


def trim_logs_to_epoch(run_dir: Path, completed_epochs: int) -> None:
    """Forget logged epochs after the last one the backup holds: the resumed run redoes them.

    A run killed mid-epoch leaves batch lines of the unfinished epoch in progress.jsonl (and,
    if killed between logging and backing up, an epoch row); without this they would be counted twice.
    """
    history = run_dir / HISTORY_FILE
    if history.is_file():
        with history.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
        if header:
            col = header.index("epoch") if "epoch" in header else 0
            kept = [r for r in rows if len(r) > col and r[col].strip().isdigit() and int(r[col]) < completed_epochs]
            tmp = history.with_name(f".{history.name}.{os.getpid()}.tmp")
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(kept)
            os.replace(tmp, history)
    progress = run_dir / PROGRESS_FILE
    if progress.is_file():
        kept_lines = [
            json.dumps(record)
            for record in read_progress(run_dir)
            if isinstance(record.get("epoch"), int) and record["epoch"] <= completed_epochs
        ]
        tmp = progress.with_name(f".{progress.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept_lines), encoding="utf-8")
        os.replace(tmp, progress)


def backup_weights_file(backup_dir: Path) -> Path | None:
    """The weights file of a phase's backup (ours name theirs; Keras' BackupAndRestore used one fixed name)."""
    meta = read_json(backup_dir / BACKUP_METADATA)
    if meta is None:
        return None
    weights = backup_dir / str(meta.get("weights_file", BACKUP_WEIGHTS))
    return weights if weights.is_file() else None


def backup_epoch(backup_dir: Path) -> int | None:
    """Epochs completed according to a phase's backup folder, or None without a backup."""
    meta = read_json(backup_dir / BACKUP_METADATA)
    if meta is None or backup_weights_file(backup_dir) is None:
        return None
    try:
        return int(meta["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def completed_epochs(run_dir: Path, phase: str | None = None, floor: int = 0) -> int:
    """Epochs a resume continues after: of one fit phase, or of the furthest phase (`floor` without a backup)."""
    phases = (phase,) if phase else TRAINING_PHASES
    done = [epoch for p in phases if (epoch := backup_epoch(run_dir / BACKUP_DIR / p)) is not None]
    return max([floor, *done])
