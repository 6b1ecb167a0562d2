"""What the Training page says about a run, in the page's words: pure functions, no Streamlit calls."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.runs import RunInfo

PHASE_TEXT = {
    "starting": "Starting the training process…",
    "building the model": "Building the model…",
    "loading data": "Loading the data set…",
    "evaluating": "Evaluating the best model on the validation split…",
    "exporting": "Exporting the model (Keras and int8 LiteRT)…",
    "calibrating": "Calibrating its confidences on the validation split…",
}


@dataclass(frozen=True)
class Progress:
    fraction: float  # of the whole run's training, 0..1
    text: str
    eta_s: float | None  # None: no estimate (not training, or no line from this process yet)
    training: bool  # in the training phase: the text has an epoch and step


def phase_of(run: RunInfo) -> str:
    """What an active run is doing; "starting" until the training process says otherwise."""
    if run.status == "queued":
        return "starting"
    return str(run.state.get("phase") or "starting")


def progress_of(run: RunInfo, records: list[dict[str, Any]]) -> Progress:
    """The progress bar of a run from its status and progress lines.

    Step and ETA come only from lines this process wrote (a resumed run's old lines are stale) and only
    while it trains; in the other phases the bar names the phase.
    """
    epochs = max(1, int(run.config.epochs if run.config else (records[-1].get("epochs") if records else 1) or 1))
    started = float(run.state.get("started_at") or 0.0)
    current = [r for r in records if float(r.get("time") or 0.0) >= started] if run.is_active else records
    last = current[-1] if current else None
    done = 0.0
    if last is not None:
        steps = max(1, int(last.get("steps") or 1))
        done = (int(last.get("epoch") or 1) - 1 + int(last.get("step") or 0) / steps) / epochs
    elif records:  # before this process's first line: where the kept lines end
        done = sum(1 for r in records if r.get("kind") == "epoch") / epochs
    done = min(max(done, 0.0), 1.0)
    phase = phase_of(run) if run.is_active else None
    if phase in PHASE_TEXT:
        fraction = 1.0 if phase in ("evaluating", "exporting", "calibrating") else done
        return Progress(fraction, PHASE_TEXT[phase], None, training=False)
    if last is None:
        text = "Training: waiting for the first batch…" if run.is_active else "No progress logged"
        return Progress(done, text, None, training=False)
    steps = max(1, int(last.get("steps") or 1))
    text = f"Epoch {last.get('epoch')}/{epochs}, step {last.get('step')}/{steps}"
    eta = last.get("eta_s") if run.is_active else None
    return Progress(done, text, None if eta is None else float(eta), training=True)


def epochs_text(run: RunInfo) -> str:
    if run.config is None:
        return "–"
    return f"{int(run.state.get('epoch') or 0)}/{run.config.epochs}"


def percent_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.1%}"


def resume_words(completed: int, total: int | None) -> str:
    """What Resume does for a run that has completed `completed` epochs."""
    if completed <= 0:
        return "Resume starts its training again from the beginning (no epoch had completed)"
    return f"Resume continues after epoch {completed}" + (f" of {total}" if total else "")


def status_text(run: RunInfo, completed: int) -> str:
    """One line on what happened to a run, in the page's words (the CLI's are in its log)."""
    total = run.config.epochs if run.config else None
    if run.is_active:
        return PHASE_TEXT.get(phase_of(run), "Training…").rstrip("…")
    if run.status == "stopped":
        return f"Stopped on request. {resume_words(completed, total)}."
    if run.status == "interrupted":
        return ("The training process ended without finishing (killed, or the machine restarted). "
                f"{resume_words(completed, total)}.")
    if run.status == "finished":
        return f"Finished: validation accuracy {percent_text(run.state.get('val_accuracy'))}."
    return str(run.state.get("message") or "Failed; see the log.")


def runs_rows(all_runs: list[RunInfo], completed: dict[str, int], started: dict[str, str]) -> list[dict[str, str]]:
    """The runs table: text cells only, so a missing value reads "–", never "None"."""
    rows = []
    for run in all_runs:
        status = phase_of(run) if run.is_active else run.status
        rows.append({
            "Run": run.name,
            "Status": status,
            "Epoch": epochs_text(run),
            "Val accuracy": percent_text(run.state.get("val_accuracy")),
            "Started": started.get(run.name, "–"),
            "Data set": Path(str(run.config.data)).name if run.config else "–",
            "Message": status_text(run, completed.get(run.name, 0)),
        })
    return rows
