"""Training page (trainer): launch, watch, stop, resume, evaluate and promote fine-tuning runs; restore models.

The form builds a `training.config.TrainConfig` (its bounds are the form's); `training.launch` runs it,
`training.promotion` compares and promotes, `fer_core.registry` says which model is active. This page
only collects input and shows files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fer_core.access import training_locked_reason
from fer_core.emotions import EMOTIONS
from fer_core.registry import ModelEntry, ModelRegistry
from pages import charts
from pages.formatting import escape_markdown as md
from pages.formatting import format_epoch, format_eta, viewer_timezone
from pages.training_view import progress_of, resume_words, runs_rows, status_text
from pages.ui import RESPONSIBLE_USE_SHORT, app_settings, role_unlocked
from training import launch, promotion, runs
from training.config import ConfigError, TrainConfig, bounds, option_help, resolve_inputs
from training.data import DatasetError
from training.dataset_zip import DatasetZipError, extract_dataset_zip

settings = app_settings()
if not role_unlocked("app"):  # also here: a page opened by its own URL may run without dashboard.py
    st.stop()
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
LOG_LINES = 40
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
            source_name=upload.name,
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


def runs_table() -> None:
    """All runs, refreshed every 2 s while one is active (so its status and epoch are current)."""
    all_runs = runs.list_runs(RUNS_DIR)
    completed = {run.name: launch.resume_point(run) for run in all_runs if run.status in runs.RESUMABLE}
    started = {run.name: format_epoch(run.state.get("started_at") or run.state.get("created_at"), TZ)
               for run in all_runs}
    st.dataframe(pd.DataFrame(runs_rows(all_runs, completed, started)), hide_index=True, width="stretch")


def run_status_panel(run_dir: Path, was_active: bool) -> None:
    """Status, progress, curves, log and Stop. Re-run every 2 s by a fragment while the run is active."""
    run = runs.read_run(run_dir)
    if run is None:
        st.warning("This run's folder is gone.")
        return
    if was_active and not run.is_active:
        st.rerun()  # the run just ended: redraw the whole page (evaluation, Resume, Promote)
    completed = launch.resume_point(run) if run.status in runs.RESUMABLE else 0
    icon = STATUS_ICONS.get(run.status, "")
    st.markdown(f"**Status:** {icon} `{run.status}` · {md(status_text(run, completed))}")
    records = runs.read_progress(run.path)
    progress = progress_of(run, records)
    if run.is_active:
        eta = f" · ETA {format_eta(progress.eta_s)}" if progress.training else ""
        st.progress(progress.fraction, text=f"{progress.text}{eta}")
    elif records:
        st.progress(progress.fraction, text=progress.text)
    st.altair_chart(charts.training_curves_chart(records), width="stretch")
    with st.expander("Log", expanded=run.status in ("failed", "interrupted")):
        lines = runs.readable_log(runs.tail_log(run.path, 400))[-LOG_LINES:]
        st.code("\n".join(lines) or "(no log yet)", language=None, wrap_lines=True)
        log_file = run.path / runs.LOG_FILE
        if log_file.is_file():
            st.download_button("Download the full log", log_file.read_bytes(), file_name=f"{run.name}-train.log",
                               mime="text/plain", icon=":material/download:", key=f"log_{run.name}")
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


def comparison_table(comparison: promotion.Comparison) -> pd.DataFrame:
    candidate, active = comparison.candidate, comparison.active
    assert candidate is not None

    def cells(name: str, value: Any, fmt: str) -> list[str]:
        other = None if active is None else getattr(active, name)
        shown = [format(value, fmt) if value is not None else "–", format(other, fmt) if other is not None else "–"]
        if value is None or other is None:
            return [*shown, "–"]
        scale, unit = (100, " points") if fmt.endswith("%") else (1, "")
        return [*shown, f"{scale * (value - other):+.{1 if scale == 100 else 3}f}{unit}"]

    rows = {"Accuracy": cells("accuracy", candidate.accuracy, ".1%"),
            "Macro-F1": cells("macro_f1", candidate.macro_f1, ".3f"),
            "Calibration error (ECE, lower is better)": cells("ece", candidate.ece, ".3f")}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["This run", f"Active: {comparison.active_model.name}", "Difference"])


def promote_panel(run: runs.RunInfo) -> None:
    st.subheader("Promote")
    if promotion.is_active(run, registry):
        st.success("This run's model is the active model: the Live page uses it.", icon=":material/check_circle:")
        return
    st.write("Make this run's exported model the one the Live page uses (new sessions pick it up). "
             "Every earlier model is kept and can be made active again below.")
    comparison = promotion.compare_with_active(run, registry)
    if comparison.candidate is None:
        st.info("This run has no evaluation to compare with the active model.")
    else:
        data = f"{Path(str(comparison.candidate.data)).name}/{comparison.candidate.split}"
        st.markdown(f"**This run beside the active model, on the same validation split** ({md(data)}, "
                    f"{comparison.candidate.n_images or 0:,} images)")
        st.table(comparison_table(comparison))
        if comparison.active is None and comparison.active_model.available:
            st.info(f"The active model's recorded figures are not on {md(data)}. Measure it there to compare.")
            if st.button("Measure the active model on this split", key=f"measure_{run.name}",
                         icon=":material/straighten:"):
                with st.spinner(f"Evaluating {md(comparison.active_model.name)} on {md(data)}…"):
                    try:
                        promotion.measure_active(run, registry)
                    except (ValueError, OSError) as exc:
                        st.error(f"Not measured: {md(exc)}")
                        return
                st.rerun()
    worse = comparison.worse
    if worse:
        st.warning(f"This run is worse than the active model ({md(comparison.active_model.name)}) on "
                   f"{', '.join(worse)}. Promoting it would make the Live page's labels less reliable.",
                   icon=":material/warning:")
    if registry.model_path is not None:
        st.warning("CLASSMOOD_MODEL_PATH is set, so the app uses that model whatever is promoted here.")
    label = (f"Yes, make run {md(run.name)} the active model" + (" although it is worse" if worse else ""))
    confirmed = st.checkbox(label, key=f"promote_confirm_{run.name}")
    if st.button("Promote", type="primary", disabled=not confirmed, key=f"promote_{run.name}",
                 icon=":material/upgrade:"):
        try:
            entry = promotion.promote_run(run, registry)
        except (ValueError, OSError) as exc:
            st.error(f"Not promoted: {md(exc)}")
            return
        flash("success", f"Run {md(run.name)} is now the active model ({md(entry.path)}). "
                         f"The model before it stays under Models, one click away.")
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
        completed = launch.resume_point(run)
        try:
            info = launch.resume_run(run)
        except (launch.RunBusyError, ValueError, OSError) as exc:
            st.error(f"Not resumed: {md(exc)}")
        else:
            total = run.config.epochs if run.config else None
            flash("success", f"Run {md(info.name)} is starting again. {resume_words(completed, total)}.")
            st.session_state[PENDING_KEY] = info.name
            st.rerun()
    if run.status == "finished":
        evaluation_panel(run)
        promote_panel(run)


# --- models: the active one and every earlier one --------------------------------------------------------


def model_row(entry: ModelEntry, active: ModelEntry) -> dict[str, str]:
    figures = promotion.recorded_figures(entry.path) if entry.available else None
    when = format_epoch(entry.promoted_at, TZ) if entry.promoted_at else "–"
    return {"Model": entry.name, "Kind": entry.kind, "Promoted": when,
            "Val accuracy": f"{figures.accuracy:.1%}" if figures else "–",
            "Active": "yes" if entry.path.resolve() == active.path.resolve() else ""}


def models_section() -> None:
    st.subheader("Models")
    active = registry.active()
    promoted_active = registry.promoted_active()
    entries = [entry for entry in registry.models() if entry.available]
    if not entries:
        st.info("No model is available yet: the shipped model is missing and nothing has been promoted.")
        return
    st.dataframe(pd.DataFrame([model_row(entry, active) for entry in entries]), hide_index=True, width="stretch")
    if active.kind == "configured":
        st.warning(f"CLASSMOOD_MODEL_PATH sets the active model ({md(active.path)}); restoring here takes effect "
                   "once it is unset.")
    for entry in entries:
        if entry.path.resolve() == promoted_active.path.resolve():
            continue
        what = "the shipped model" if entry.kind == "shipped" else f"model {entry.name}"
        if st.button(f"Make {what} active", key=f"restore_{entry.name}_{entry.kind}", icon=":material/restore:"):
            try:
                registry.activate(entry)
            except (ValueError, OSError) as exc:
                st.error(f"Not restored: {md(exc)}")
                return
            flash("success", f"{what[0].upper()}{what[1:]} is the active model again ({md(entry.path)}).")
            st.rerun()


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
    st.fragment(runs_table, run_every=2 if busy is not None else None)()
    selected_run_section(all_runs)

models_section()
