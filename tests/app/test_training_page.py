"""AppTests of the Training page: exposure lock, password, launching, runs, evaluation, promotion."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fer_core.registry import ModelRegistry
from fer_core.settings import Settings
from tests.app.conftest import chart_specs, make_fake_run, page_test, texts, zip_folder
from tests.conftest import write_folder_dataset
from training import launch, runs

pytestmark = pytest.mark.app


def fill_launch_form(at: AppTest, **values: object) -> None:
    labels = {
        "run_name": "Run name (optional)", "data": "Data set folder on the server", "epochs": "Epochs",
        "batch_size": "Batch size", "lr": "Learning rate", "image_size": "Image size (px)",
    }
    for key, value in values.items():
        label = labels[key]
        widget = next(w for w in [*at.text_input, *at.number_input] if w.label == label)
        widget.set_value(value)


def submit_launch(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Launch run").click().run()


def test_renders_empty_state_and_launch_form(app_env: Settings, server_address: Callable) -> None:
    at = page_test("model_training").run()
    assert not at.exception
    assert at.title[0].value == "Training"
    assert "No training runs yet" in texts(at.info)
    assert [b.label for b in at.button] == ["Launch run"]
    # No active model in a fresh data dir: "from scratch" is the only start.
    start = next(r for r in at.radio if r.label == "Start from")
    assert start.options == ["From scratch"]


def test_locked_on_a_network_address_without_passwords(app_env: Settings, server_address: Callable) -> None:
    server_address("0.0.0.0")
    at = page_test("model_training").run()
    assert not at.exception
    assert "Training page is locked" in texts(at.error)
    assert not at.button  # no form, no runs
    assert not at.get("form")


def test_network_address_with_trainer_password_asks_for_it(
    app_env: Settings, server_address: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_core.settings import get_settings

    monkeypatch.setenv("CLASSMOOD_TRAINER_PASSWORD", "s3cret-train")
    get_settings.cache_clear()
    server_address("0.0.0.0")
    at = page_test("model_training").run()
    assert not at.error  # not locked: a password protects it
    assert [b.label for b in at.button] == ["Unlock"]

    at.text_input(key="password_trainer").set_value("wrong")
    at = at.button[0].click().run()
    assert "Wrong password" in texts(at.error)
    assert "Launch run" not in [b.label for b in at.button]

    at.text_input(key="password_trainer").set_value("s3cret-train")
    at = at.button[0].click().run()
    assert not at.exception
    assert "Launch run" in [b.label for b in at.button]


def test_launch_rejects_missing_folder_and_bad_values(app_env: Settings, server_address: Callable) -> None:
    at = page_test("model_training").run()
    at = submit_launch(at)
    assert "Enter the data set folder" in texts(at.error)

    fill_launch_form(at, data=str(app_env.data_dir / "nowhere"))
    at = submit_launch(at)
    assert "Data set folder not found" in texts(at.error)

    fill_launch_form(at, data=str(app_env.data_dir), run_name="../escape")
    at = submit_launch(at)
    assert "invalid run name" in texts(at.error)
    assert runs.list_runs(app_env.runs_dir) == []


def test_zip_with_path_traversal_is_refused(app_env: Settings, server_address: Callable, tmp_path: Path) -> None:
    import stat
    import zipfile

    evil = tmp_path / "evil.zip"
    member = zipfile.ZipInfo("../../outside.txt")
    member.external_attr = (stat.S_IFREG | 0o644) << 16  # a regular file, as `zip` writes it
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(member, "x")
    at = page_test("model_training").run()
    at.radio(key="launch_source").set_value("Upload a zip")
    at.run()
    at.file_uploader[0].upload("evil.zip", evil.read_bytes(), "application/zip")
    at = submit_launch(at)
    assert not at.exception
    assert "path traversal" in texts(at.error)
    assert not (tmp_path / "outside.txt").exists()
    assert runs.list_runs(app_env.runs_dir) == []


def test_second_launch_while_one_is_active_is_refused(app_env: Settings, server_address: Callable) -> None:
    # 'queued' with a fresh timestamp counts as active (training.runs.read_run).
    make_fake_run(app_env.runs_dir, "busy-run", "queued")
    at = page_test("model_training").run()
    assert "busy-run is queued" in texts(at.info)
    fill_launch_form(at, data=str(write_folder_dataset(app_env.data_dir / "ds", {"train": 1, "val": 1})))
    at = submit_launch(at)
    assert "Not launched" in texts(at.error)
    assert "Only one training run at a time" in texts(at.error)
    assert [r.name for r in runs.list_runs(app_env.runs_dir)] == ["busy-run"]


def test_runs_list_statuses_curves_and_resume_button(app_env: Settings, server_address: Callable) -> None:
    now = time.time()
    make_fake_run(app_env.runs_dir, "old-finished", "finished", created_at=now - 300, evaluated=True)
    make_fake_run(app_env.runs_dir, "was-stopped", "stopped", created_at=now - 200)
    make_fake_run(app_env.runs_dir, "broke", "failed", created_at=now - 100)
    at = page_test("model_training").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["Run"], table["Status"], strict=True)) == {
        "old-finished": "finished", "was-stopped": "stopped", "broke": "failed",
    }
    # Newest first, and the newest run is selected by default.
    assert at.selectbox(key="training_selected_run").value == "broke"
    assert "Resume run" not in [b.label for b in at.button]  # failed is not offered a resume

    at.selectbox(key="training_selected_run").set_value("was-stopped").run()
    assert "Resume run" in [b.label for b in at.button]
    assert "Stop run" not in [b.label for b in at.button]
    specs = chart_specs(at)
    assert any('"Loss"' in s and '"Accuracy"' in s for s in specs)  # the training curves
    assert "last line of was-stopped" in texts(at.code)


def test_finished_run_shows_evaluation_and_promotes_after_confirmation(
    app_env: Settings, server_address: Callable
) -> None:
    make_fake_run(app_env.runs_dir, "good-run", "finished", evaluated=True, exported=True)
    at = page_test("model_training").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "30"
    assert metrics["Accuracy"].endswith("%")
    assert any('"Predicted"' in s and '"True"' in s for s in chart_specs(at))  # confusion heatmap
    per_class = at.dataframe[1].value
    assert list(per_class.index) == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    assert "surprise" in texts(at.caption)  # absent from val: said, not scored

    promote = next(b for b in at.button if b.label == "Promote")
    assert promote.disabled  # nothing happens without the confirmation
    at.checkbox(key="promote_confirm_good-run").check().run()
    at = next(b for b in at.button if b.label == "Promote").click().run()
    assert not at.exception
    assert "now the active model" in texts(at.success)
    promoted = app_env.data_dir / "models" / "good-run"
    assert ModelRegistry.from_settings(app_env).active().path == promoted.resolve()
    assert (promoted / "model.keras").is_file()
    # The form now offers fine-tuning from the promoted model.
    assert "Active model (fine-tune)" in next(r for r in at.radio if r.label == "Start from").options


@pytest.mark.slow
def test_launch_tiny_run_from_zip_then_promote(
    app_env: Settings, server_address: Callable, tmp_path: Path
) -> None:
    """A real 1-epoch run on a generated data set, launched from an uploaded zip."""
    data = write_folder_dataset(tmp_path / "fer-mini", {"train": 24, "val": 6})
    payload = zip_folder(data, tmp_path / "fer-mini.zip")
    at = page_test("model_training").run()
    at.radio(key="launch_source").set_value("Upload a zip")
    at.run()
    at.file_uploader[0].upload("fer-mini.zip", payload, "application/zip")
    fill_launch_form(at, run_name="tiny", epochs=1, batch_size=16, lr=1e-3, image_size=75)
    at = submit_launch(at)
    assert not at.exception
    assert "Run tiny launched" in texts(at.success)
    assert (app_env.data_dir / "datasets" / "tiny" / "fer-mini" / "train" / "happy").is_dir()
    run_dir = app_env.runs_dir / "tiny"
    assert runs.read_run(run_dir).is_active

    # A second launch meanwhile is refused.
    fill_launch_form(at, run_name="tiny-2")
    at.radio(key="launch_source").set_value("Folder on the server")
    at.run()
    fill_launch_form(at, data=str(data), run_name="tiny-2")
    at = submit_launch(at)
    assert "Not launched" in texts(at.error)
    assert not (app_env.runs_dir / "tiny-2").exists()

    deadline = time.monotonic() + 1200
    while runs.read_run(run_dir).is_active and time.monotonic() < deadline:
        time.sleep(5)
    info = runs.read_run(run_dir)
    assert info.status == "finished", (info.state, runs.tail_log(run_dir, 40))

    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.loc[table["Run"] == "tiny", "Status"].item() == "finished"
    assert any('"Loss"' in s for s in chart_specs(at))
    assert runs.read_progress(run_dir), "the run logged progress"
    assert {m.label for m in at.metric} >= {"Accuracy", "Macro F1"}
    at.checkbox(key="promote_confirm_tiny").check().run()
    at = next(b for b in at.button if b.label == "Promote").click().run()
    assert "now the active model" in texts(at.success)
    assert ModelRegistry.from_settings(app_env).active().path == (app_env.data_dir / "models" / "tiny").resolve()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(2)


@pytest.mark.slow
def test_stop_and_resume_a_running_run(app_env: Settings, server_address: Callable, tmp_path: Path) -> None:
    """Stop ends a real run after the current batch; Resume starts it again from the page."""
    data = write_folder_dataset(tmp_path / "fer-mini", {"train": 24, "val": 4})
    at = page_test("model_training").run()
    fill_launch_form(at, data=str(data), run_name="stoppable", epochs=20, batch_size=8, image_size=75)
    at = submit_launch(at)
    assert "Run stoppable launched" in texts(at.success)
    run_dir = app_env.runs_dir / "stoppable"
    wait_for(lambda: bool(runs.read_progress(run_dir)), 900, "the first progress line")

    at.run()
    assert next(p for p in at.get("progress")).proto.text.startswith("Epoch")  # progress bar with ETA
    assert "ETA" in next(p for p in at.get("progress")).proto.text
    at = at.button(key="stop_stoppable").click().run()
    assert "Stop requested" in texts(at.info)
    wait_for(lambda: not runs.read_run(run_dir).is_active, 300, "the run to stop")
    assert runs.read_run(run_dir).status == "stopped"

    at.run()
    assert at.dataframe[0].value["Status"].tolist() == ["stopped"]
    at = at.button(key="resume_stoppable").click().run()
    assert not at.exception
    assert re.search(r"is starting again\. Resume (continues after epoch \d+ of 20|starts its training again from the "
                     r"beginning \(no epoch had completed\))\.", texts(at.success))
    assert runs.read_run(run_dir).is_active
    # Stop it again at once: the test only needs to see that Resume started it.
    wait_for(lambda: launch.stop_run(runs.read_run(run_dir)) or not runs.read_run(run_dir).is_active, 120,
             "the resumed run to accept a stop")
    wait_for(lambda: not runs.read_run(run_dir).is_active, 600, "the resumed run to stop")


# --- what the page says about a run (issue 28: Training page status) ------------------------------------


def test_an_active_run_shows_its_phase_in_the_table_and_the_bar_and_never_none(
    app_env: Settings, server_address: Callable, training_pid: int
) -> None:
    # Alive and exporting: the table and the bar name the phase, with no stale step or ETA.
    make_fake_run(app_env.runs_dir, "busy", "running", epochs=2, pid=training_pid, phase="exporting",
                  val_accuracy=None, started_at=time.time() - 600)
    at = page_test("model_training").run()
    assert not at.exception
    row = at.dataframe[0].value.iloc[0].to_dict()
    assert (row["Status"], row["Epoch"], row["Val accuracy"]) == ("exporting", "1/2", "–")
    assert "None" not in " ".join(map(str, row.values()))
    bar = next(p for p in at.get("progress")).proto.text
    assert bar.startswith("Exporting the model") and "step" not in bar and "ETA" not in bar


def test_progress_within_an_epoch_comes_from_this_processes_batch_lines(
    app_env: Settings, server_address: Callable, training_pid: int
) -> None:
    import json

    run_dir = make_fake_run(app_env.runs_dir, "first-epoch", "running", epochs=3, pid=training_pid,
                            phase="training", started_at=time.time() - 60)
    batch = {"kind": "batch", "epoch": 1, "epochs": 3, "step": 4, "steps": 10, "loss": 1.9, "accuracy": 0.2,
             "lr": 1e-3, "elapsed_s": 30.0, "eta_s": 725.0, "time": time.time()}
    (run_dir / runs.PROGRESS_FILE).write_text(json.dumps(batch) + "\n")
    at = page_test("model_training").run()
    bar = next(p for p in at.get("progress")).proto
    assert bar.text == "Epoch 1/3, step 4/10 · ETA 12 min 05 s"
    assert bar.value == 13  # 0.4 of the first of 3 epochs
    curves = json.loads(next(s for s in chart_specs(at) if '"Loss"' in s))
    train_points = [layer for layer in curves["hconcat"][0]["layer"]
                    if layer["mark"]["type"] == "point" and "'train'" in str(layer.get("transform"))]
    assert train_points  # one batch line is a visible point, not a line with nothing to join


def test_a_stopped_run_with_no_complete_epoch_is_described_in_the_pages_words_and_resumes_from_the_start(
    app_env: Settings, server_address: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_fake_run(app_env.runs_dir, "early-stop", "stopped",
                            message="stopped by request; --resume continues it")  # the CLI's words, before
    started: list[str] = []
    monkeypatch.setattr(launch, "resume_run", lambda run: started.append(run.name) or runs.read_run(run.path))
    at = page_test("model_training").run()
    shown = texts(at.markdown) + " " + " ".join(map(str, at.dataframe[0].value["Message"]))
    assert "--resume" not in shown and "Resume starts its training again from the beginning" in shown
    at = at.button(key="resume_early-stop").click().run()
    assert started == ["early-stop"]
    assert "starts its training again from the beginning (no epoch had completed)" in texts(at.success)

    # With a backup of epoch 1, Resume continues after it.
    backup = run_dir / runs.BACKUP_DIR / "all"
    backup.mkdir(parents=True)
    (backup / "epoch-0001.weights.h5").write_bytes(b"weights")
    runs.write_json_atomic(backup / runs.BACKUP_METADATA,
                           {"epoch": 1, "batch": 0, "weights_file": "epoch-0001.weights.h5"})
    at = at.button(key="resume_early-stop").click().run()
    assert "Resume continues after epoch 1 of 2." in texts(at.success)


def test_a_resumed_run_shows_no_stale_step_or_eta_while_it_starts(
    app_env: Settings, server_address: Callable, training_pid: int
) -> None:
    # Progress lines from the process before (written before this one started); now starting again.
    run_dir = make_fake_run(app_env.runs_dir, "again", "running", pid=training_pid, phase="loading data")
    at = page_test("model_training").run()
    bar = next(p for p in at.get("progress")).proto.text
    assert bar == "Loading the data set…"
    # Training again, before this process's first line: no step or ETA from the process before.
    runs.update_status(run_dir, "running", phase="training")
    at.run()
    assert next(p for p in at.get("progress")).proto.text == "Training: waiting for the first batch…"


def test_the_log_hides_tensorflow_start_up_noise_wraps_and_offers_the_whole_file(
    app_env: Settings, server_address: Callable, downloads: dict[str, bytes]
) -> None:
    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796375410.993240    8720 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
        "E0000 00:00:1796375413.836288    8720 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow.\n"
    )
    log = "2026-12-04 09:10:15 INFO training: base weights: from scratch\n" + noise + "Epoch 1/3\n"
    make_fake_run(app_env.runs_dir, "noisy", "failed", log=log, message="boom")
    at = page_test("model_training").run()
    shown = texts(at.code)
    assert "base weights: from scratch" in shown and "Epoch 1/3" in shown
    assert "cuda" not in shown.lower() and "absl" not in shown and "rebuild TensorFlow" not in shown
    assert at.code[0].proto.wrap_lines
    assert downloads["noisy-train.log"] == log.encode()  # the full log, noise included


def test_the_confusion_matrix_labels_every_class(app_env: Settings, server_address: Callable) -> None:
    make_fake_run(app_env.runs_dir, "evaluated", "finished", evaluated=True)
    at = page_test("model_training").run()
    import json

    spec = json.loads(next(s for s in chart_specs(at) if '"Predicted"' in s))
    # Streamlit's theme drops axis labels that nearly overlap; the matrix keeps all of them.
    for layer in spec["layer"]:
        assert layer["encoding"]["x"]["axis"]["labelOverlap"] is False
        assert layer["encoding"]["y"]["axis"]["labelOverlap"] is False


def test_an_upload_that_is_not_a_zip_is_named_as_uploaded(
    app_env: Settings, server_address: Callable
) -> None:
    at = page_test("model_training").run()
    at.radio(key="launch_source").set_value("Upload a zip")
    at.run()
    at.file_uploader[0].upload("faces.zip", b"%PDF-1.7 not a zip at all", "application/zip")
    fill_launch_form(at, run_name="pdf")
    at = submit_launch(at)
    error = texts(at.error)
    assert "faces.zip is not a zip file" in error and ".upload-" not in error
    assert runs.list_runs(app_env.runs_dir) == []


def test_form_limits_are_the_configs_and_a_bad_value_is_refused_in_the_forms_words(
    app_env: Settings, server_address: Callable
) -> None:
    from training.config import bounds

    at = page_test("model_training").run()
    epochs = next(w for w in at.number_input if w.label == "Epochs")
    assert (epochs.min, epochs.max) == bounds("epochs")
    image = next(w for w in at.number_input if w.label == "Image size (px)")
    assert (image.min, image.max) == bounds("image_size")
    fill_launch_form(at, data=str(write_folder_dataset(app_env.data_dir / "ds", {"train": 1, "val": 1})), lr=0.0)
    at = submit_launch(at)
    assert "Not launched: Learning rate must be in (0, 1]" in texts(at.error)
    assert runs.list_runs(app_env.runs_dir) == []


# --- safe models: compare, warn, keep every model, restore in one click ----------------------------------------


def shipped_model(app_env: Settings, accuracy: float, ece: float) -> Path:
    """A shipped model folder as training.publish leaves it (model files, metrics.json with val figures)."""
    folder = ModelRegistry.from_settings(app_env).shipped.path
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"shipped keras")
    (folder / "model_int8.tflite").write_bytes(b"shipped tflite")
    runs.write_json_atomic(folder / "metrics.json", {
        "val": {"accuracy": accuracy, "macro_f1": 0.634, "ece": ece, "n_images": 30},
        "calibration": {"data": "/datasets/fake", "fitted_on": "val", "temperature": 0.7, "ece_after": ece}})
    return folder


def test_promote_compares_the_run_with_the_active_model_and_warns_when_it_is_worse(
    app_env: Settings, server_address: Callable
) -> None:
    shipped_model(app_env, accuracy=0.95, ece=0.041)  # measured on the same 30 faces: better than the run
    run_dir = make_fake_run(app_env.runs_dir, "weaker", "finished", evaluated=True, exported=True)
    evaluation = runs.read_json(run_dir / runs.EVALUATION_FILE)
    runs.write_json_atomic(run_dir / runs.EVALUATION_FILE, {**evaluation, "accuracy": 0.6, "macro_f1": 0.5})
    at = page_test("model_training").run()
    assert not at.exception
    table = at.table[0].value
    assert list(table.columns) == ["This run", "Active: fer-inceptionv3", "Difference"]
    assert table.loc["Accuracy", "Active: fer-inceptionv3"] == "95.0%"
    assert (table.loc["Accuracy", "This run"], table.loc["Accuracy", "Difference"]) == ("60.0%", "-35.0 points")
    assert table.loc["Calibration error (ECE, lower is better)", "This run"] == "0.050"
    warning = texts(at.warning)
    assert "worse than the active model (fer-inceptionv3) on accuracy, macro-F1, calibration" in warning
    assert at.checkbox(key="promote_confirm_weaker").label.endswith("although it is worse")


def test_every_earlier_model_stays_and_one_click_restores_the_shipped_one(
    app_env: Settings, server_address: Callable
) -> None:
    shipped = shipped_model(app_env, accuracy=0.10, ece=0.2)  # the run is better: no warning
    make_fake_run(app_env.runs_dir, "better", "finished", evaluated=True, exported=True)
    at = page_test("model_training").run()
    assert "worse" not in texts(at.warning)
    at.checkbox(key="promote_confirm_better").check().run()
    at = next(b for b in at.button if b.label == "Promote").click().run()
    registry = ModelRegistry.from_settings(app_env)
    assert registry.active().name == "better"
    models = at.dataframe[-1].value
    assert list(models["Model"]) == ["better", "fer-inceptionv3"] and list(models["Active"]) == ["yes", ""]
    assert "This run's model is the active model" in texts(at.success)  # not compared with itself
    assert "Promote" not in [b.label for b in at.button]

    at = at.button(key="restore_fer-inceptionv3_shipped").click().run()
    assert not at.exception
    assert "The shipped model is the active model again" in texts(at.success)
    assert registry.active().path == shipped
    at = at.button(key="restore_better_promoted").click().run()  # and back, one click
    assert registry.active().name == "better" and (registry.active().path / "model.keras").is_file()
