"""Run directories: where each training run keeps its config, status, logs and models.

Layout of `<runs_dir>/<name>/`:
    config.json       the options the run was started with
    status.json       {"status", "pid", "started_at", "updated_at", "epoch", "message", ...}
    progress.jsonl    one JSON line per epoch and every N batches (see callbacks.ProgressWriter)
    history.csv       Keras CSVLogger
    train.log         the run's log (for launched runs also the process's stdout/stderr)
    launch.json       {"pid", "command", "launched_at", "stop_requested_at"}: written by launch_run only
    best.keras        best model on val accuracy (ModelCheckpoint)
    backup/<phase>/   BackupAndRestore state of the last completed epoch, for --resume
                      (removed once training is over)
    export/           model.keras, model.h5, model_int8.tflite, report.json
    evaluation.json, confusion_matrix.png

Statuses: queued (launched, process starting), running, finished, failed, stopped (Stop /
SIGTERM; resumable), interrupted (the process died without saying so, e.g. SIGKILL or a
reboot; resumable). `read_run` derives interrupted/failed from a dead pid.

The Training page drives runs through `launch_run`, `stop_run`, `resume_run` and
`promote_run`; uploaded data sets come in through `extract_dataset_zip`. Only one run is
active at a time: a second launch raises RunBusyError (no queue). Nothing here imports
Streamlit or TensorFlow.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fer_core.settings import Settings

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
INIT_FROM_FILE = "init_from.json"  # what an --init-from run started from (see training.publish.init_record)


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
    # Per-process temp name: the training process and the page may both write status.json.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def is_training_process(pid: int | None) -> bool:
    """Alive and running training.train: a pid recycled by an unrelated process after a reboot is not our run."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc (not Linux): trust the pid
    return b"training.train" in cmdline or b"training/train.py" in cmdline or pid == os.getpid()


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
        elif pid and not is_training_process(pid):
            # Launched, but the process ended before train.py took over (bad option, import error, Stop).
            if launch.get("stop_requested_at"):
                status, message = "stopped", "stopped before training started"
            else:
                status, message = "failed", f"the training process exited before starting; see {LOG_FILE}"
            state = {**state, "message": message}
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


# --- epoch bookkeeping for --resume -------------------------------------------------------


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


def backup_epoch(backup_dir: Path) -> int | None:
    """Epochs completed according to a Keras BackupAndRestore directory, or None without a backup."""
    meta = read_json(backup_dir / "training_metadata.json")
    if meta is None or not (backup_dir / "latest.weights.h5").is_file():
        return None
    try:
        return int(meta["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


# --- launching, stopping, resuming and promoting runs (the Training page) ------------------

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = "launch.json"  # written by the launcher only; train.py never touches it
LAUNCH_LOCK = ".launch.lock"
QUEUED_GRACE_S = 60.0  # a 'queued' status with no process after this long is a failed launch
# Options the launcher sets itself (or that make no sense from the page).
_RESERVED_OPTIONS = frozenset({"resume", "run_name", "runs_dir", "help"})


class RunBusyError(RuntimeError):
    """Another run is active. ClassMood trains one model at a time: two would halve each other's speed."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        pid = run.state.get("pid") or (read_json(run.path / LAUNCH_FILE) or {}).get("pid")
        super().__init__(
            f"run {run.name!r} is {run.status} (pid {pid}); only one training run at a time. "
            f"Stop it or wait for it to finish first."
        )


def _launch_pid(run_dir: Path, state: dict[str, Any]) -> int | None:
    return state.get("pid") or (read_json(run_dir / LAUNCH_FILE) or {}).get("pid")


def active_run(runs_dir: Path) -> RunInfo | None:
    """The run currently queued or training, if any (stale 'running' statuses do not count)."""
    for info in list_runs(Path(runs_dir)):
        if info.is_active:
            return info
    return None


@contextmanager
def _launch_lock(runs_dir: Path) -> Iterator[None]:
    """Serialises check-then-launch between Streamlit sessions (and processes)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with (runs_dir / LAUNCH_LOCK).open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def options_to_args(options: dict[str, Any]) -> list[str]:
    """{"batch_size": 32, "class_weights": True} -> ["--batch-size", "32", "--class-weights"], validated.

    Keys are train.py's option names with underscores. Validation runs train.py's own parser and
    checks, so the page reports a bad value at once instead of through a dead subprocess.
    """
    import argparse

    from training.train import build_parser, config_from_args

    parser = build_parser()
    by_dest = {action.dest: action for action in parser._actions if action.option_strings}
    args: list[str] = []
    for key, value in options.items():
        if key in _RESERVED_OPTIONS or key not in by_dest:
            raise ValueError(f"unknown training option {key!r}")
        action = by_dest[key]
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                args.append(flag)
        elif value is not None:
            if key in ("data", "init_from", "distill_from"):
                value = Path(value).expanduser().resolve()  # the child runs in the project root
            args += [flag, str(value)]
    try:
        config_from_args(_parse_quietly(parser, args))
    except SystemExit as exc:
        raise ValueError(str(exc.code).removeprefix("error: ")) from None
    return args


def _parse_quietly(parser: Any, args: list[str]) -> Any:
    """argparse prints and exits on a bad value; turn that into an exception with its message."""

    def fail(message: str) -> None:
        raise SystemExit(message)

    parser.error = fail
    return parser.parse_args(args)


def _spawn(run_dir: Path, command: list[str]) -> RunInfo:
    """Start `command` detached from this process (it outlives Streamlit reruns and restarts)."""
    (run_dir / LAUNCH_FILE).unlink(missing_ok=True)
    # Written before the process exists, so a concurrent reader already sees the run as busy.
    update_status(run_dir, "queued", pid=None, message="starting", launch_command=" ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter would bury the run's own log
    with (run_dir / LOG_FILE).open("ab") as log_file:
        try:
            proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no SIGINT/SIGHUP from the launcher's terminal or session
                close_fds=True,
            )
        except OSError as exc:
            update_status(run_dir, "failed", message=f"could not start {command[0]}: {exc}")
            raise
    write_json_atomic(run_dir / LAUNCH_FILE, {"pid": proc.pid, "command": command, "launched_at": time.time()})
    # Reap the child when it exits so it does not linger as a zombie of the Streamlit process.
    threading.Thread(target=proc.wait, name=f"reap-{run_dir.name}", daemon=True).start()
    info = read_run(run_dir)
    assert info is not None
    return info


def launch_run(runs_dir: Path, options: dict[str, Any], python: str = sys.executable) -> RunInfo:
    """Start `python -m training.train` for a new run as a detached process.

    `options` are train.py options by dest name (`data`, `epochs`, `batch_size`, ..., and
    `run_name`). Raises RunBusyError if a run is active (we refuse rather than queue: a queue
    needs a scheduler process that outlives the page) and ValueError for bad options or an
    existing run name.
    """
    runs_dir = Path(runs_dir).expanduser().resolve()
    options = dict(options)
    name = validate_run_name(str(options.pop("run_name", None) or default_run_name()))
    for key in ("resume", "runs_dir"):
        if options.get(key):
            raise ValueError(f"option {key!r} is not for launch_run (use resume_run / the runs_dir argument)")
        options.pop(key, None)
    args = options_to_args(options)
    with _launch_lock(runs_dir):
        busy = active_run(runs_dir)
        if busy is not None:
            raise RunBusyError(busy)
        run_dir = runs_dir / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(f"run {name!r} already exists in {runs_dir}; resume it or choose another name")
        run_dir.mkdir(parents=True, exist_ok=True)
        update_status(run_dir, "queued", created_at=time.time())
        command = [python, "-m", "training.train", *args, "--run-name", name, "--runs-dir", str(runs_dir)]
        return _spawn(run_dir, command)


def resume_run(run: RunInfo, python: str = sys.executable, *, epochs: int | None = None) -> RunInfo:
    """Continue a stopped, interrupted or failed run from its last completed epoch (detached).

    `epochs` sets a new total (e.g. to train a stopped run further than first planned).
    """
    if epochs is not None and epochs < 1:
        raise ValueError("epochs must be positive")
    info = read_run(run.path)
    if info is None:
        raise ValueError(f"{run.path} is not a run directory")
    if info.status == "finished":
        raise ValueError(f"run {info.name!r} has finished; start a new run (fine-tune with init_from) instead")
    if not (info.path / CONFIG_FILE).is_file():
        raise ValueError(f"run {info.name!r} never started (no {CONFIG_FILE}); launch a new run instead")
    runs_dir = info.path.parent
    with _launch_lock(runs_dir):
        busy = active_run(runs_dir)
        if busy is not None:
            raise RunBusyError(busy)
        extra = ["--epochs", str(epochs)] if epochs is not None else []
        return _spawn(info.path, [python, "-m", "training.train", "--resume", str(info.path), *extra])


def stop_run(run: RunInfo) -> bool:
    """Ask an active run to stop (SIGTERM; train.py ends after the current batch, status 'stopped').

    Returns False when there is nothing to stop. The last completed epoch stays resumable.
    """
    info = read_run(run.path)
    if info is None or not info.is_active:
        return False
    pid = _launch_pid(info.path, info.state)
    if not is_training_process(pid):
        return False
    launch = read_json(info.path / LAUNCH_FILE)
    if launch is not None:
        write_json_atomic(info.path / LAUNCH_FILE, {**launch, "stop_requested_at": time.time()})
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def promote_run(run: RunInfo, settings: Settings) -> Path:
    """Make a finished run's export the active model: copy it to `<data_dir>/models/<run>/` and point to it."""
    from fer_core.calibration import CALIBRATION_FILE
    from fer_core.model_io import KERAS_FILE, TFLITE_FILE

    info = read_run(run.path)
    if info is None or info.status != "finished":
        status = "not a run" if info is None else info.status
        raise ValueError(f"run {run.name!r} is {status}; only a finished run can be promoted")
    export_dir = info.path / EXPORT_DIR
    missing = [f for f in (KERAS_FILE, TFLITE_FILE) if not (export_dir / f).is_file()]
    if missing:
        raise ValueError(
            f"run {run.name!r} has no complete export (missing {', '.join(missing)} in {export_dir}); "
            f"create it with: python -m training.export --model {info.path / BEST_MODEL_FILE} --out {export_dir}"
        )
    models_root = Path(settings.data_dir) / "models"
    models_root.mkdir(parents=True, exist_ok=True)
    dest = models_root / info.name
    staging = models_root / f".{info.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for src in (export_dir / KERAS_FILE, export_dir / TFLITE_FILE, export_dir / CALIBRATION_FILE,
                    export_dir / "report.json",
                    info.path / EVALUATION_FILE, info.path / CONFUSION_FILE, info.path / CONFIG_FILE):
            if src.is_file():
                shutil.copy2(src, staging / (src.name if src.name != CONFIG_FILE else "training_config.json"))
        write_json_atomic(staging / "promoted.json", {"run": info.name, "run_dir": str(info.path),
                                                      "promoted_at": time.time(),
                                                      "val_accuracy": info.state.get("val_accuracy")})
        # Swap in the new copy whole: a reader never sees a half-copied model directory.
        old = models_root / f".{info.name}.old-{os.getpid()}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pointer = Path(settings.active_model_pointer)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
    tmp.write_text(str(dest.resolve()) + "\n", encoding="utf-8")
    os.replace(tmp, pointer)
    return dest


# --- uploaded data sets -------------------------------------------------------------------


class DatasetZipError(ValueError):
    """An uploaded zip is unsafe or not a data set; the message says which and why."""


_ZIP_JUNK_DIRS = frozenset({"__MACOSX"})
_ZIP_CHUNK = 1 << 20


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's safe relative path, None for entries we skip, or DatasetZipError."""
    raw = info.filename
    if "\x00" in raw:
        raise DatasetZipError(f"zip member name contains a NUL byte: {raw!r}")
    name = raw.replace("\\", "/")  # zips made on Windows sometimes use backslashes
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetZipError(f"zip member {raw!r} is a symbolic link; links are not allowed in uploads")
    # No type bits (DOS-made zips, Python's writestr) means a plain file; any other type is refused.
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetZipError(f"zip member {raw!r} is not a regular file")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DatasetZipError(f"zip member {raw!r} has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise DatasetZipError(f"zip member {raw!r} points outside the folder (path traversal)")
    if info.flag_bits & 0x1:
        raise DatasetZipError(f"zip member {raw!r} is encrypted; upload an unencrypted zip")
    if not parts or info.is_dir() or name.endswith("/"):
        return None
    if parts[0] in _ZIP_JUNK_DIRS or parts[-1] == ".DS_Store" or parts[-1].startswith("._"):
        return None  # macOS metadata
    return PurePosixPath(*parts)


def extract_dataset_zip(
    zip_path: str | Path,
    dest: str | Path,
    *,
    max_members: int = 100_000,
    max_uncompressed_bytes: int = 2_000 * 1024 * 1024,
) -> Path:
    """Safely extract an uploaded data-set zip into `dest` (new or empty) and return the data-set root.

    Rejects path traversal, absolute paths, links and special files; zip bombs by member count
    and total size, checked on the declared sizes before extracting and on the bytes actually
    written while extracting (headers can lie); and a layout other than
    `[top folder/]train/<class>/<images>` with known class names. On any error nothing is left behind.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetZipError(f"destination {dest} is not an empty folder")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetZipError(f"{zip_path.name} is not a readable zip file ({exc})") from exc
    created = not dest.exists()
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise DatasetZipError(f"zip has {len(infos):,} members; the limit is {max_members:,}")
        planned: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        declared = 0
        for info in infos:
            rel = _member_path(info)
            if rel is None:
                continue
            declared += info.file_size
            if declared > max_uncompressed_bytes:
                raise DatasetZipError(
                    f"zip would unpack to more than {max_uncompressed_bytes / 2**20:,.0f} MB; the limit is "
                    f"{max_uncompressed_bytes / 2**20:,.0f} MB (possible zip bomb)"
                )
            planned.append((info, rel))
        if not planned:
            raise DatasetZipError("zip contains no files")
        dest.mkdir(parents=True, exist_ok=True)
        root_resolved = dest.resolve()
        try:
            written = 0
            for info, rel in planned:
                target = dest.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(root_resolved):
                    raise DatasetZipError(f"zip member {info.filename!r} points outside the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                member_written = 0
                with archive.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(_ZIP_CHUNK):
                        member_written += len(chunk)
                        written += len(chunk)
                        if member_written > info.file_size or written > max_uncompressed_bytes:
                            raise DatasetZipError(
                                f"zip member {info.filename!r} unpacks to more than declared or past the "
                                f"{max_uncompressed_bytes / 2**20:,.0f} MB limit (possible zip bomb)"
                            )
                        out.write(chunk)
            return _dataset_root(dest)
        except FileExistsError as exc:
            _remove_extracted(dest, created)
            raise DatasetZipError(f"zip holds the same file twice: {exc.filename}") from exc
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
            _remove_extracted(dest, created)
            raise DatasetZipError(f"zip is damaged or uses an unsupported feature ({exc})") from exc
        except BaseException:
            _remove_extracted(dest, created)
            raise


def _remove_extracted(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _dataset_root(extracted: Path) -> Path:
    """`extracted` or its single top folder, whichever holds train/<class>/ images; validated."""
    from fer_core.emotions import EMOTION_INDEX, EMOTIONS
    from training.data import IMAGE_SUFFIXES, SPLITS

    candidates = [extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())]
    root = next((c for c in candidates if (c / "train").is_dir()), None)
    if root is None:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in extracted.iterdir())
        raise DatasetZipError(
            "the zip must hold train/<class>/ image folders (optionally inside one top folder), "
            f"with classes {', '.join(EMOTIONS)}; found at its top: {', '.join(top[:10]) or 'nothing'}"
        )
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        class_dirs = [p for p in split_dir.iterdir() if p.is_dir()]
        unknown = sorted(p.name for p in class_dirs if p.name.lower() not in EMOTION_INDEX)
        if unknown:
            raise DatasetZipError(
                f"unknown class folders in {split}/: {', '.join(unknown)}; expected only: {', '.join(EMOTIONS)}"
            )
        loose = [p.name for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DatasetZipError(f"{len(loose)} images directly in {split}/; put them in {split}/<class>/ folders")
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for d in class_dirs for f in d.iterdir()):
            raise DatasetZipError(f"{split}/ holds no .png/.jpg images in class folders")
    return root


def zip_limits(settings: Settings) -> dict[str, int]:
    """extract_dataset_zip's limits from the app settings (max_zip_members, max_zip_uncompressed_mb)."""
    return {
        "max_members": int(settings.max_zip_members),
        "max_uncompressed_bytes": int(settings.max_zip_uncompressed_mb) * 1024 * 1024,
    }
