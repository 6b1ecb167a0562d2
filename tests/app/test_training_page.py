"""AppTests of the Training page: exposure lock, password, launching, runs, evaluation, promotion."""

from __future__ import annotations

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
    assert "resumed" in texts(at.success)
    assert runs.read_run(run_dir).is_active
    # Stop it again at once: the test only needs to see that Resume started it.
    wait_for(lambda: launch.stop_run(runs.read_run(run_dir)) or not runs.read_run(run_dir).is_active, 120,
             "the resumed run to accept a stop")
    wait_for(lambda: not runs.read_run(run_dir).is_active, 600, "the resumed run to stop")
