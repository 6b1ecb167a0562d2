"""Training page (trainer): launch, watch, stop, resume, evaluate and promote fine-tuning runs.

The form builds a `training.config.TrainConfig` (its bounds are the form's); `training.launch` runs it,
`training.promotion` promotes, `fer_core.registry` says which model is active. This page only collects
input and shows files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fer_core.access import training_locked_reason
from fer_core.emotions import EMOTIONS
from fer_core.registry import ModelRegistry
from pages import charts
from pages.formatting import escape_markdown as md
from pages.formatting import format_epoch, format_eta, viewer_timezone
from pages.ui import RESPONSIBLE_USE_SHORT, app_settings, role_unlocked
from training import launch, promotion, runs
from training.config import ConfigError, TrainConfig, bounds, option_help, resolve_inputs
from training.data import DatasetError
from training.dataset_zip import DatasetZipError, extract_dataset_zip

settings = app_settings()
registry = ModelRegistry.from_settings(settings)
TZ = viewer_timezone(st.context.timezone)

st.title("Training")

locked = training_locked_reason(settings, st.get_option("server.address"))
if locked:
    st.error(locked, icon=":material/lock:")
    st.stop()
if not role_unlocked("trainer"):
    st.stop()

st.caption(RESPONSIBLE_USE_SHORT)

RUNS_DIR = settings.runs_dir
DATASETS_DIR = settings.data_dir / "datasets"
SELECTED_KEY = "training_selected_run"
PENDING_KEY = "training_select_next"  # a run to select on the next rerun (set after launch/resume)
FLASH_KEY = "training_flash"
FOLDER, UPLOAD = "Folder on the server", "Upload a zip"
# The form's words for the options it sets (messages name them so).
LABELS = {"run_name": "Run name", "data": "Data set folder", "epochs": "Epochs", "batch_size": "Batch size",
          "lr": "Learning rate", "image_size": "Image size (px)", "augment": "Augmentation",
          "init_from": "Active model", "weights": "Start from"}
STATUS_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/sync:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/stop_circle:",
    "interrupted": ":material/warning:",
}


def flash(kind: str, message: str) -> None:
    """Show a message after the st.rerun() that follows an action."""
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    if entry := st.session_state.pop(FLASH_KEY, None):
        kind, message = entry
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(message)


def label_of(field: str) -> str:
    return LABELS.get(field, field.replace("_", " ").capitalize())


def number_input(column: Any, field: str, value: float, **options: Any) -> Any:
    """A number input whose limits are the TrainConfig field's (exclusive bounds are left to the config)."""
    low, high = bounds(field)
    inclusive = {type(rule).__name__ for rule in TrainConfig.model_fields[field].metadata}
    kind = type(value)  # Streamlit wants the value and its limits of one type
    return column.number_input(
        label_of(field), value=value, help=option_help(field),
        min_value=kind(low) if low is not None and "Ge" in inclusive else None,
        max_value=kind(high) if high is not None and "Le" in inclusive else None, **options,
    )


def save_upload(upload: Any) -> Path:
    """Spool the uploaded zip to disk: zipfile needs a seekable file, and uploads can be large."""
    DATASETS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=DATASETS_DIR, prefix=".upload-", suffix=".zip", delete=False) as handle:
        for chunk in iter(lambda: upload.read(1 << 20), b""):
            handle.write(chunk)
        return Path(handle.name)


def extract_upload(upload: Any, name: str) -> Path:
    zip_path = save_upload(upload)
    try:
        return extract_dataset_zip(
            zip_path,
            DATASETS_DIR / name,
            max_members=settings.max_zip_members,
            max_uncompressed_bytes=settings.max_zip_uncompressed_mb * 1024 * 1024,
        )
    finally:
        zip_path.unlink(missing_ok=True)


# --- launch form ---------------------------------------------------------------------------------


def launch_form(busy: runs.RunInfo | None) -> None:
    if busy is not None:
        st.info(
            f"Run {md(busy.name)} is {busy.status}. ClassMood trains one model at a time: "
            "stop it or wait for it to finish before launching another.",
            icon=":material/hourglass_top:",
        )
    active = registry.active()
    # Outside the form: choosing the source swaps the input below at once.
    source = st.radio(
        "Data set", [FOLDER, UPLOAD], horizontal=True, key="launch_source",
        help="Kaggle FER2013 layout: train/<emotion>/*.png and val/<emotion>/*.png (a folder may also hold "
        "fer2013.csv).",
    )
    data_path, upload = "", None
    with st.form("launch_run"):
        run_name = st.text_input("Run name (optional)", placeholder="run-<date>-<time>", max_chars=64)
        if source == FOLDER:
            data_path = st.text_input("Data set folder on the server", placeholder="/path/to/fer2013")
        else:
            upload = st.file_uploader(
                "Data set zip", type=["zip"], max_upload_size=settings.max_upload_mb,
                help="Extracted into datasets/<run name> in the data folder; links, absolute paths and zip "
                "bombs are refused.",
            )
        col1, col2, col3, col4 = st.columns(4)
        epochs = number_input(col1, "epochs", 10, step=1)
        batch_size = number_input(col2, "batch_size", 64, step=1)
        # Fine-tuning wants a gentler rate than training from scratch (train.py's default 1e-3).
        lr = number_input(col3, "lr", 1e-4 if active.available else 1e-3, format="%.6f", step=1e-5)
        image_size = number_input(col4, "image_size", 75, step=1)
        starts = ["Active model (fine-tune)", "From scratch"] if active.available else ["From scratch"]
        start = st.radio("Start from", starts, horizontal=True, key="launch_start",
                         help=f"Active model: {active.path}" if active.available
                         else "No active model is available yet, so runs start from scratch.")
        augment = st.checkbox("Augmentation (random flips, shifts, zoom, contrast)", value=True)
        submitted = st.form_submit_button("Launch run", type="primary", icon=":material/rocket_launch:")
    if not submitted:
        return

    if busy is not None:
        st.error(f"Not launched: run {md(busy.name)} is still {busy.status}. Only one training run at a time.")
        return
    name = run_name.strip() or runs.default_run_name()
    try:
        runs.validate_run_name(name)
        if source == UPLOAD:
            if upload is None:
                st.error("Choose a zip file to upload (or switch the data set to a folder).")
                return
            with st.spinner("Checking and extracting the zip…"):
                data = extract_upload(upload, name)
        else:
            if not data_path.strip():
                st.error("Enter the data set folder (or switch the data set to a zip upload).")
                return
            data = Path(data_path.strip()).expanduser()
            if not data.exists():
                st.error(f"Data set folder not found: {md(data)}")
                return
        options: dict[str, Any] = {"data": data, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                                   "image_size": image_size, "augment": "standard" if augment else "none"}
        if start.startswith("Active"):
            options["init_from"] = active.path
        else:
            options["weights"] = "none"
        config = resolve_inputs(TrainConfig.from_options(options))
        info = launch.launch_run(RUNS_DIR, config, name)
    except ConfigError as exc:
        st.error(f"Not launched: {md(exc.describe(label_of))}")
        return
    except launch.RunBusyError as exc:
        st.error(f"Not launched: {md(exc)}")
        return
    except (ValueError, DatasetError, DatasetZipError, OSError) as exc:
        st.error(f"Not launched: {md(exc)}")
        return
    flash("success", f"Run {md(info.name)} launched.")
    st.session_state[PENDING_KEY] = info.name
    st.rerun()


# --- runs list and the selected run --------------------------------------------------------------


def runs_table(all_runs: list[runs.RunInfo]) -> pd.DataFrame:
    rows = []
    for run in all_runs:
        epochs = run.config.epochs if run.config else None
        val = run.state.get("val_accuracy")
        rows.append(
            {
                "Run": run.name,
                "Status": run.status,
                "Epoch": f"{run.state.get('epoch', 0)}/{epochs}" if epochs else "–",
                "Val accuracy": None if val is None else float(val),
                "Started": format_epoch(run.state.get("started_at") or run.state.get("created_at"), TZ),
                "Data set": Path(str(run.config.data)).name if run.config else "–",
                "Message": str(run.state.get("message") or ""),
            }
        )
    return pd.DataFrame(rows)


def progress_of(records: list[dict[str, Any]]) -> tuple[float, float | None, str]:
    """Fraction done, ETA in seconds and a caption, from the newest progress line."""
    if not records:
        return 0.0, None, "Waiting for the first batch (loading data, building the model)…"
    last = records[-1]
    epochs = max(1, int(last.get("epochs") or 1))
    steps = max(1, int(last.get("steps") or 1))
    done = (int(last.get("epoch") or 1) - 1 + int(last.get("step") or 0) / steps) / epochs
    return min(max(done, 0.0), 1.0), last.get("eta_s"), (
        f"Epoch {last.get('epoch')}/{epochs}, step {last.get('step')}/{steps}"
    )


def run_status_panel(run_dir: Path, was_active: bool) -> None:
    """Status, progress, curves, log and Stop. Re-run every 2 s by a fragment while the run is active."""
    run = runs.read_run(run_dir)
    if run is None:
        st.warning("This run's folder is gone.")
        return
    if was_active and not run.is_active:
        st.rerun()  # the run just ended: redraw the whole page (evaluation, Resume, Promote)
    icon = STATUS_ICONS.get(run.status, "")
    st.markdown(f"**Status:** {icon} `{run.status}`")
    if message := run.state.get("message"):
        st.text(str(message))
    records = runs.read_progress(run.path)
    fraction, eta, caption = progress_of(records)
    if run.is_active:
        st.progress(fraction, text=f"{caption} · ETA {format_eta(eta)}")
    elif records:
        st.progress(fraction, text=caption)
    st.altair_chart(charts.training_curves_chart(records), width="stretch")
    with st.expander("Last log lines", expanded=run.status in ("failed", "interrupted")):
        st.code("\n".join(runs.tail_log(run.path, 30)) or "(no log yet)", language=None)
    if run.is_active and st.button("Stop run", icon=":material/stop:", key=f"stop_{run.name}"):
        if launch.stop_run(run):
            st.info("Stop requested: the run ends after the current batch; its last full epoch stays resumable.")
        else:
            st.warning("Nothing to stop: the run is not active any more.")


def evaluation_panel(run: runs.RunInfo) -> None:
    """training.evaluate's evaluation.json: headline scores, confusion heatmap, per-class table."""
    report = runs.read_json(run.path / runs.EVALUATION_FILE)
    if report is None:
        st.info("No evaluation for this run (it was launched without export, or evaluation failed: see the log).")
        return
    st.subheader("Evaluation on the validation split")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{float(report.get('accuracy', 0.0)):.1%}")
    c2.metric("Macro F1", f"{float(report.get('macro_f1', 0.0)):.3f}")
    c3.metric("Balanced accuracy", f"{float(report.get('balanced_accuracy', 0.0)):.1%}")
    c4.metric("Images", f"{int(report.get('n_images', 0)):,}")
    classes = list(report.get("confusion_labels") or EMOTIONS)
    scored = list(report.get("classes_scored") or classes)
    left, right = st.columns(2)
    if report.get("confusion_matrix"):
        left.altair_chart(
            charts.confusion_chart(report["confusion_matrix"], classes, true_classes=scored), width="content"
        )
    if per_class := report.get("per_class"):
        table = pd.DataFrame.from_dict(per_class, orient="index").reindex(scored)
        table.index.name = "emotion"
        right.dataframe(
            table,
            width="stretch",
            column_config={
                "precision": st.column_config.NumberColumn("Precision", format="%.3f"),
                "recall": st.column_config.NumberColumn("Recall", format="%.3f"),
                "f1": st.column_config.NumberColumn("F1", format="%.3f"),
                "support": st.column_config.NumberColumn("Images", format="%d"),
            },
        )
    if absent := report.get("classes_absent"):
        st.caption(
            f"Not scored (no validation images): {', '.join(absent)}. Macro F1 covers the scored classes only."
        )


def promote_panel(run: runs.RunInfo) -> None:
    st.subheader("Promote")
    st.write("Make this run's exported model the one the Live page uses (new sessions pick it up).")
    confirmed = st.checkbox(f"Yes, make run {md(run.name)} the active model", key=f"promote_confirm_{run.name}")
    if st.button("Promote", type="primary", disabled=not confirmed, key=f"promote_{run.name}",
                 icon=":material/upgrade:"):
        try:
            entry = promotion.promote_run(run, registry)
        except (ValueError, OSError) as exc:
            st.error(f"Not promoted: {md(exc)}")
            return
        flash("success", f"Run {md(run.name)} is now the active model ({md(entry.path)}).")
        st.rerun()


def selected_run_section(all_runs: list[runs.RunInfo]) -> None:
    names = [r.name for r in all_runs]
    if (pending := st.session_state.pop(PENDING_KEY, None)) in names:
        st.session_state[SELECTED_KEY] = pending
    if st.session_state.get(SELECTED_KEY) not in names:
        active = next((r.name for r in all_runs if r.is_active), names[0])
        st.session_state[SELECTED_KEY] = active
    name = st.selectbox("Run", names, key=SELECTED_KEY)
    run = next(r for r in all_runs if r.name == name)

    # Poll only while the run can change; a finished run costs nothing to display.
    panel = st.fragment(run_status_panel, run_every=2 if run.is_active else None)
    panel(run.path, run.is_active)

    if run.status in runs.RESUMABLE and st.button("Resume run", icon=":material/play_arrow:",
                                                  key=f"resume_{run.name}"):
        try:
            info = launch.resume_run(run)
        except (launch.RunBusyError, ValueError, OSError) as exc:
            st.error(f"Not resumed: {md(exc)}")
        else:
            flash("success", f"Run {md(info.name)} resumed from its last complete epoch.")
            st.session_state[PENDING_KEY] = info.name
            st.rerun()
    if run.status == "finished":
        evaluation_panel(run)
        promote_panel(run)


# --- page --------------------------------------------------------------------------------------------

show_flash()
active_model = registry.active()
st.caption(f"Active model: {md(active_model.path)}" + ("" if active_model.available else " (not available yet)"))
all_runs = runs.list_runs(RUNS_DIR)
busy = next((r for r in all_runs if r.is_active), None)

with st.expander("New run", expanded=not all_runs, icon=":material/add:"):
    launch_form(busy)

st.subheader("Runs")
if not all_runs:
    st.info("No training runs yet. Open **New run** above to fine-tune the emotion model on a data set.")
else:
    st.dataframe(
        runs_table(all_runs),
        hide_index=True,
        width="stretch",
        column_config={"Val accuracy": st.column_config.NumberColumn(format="percent")},
    )
    selected_run_section(all_runs)
