"""Launching, stopping and resuming training runs as detached processes (what the Training page drives).

`launch_run` writes the run's TrainConfig to its folder as config.json and starts
`python -m training.train --config <run>/config.json`; `resume_run` starts `--resume <run>`;
`stop_run` sends SIGTERM (the run ends after the current batch and stays resumable). Only one
run is active at a time: a second launch raises RunBusyError (no queue). Nothing here imports
Streamlit or TensorFlow.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from training import runs
from training.config import TrainConfig
from training.runs import RunInfo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_LOCK = ".launch.lock"


class RunBusyError(RuntimeError):
    """Another run is active. ClassMood trains one model at a time: two would halve each other's speed."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        super().__init__(
            f"run {run.name!r} is {run.status} (pid {run.launch_pid}); only one training run at a time. "
            f"Stop it or wait for it to finish first."
        )


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


def _refuse_if_busy(runs_dir: Path) -> None:
    busy = runs.active_run(runs_dir)
    if busy is not None:
        raise RunBusyError(busy)


def _spawn(run_dir: Path, command: list[str]) -> RunInfo:
    """Start `command` detached from this process (it outlives Streamlit reruns and restarts)."""
    (run_dir / runs.LAUNCH_FILE).unlink(missing_ok=True)
    # Written before the process exists, so a concurrent reader already sees the run as busy.
    runs.update_status(run_dir, "queued", pid=None, phase="starting", message="",
                       launch_command=" ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter would bury the run's own log
    with (run_dir / runs.LOG_FILE).open("ab") as log_file:
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
            runs.update_status(run_dir, "failed", message=f"could not start {command[0]}: {exc}")
            raise
    runs.write_json_atomic(run_dir / runs.LAUNCH_FILE,
                           {"pid": proc.pid, "command": command, "launched_at": time.time()})
    # Reap the child when it exits so it does not linger as a zombie of the Streamlit process.
    threading.Thread(target=proc.wait, name=f"reap-{run_dir.name}", daemon=True).start()
    info = runs.read_run(run_dir)
    assert info is not None
    return info


def launch_run(runs_dir: Path, config: TrainConfig, name: str | None = None,
               python: str = sys.executable) -> RunInfo:
    """Create run `name` (default: run-<timestamp>) with `config` and start training it, detached.

    `config` should come through training.config.resolve_inputs (absolute paths: the child runs in the
    project root). Raises RunBusyError if a run is active (we refuse rather than queue: a queue needs a
    scheduler process that outlives the page) and ValueError for a bad or existing run name.
    """
    runs_dir = Path(runs_dir).expanduser().resolve()
    name = runs.validate_run_name(name or runs.default_run_name())
    with _launch_lock(runs_dir):
        _refuse_if_busy(runs_dir)
        run_dir = runs.create_run(runs_dir, name, config)
        return _spawn(run_dir, [python, "-m", "training.train", "--config", str(run_dir / runs.CONFIG_FILE)])


def resume_point(run: RunInfo) -> int:
    """Epochs a resume continues after (0: it starts the training again from the beginning)."""
    floor = 0
    if "head" in run.state.get("phases_done", []) and run.config is not None:
        floor = min(run.config.head_epochs, run.config.epochs)
    return runs.completed_epochs(run.path, floor=floor)


def resume_run(run: RunInfo, python: str = sys.executable, *, epochs: int | None = None) -> RunInfo:
    """Continue a stopped, interrupted or failed run after its last completed epoch (detached).

    `epochs` sets a new total (e.g. to train a stopped run further than first planned).
    """
    info = runs.read_run(run.path)
    if info is None:
        raise ValueError(f"{run.path} is not a run directory")
    if info.status == "finished":
        raise ValueError(f"run {info.name!r} has finished; start a new run (fine-tune with init_from) instead")
    if info.config is None:
        raise ValueError(f"run {info.name!r} has no readable {runs.CONFIG_FILE}; launch a new run instead")
    if epochs is not None:
        info.config.with_changes(epochs=epochs)  # ConfigError (a ValueError) for a bad total, before starting
    runs_dir = info.path.parent
    with _launch_lock(runs_dir):
        _refuse_if_busy(runs_dir)
        extra = ["--epochs", str(epochs)] if epochs is not None else []
        return _spawn(info.path, [python, "-m", "training.train", "--resume", str(info.path), *extra])


def stop_run(run: RunInfo) -> bool:
    """Ask an active run to stop (SIGTERM; train.py ends after the current batch, status 'stopped').

    Returns False when there is nothing to stop. The last completed epoch stays resumable.
    """
    info = runs.read_run(run.path)
    if info is None or not info.is_active:
        return False
    pid = info.launch_pid
    if not runs.is_training_process(pid):
        return False
    launch = runs.read_json(info.path / runs.LAUNCH_FILE)
    if launch is not None:
        runs.write_json_atomic(info.path / runs.LAUNCH_FILE, {**launch, "stop_requested_at": time.time()})
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
