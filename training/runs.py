"""Run directories: where each training run keeps its config, status, logs and models.

Layout of `<runs_dir>/<name>/`:
    config.json       the options the run was started with
    status.json       {"status", "pid", "started_at", "updated_at", "epoch", "message", ...}
    progress.jsonl    one JSON line per epoch and every N batches (see callbacks.ProgressWriter)
    history.csv       Keras CSVLogger
    train.log         the run's log
    best.keras        best model on val accuracy (ModelCheckpoint)
    backup/           BackupAndRestore state, for --resume
    export/           model.keras, model.h5, model_int8.tflite, report.json
    evaluation.json, confusion_matrix.png
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "finished", "failed", "stopped", "interrupted")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.jsonl"
HISTORY_FILE = "history.csv"
LOG_FILE = "train.log"
BEST_MODEL_FILE = "best.keras"
EXPORT_DIR = "export"
EVALUATION_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.png"


def validate_run_name(name: str) -> str:
    if not RUN_NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Readers (the Training page) never see a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


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
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for us.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


@dataclass
class RunInfo:
    name: str
    path: Path
    status: str
    config: dict[str, Any]
    state: dict[str, Any]

    @property
    def is_active(self) -> bool:
        return self.status in ("queued", "running")


def read_run(run_dir: Path) -> RunInfo | None:
    state = read_json(run_dir / STATUS_FILE)
    if state is None:
        return None
    status = state.get("status", "failed")
    if status == "running" and not pid_alive(state.get("pid")):
        status = "interrupted"  # killed without a chance to say so; resumable
    return RunInfo(run_dir.name, run_dir, status, read_json(run_dir / CONFIG_FILE) or {}, state)


def list_runs(runs_dir: Path) -> list[RunInfo]:
    if not runs_dir.is_dir():
        return []
    runs = [info for p in runs_dir.iterdir() if p.is_dir() and (info := read_run(p)) is not None]
    return sorted(runs, key=lambda r: r.state.get("created_at", 0), reverse=True)


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
