"""training.runs, training.launch and training.promotion: run status logic, launching/stopping/resuming/promoting
(with a stand-in trainer), log trimming, and the CLI's run options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fer_core.registry import ModelRegistry
from training import launch, promotion, runs
from training.config import TrainConfig
from training.train import build_parser, prepare_run
from training.train import main as train_main

FAKE_TRAINER = """#!/bin/sh
# Stands in for `python -m training.train ...`: its command line says training.train; it idles until SIGTERM.
trap 'echo got-term; exit 0' TERM
echo "fake trainer: $*"
while true; do sleep 0.1; done
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "fake-python"
    path.write_text(FAKE_TRAINER)
    path.chmod(0o755)
    yield str(path)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Iterator[Path]:
    """A runs folder; any stand-in trainer still running at the end is terminated (by its own pid)."""
    path = tmp_path / "runs"
    yield path
    for launch_file in path.glob(f"*/{runs.LAUNCH_FILE}"):
        pid = (runs.read_json(launch_file) or {}).get("pid")
        if pid and runs.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def make_run(runs_dir: Path, name: str, status: str, **state) -> Path:
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    runs.write_json_atomic(run_dir / runs.CONFIG_FILE, {"data": "/nowhere", "epochs": 3})
    runs.write_json_atomic(run_dir / runs.STATUS_FILE, {"status": status, "created_at": time.time(), **state})
    return run_dir


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- names and status ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "../evil", "a b", "-dash-first", "x" * 65, "run/1", ".hidden"])
def test_bad_run_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid run name"):
        runs.validate_run_name(name)


def test_train_cli_rejects_a_bad_run_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"invalid run name '../escape'"):
        train_main(["--data", str(tmp_path), "--run-name", "../escape", "--runs-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "escape").exists()


def test_train_cli_resume_refusals(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a run directory"):
        train_main(["--resume", str(tmp_path / "nope")])
    finished = make_run(tmp_path, "done", "finished")
    with pytest.raises(SystemExit, match=r"has finished; .*--init-from"):
        train_main(["--resume", str(finished)])


def new_run(tmp_path: Path, *extra: str) -> tuple[Path, TrainConfig]:
    """The run folder and config train.py makes for a new run with these options, data and runs under tmp_path."""
    args = build_parser().parse_args(["--data", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), *extra])
    return prepare_run(args)


def run_config(tmp_path: Path, *extra: str) -> TrainConfig:
    return new_run(tmp_path, *extra)[1]


def test_an_init_from_run_records_the_training_behind_its_start(tmp_path: Path) -> None:
    published = tmp_path / "models" / "fer"
    published.mkdir(parents=True)
    stage = {"run": "scratch-b", "epochs_trained": 20, "training_time_s": 5299.2}
    (published / "metrics.json").write_text(json.dumps(
        {"weights_init": "from scratch", "val": {"accuracy": 0.517}, "training": {"stages": [stage]}}
    ))
    run_dir, _ = new_run(tmp_path, "--init-from", str(published), "--run-name", "ft")
    record = runs.read_json(run_dir / runs.INIT_FROM_FILE)
    assert record == {"model": str(published.resolve()), "weights_init": "from scratch", "val_accuracy": 0.517,
                      "stages": [stage]}
    # A run from scratch has nothing to record.
    scratch, _ = new_run(tmp_path, "--run-name", "new")
    assert not (scratch / runs.INIT_FROM_FILE).exists()


def test_running_status_with_dead_pid_reads_as_interrupted(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", "running", pid=dead_pid())
    assert runs.read_run(run_dir).status == "interrupted"


def test_running_status_with_a_recycled_pid_reads_as_interrupted(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])  # alive, but not a training process
    try:
        run_dir = make_run(tmp_path, "r1", "running", pid=other.pid)
        assert runs.read_run(run_dir).status == "interrupted"
    finally:
        other.kill()
        other.wait()


def test_queued_status_logic(tmp_path: Path) -> None:
    fresh = make_run(tmp_path, "fresh", "queued", updated_at=time.time())
    assert runs.read_run(fresh).status == "queued"  # the launcher is about to start it
    stale = make_run(tmp_path, "stale", "queued", updated_at=time.time() - 3600)
    assert runs.read_run(stale).status == "failed"
    died = make_run(tmp_path, "died", "queued", updated_at=time.time())
    runs.write_json_atomic(died / runs.LAUNCH_FILE, {"pid": dead_pid()})
    info = runs.read_run(died)
    assert info.status == "failed" and "exited before starting" in info.state["message"]
    stopped = make_run(tmp_path, "stopped", "queued", updated_at=time.time())
    runs.write_json_atomic(stopped / runs.LAUNCH_FILE, {"pid": dead_pid(), "stop_requested_at": time.time()})
    assert runs.read_run(stopped).status == "stopped"


# --- resume bookkeeping ----------------------------------------------------------------------


def test_trim_logs_to_epoch_drops_epochs_the_backup_does_not_hold(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / runs.HISTORY_FILE).write_text(
        "epoch,accuracy,val_accuracy\n0,0.2,0.25\n1,0.3,0.40\n2,0.35,0.30\n", encoding="utf-8"
    )
    lines = [
        {"kind": "batch", "epoch": 1, "step": 5},
        {"kind": "epoch", "epoch": 1},
        {"kind": "epoch", "epoch": 2},
        {"kind": "batch", "epoch": 3, "step": 5},
    ]
    (run_dir / runs.PROGRESS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "ba')
    runs.trim_logs_to_epoch(run_dir, 2)
    assert [r["epoch"] for r in runs.read_history(run_dir)] == ["0", "1"]
    assert [(r["kind"], r["epoch"]) for r in runs.read_progress(run_dir)] == [("batch", 1), ("epoch", 1), ("epoch", 2)]
    assert runs.best_logged(run_dir, "val_accuracy") == pytest.approx(0.40)
    runs.trim_logs_to_epoch(run_dir, 0)
    assert runs.read_history(run_dir) == [] and runs.read_progress(run_dir) == []
    assert runs.best_logged(run_dir) is None


def test_backup_epoch_reads_keras_backup_metadata(tmp_path: Path) -> None:
    backup = tmp_path / "backup" / "all"
    assert runs.backup_epoch(backup) is None
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    assert runs.backup_epoch(backup) is None  # metadata without weights is not a backup
    (backup / "latest.weights.h5").write_bytes(b"x")
    assert runs.backup_epoch(backup) == 2


# --- options -------------------------------------------------------------------------------


def test_cli_options_are_the_configs_fields_with_their_bounds(tmp_path: Path) -> None:
    config = run_config(tmp_path, "--run-name", "opts", "--epochs", "5", "--class-weights", "--no-export")
    assert (config.epochs, config.class_weights, config.export, config.skip_corrupt) == (5, True, False, False)
    assert config.data == tmp_path.resolve()  # made absolute: the launched process runs in the project root
    with pytest.raises(SystemExit, match=r"--epochs must be between 1 and 1000"):
        run_config(tmp_path, "--run-name", "zero", "--epochs", "0")
    with pytest.raises(SystemExit, match="--data is required"):
        prepare_run(build_parser().parse_args(["--epochs", "3"]))
    with pytest.raises(SystemExit):  # argparse: invalid choice
        build_parser().parse_args(["--data", "d", "--augment", "extreme"])
    with pytest.raises(SystemExit, match="--image-size must be between 75 and 299"):
        run_config(tmp_path, "--run-name", "small", "--image-size", "48")
    with pytest.raises(SystemExit, match=r"--resume takes only --epochs"):
        prepare_run(build_parser().parse_args(["--resume", str(tmp_path), "--lr", "0.1"]))
    assert not [p.name for p in (tmp_path / "runs").iterdir() if p.name != "opts"]  # refused runs left nothing


# --- launch / busy / stop / resume ----------------------------------------------------------


def test_launch_is_detached_and_a_second_launch_is_refused(runs_dir: Path, fake_python: str, tmp_path: Path) -> None:
    info = launch.launch_run(runs_dir, TrainConfig(data=tmp_path, epochs=2), "first", python=fake_python)
    assert info.name == "first" and info.status == "queued" and info.is_active
    launched = runs.read_json(info.path / runs.LAUNCH_FILE)
    # The config goes to the run folder first; the process is started with the file.
    assert launched["command"][1:] == ["-m", "training.train", "--config", str(info.path / runs.CONFIG_FILE)]
    assert runs.load_config(info.path) == TrainConfig(data=tmp_path, epochs=2, seed=info.config.seed)
    pid = launched["pid"]
    assert os.getsid(pid) == pid  # its own session: Streamlit reruns and Ctrl-C do not reach it
    assert wait_for(lambda: "fake trainer:" in (info.path / runs.LOG_FILE).read_text())  # output goes to the log

    with pytest.raises(launch.RunBusyError, match=r"run 'first' is queued .*only one training run at a time") as err:
        launch.launch_run(runs_dir, TrainConfig(data=tmp_path), "second", python=fake_python)
    assert err.value.run.name == "first"
    assert not (runs_dir / "second").exists()
    assert runs.active_run(runs_dir).name == "first"

    assert launch.stop_run(info) is True
    assert wait_for(lambda: not runs.pid_alive(pid))
    assert "got-term" in (info.path / runs.LOG_FILE).read_text()  # SIGTERM, not SIGKILL
    assert runs.read_run(info.path).status == "stopped"
    assert launch.stop_run(info) is False  # nothing left to stop

    second = launch.launch_run(runs_dir, TrainConfig(data=tmp_path), "second", python=fake_python)
    assert second.is_active
    launch.stop_run(second)


def test_launch_refuses_an_existing_run_name(runs_dir: Path, fake_python: str, tmp_path: Path) -> None:
    make_run(runs_dir, "taken", "failed")
    with pytest.raises(ValueError, match="run 'taken' already exists"):
        launch.launch_run(runs_dir, TrainConfig(data=tmp_path), "taken", python=fake_python)
    with pytest.raises(ValueError, match="invalid run name"):
        launch.launch_run(runs_dir, TrainConfig(data=tmp_path), "../up", python=fake_python)


def test_an_externally_started_running_run_blocks_launches(runs_dir: Path, fake_python: str, tmp_path: Path) -> None:
    # A run started from a terminal (not through launch_run) is just as busy.
    proc = subprocess.Popen([fake_python, "-m", "training.train", "--data", "x"], start_new_session=True)
    try:
        assert wait_for(lambda: runs.is_training_process(proc.pid))  # exec'd (a real run writes its pid later)
        make_run(runs_dir, "cli-run", "running", pid=proc.pid)
        with pytest.raises(launch.RunBusyError, match="'cli-run' is running"):
            launch.launch_run(runs_dir, TrainConfig(data=tmp_path), python=fake_python)
    finally:
        proc.kill()
        proc.wait()


def test_resume_run(runs_dir: Path, fake_python: str) -> None:
    finished = make_run(runs_dir, "done", "finished")
    with pytest.raises(ValueError, match="has finished"):
        launch.resume_run(runs.read_run(finished), python=fake_python)
    crashed = make_run(runs_dir, "crashed", "running", pid=dead_pid())
    with pytest.raises(ValueError, match="--epochs must be between 1 and 1000"):
        launch.resume_run(runs.read_run(crashed), python=fake_python, epochs=0)
    info = launch.resume_run(runs.read_run(crashed), python=fake_python, epochs=8)
    assert info.status == "queued"
    command = runs.read_json(crashed / runs.LAUNCH_FILE)["command"]
    assert command[1:] == ["-m", "training.train", "--resume", str(crashed), "--epochs", "8"]
    other = make_run(runs_dir, "other", "stopped")
    with pytest.raises(launch.RunBusyError, match="'crashed'"):
        launch.resume_run(runs.read_run(other), python=fake_python)
    launch.stop_run(info)


# --- promote ----------------------------------------------------------------------------------


def _finished_run_with_export(runs_dir: Path, name: str = "good") -> Path:
    run_dir = make_run(runs_dir, name, "finished", val_accuracy=0.61)
    export = run_dir / runs.EXPORT_DIR
    export.mkdir()
    (export / "model.keras").write_bytes(b"keras-bytes")
    (export / "model_int8.tflite").write_bytes(b"tflite-bytes")
    (export / "report.json").write_text("{}")
    (export / "calibration.json").write_text('{"temperature": 0.8}')
    (run_dir / runs.EVALUATION_FILE).write_text('{"accuracy": 0.61}')
    (run_dir / runs.CONFUSION_FILE).write_bytes(b"png")
    return run_dir


def test_promote_copies_the_export_and_points_the_app_at_it(runs_dir: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "appdata", tmp_path / "shipped")
    run_dir = _finished_run_with_export(runs_dir)
    dest = promotion.promote_run(runs.read_run(run_dir), registry).path
    assert dest == tmp_path / "appdata" / "models" / "good"
    assert (dest / "model.keras").read_bytes() == b"keras-bytes"
    assert (dest / "model_int8.tflite").read_bytes() == b"tflite-bytes"
    assert json.loads((dest / runs.EVALUATION_FILE).read_text())["accuracy"] == 0.61
    assert json.loads((dest / "calibration.json").read_text())["temperature"] == 0.8  # the app's confidences
    assert (dest / runs.CONFUSION_FILE).is_file() and (dest / "training_config.json").is_file()
    assert json.loads((dest / "promoted.json").read_text())["run"] == "good"
    assert registry.active().path == dest
    # Promoting a re-exported run keeps the copy that was active before it.
    (run_dir / runs.EXPORT_DIR / "model.keras").write_bytes(b"new-keras")
    again = promotion.promote_run(runs.read_run(run_dir), registry).path
    assert again.name == "good.2" and (again / "model.keras").read_bytes() == b"new-keras"
    assert (dest / "model.keras").read_bytes() == b"keras-bytes"
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_promote_refuses_unfinished_runs_and_runs_without_export(runs_dir: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "appdata", tmp_path / "shipped")
    stopped = make_run(runs_dir, "stopped", "stopped")
    with pytest.raises(ValueError, match="run 'stopped' is stopped; only a finished run can be promoted"):
        promotion.promote_run(runs.read_run(stopped), registry)
    bare = make_run(runs_dir, "bare", "finished")
    with pytest.raises(ValueError, match=r"no complete export \(missing model.keras, model_int8.tflite"):
        promotion.promote_run(runs.read_run(bare), registry)
    assert registry.active() == registry.shipped
    assert not (tmp_path / "appdata" / "models").exists()


def test_ema_and_precise_bn_are_checked_run_options(tmp_path: Path) -> None:
    defaults = run_config(tmp_path, "--run-name", "default")
    assert defaults.ema == 0.0  # off unless asked for
    assert defaults.precise_bn == 8192  # on unless turned off
    assert run_config(tmp_path, "--run-name", "averaged", "--ema", "0.999").ema == 0.999
    for bad in ("1", "-0.1"):
        with pytest.raises(SystemExit, match=r"--ema must be in \[0, 1\)"):
            run_config(tmp_path, "--run-name", "bad", "--ema", bad)
    with pytest.raises(SystemExit, match="--precise-bn must be 0 or more"):
        run_config(tmp_path, "--run-name", "bad-bn", "--precise-bn", "-1")


def test_each_run_gets_its_own_recorded_seed_and_a_resumed_run_moves_on(tmp_path: Path) -> None:
    from training.trainer import data_seed

    first = run_config(tmp_path, "--run-name", "one").seed
    second = run_config(tmp_path, "--run-name", "two").seed
    assert first != second  # stages started with --init-from do not replay each other's epochs
    assert runs.read_json(tmp_path / "runs" / "one" / runs.CONFIG_FILE)["seed"] == first
    assert run_config(tmp_path, "--run-name", "fixed", "--seed", "7").seed == 7
    run_dir = tmp_path / "runs" / "fixed"
    assert data_seed(run_dir, 7) == 7
    backup = run_dir / "backup" / "all"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"")
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert data_seed(run_dir, 7) == 10  # resumed after epoch 3: fresh shuffles and augmentations


def test_adam_epsilon_is_a_checked_run_option(tmp_path: Path) -> None:
    assert run_config(tmp_path, "--run-name", "default").adam_epsilon == 1e-7  # Keras' own default
    assert run_config(tmp_path, "--run-name", "steady", "--adam-epsilon", "0.1").adam_epsilon == 0.1
    with pytest.raises(SystemExit, match="--adam-epsilon must be positive"):
        run_config(tmp_path, "--run-name", "bad", "--adam-epsilon", "0")


@pytest.mark.parametrize(("option", "key", "message"), [
    ("--mixup", "mixup", "--mixup must be between 0"),
    ("--erasing", "erasing", "--erasing must be between 0 and 1"),
    ("--weight-decay", "weight_decay", "--weight-decay must be between 0"),
])
def test_mixup_erasing_and_weight_decay_are_checked_run_options(
    tmp_path: Path, option: str, key: str, message: str
) -> None:
    assert getattr(run_config(tmp_path, "--run-name", "default"), key) == 0.0  # off unless asked for
    assert getattr(run_config(tmp_path, "--run-name", "on", option, "0.2"), key) == 0.2
    for bad in ("-0.1", "1.5"):
        with pytest.raises(SystemExit, match=message):
            run_config(tmp_path, "--run-name", "bad", option, bad)
    assert getattr(TrainConfig.from_options({"data": "d", key: 0.3}), key) == 0.3  # the page's way in


def test_distillation_is_a_checked_run_option_that_needs_a_teacher_model(tmp_path: Path) -> None:
    config = run_config(tmp_path, "--run-name", "default")
    assert (config.distill_from, config.distill_weight) == (None, 0.0)  # off unless asked for
    teacher = tmp_path / "models" / "fer"
    teacher.mkdir(parents=True)
    (teacher / "model.keras").write_bytes(b"")
    config = run_config(tmp_path, "--run-name", "kd", "--distill-from", str(teacher))
    assert config.distill_from == (teacher / "model.keras").resolve()  # the file, fixed at the start
    assert config.distill_weight == 0.5
    assert run_config(tmp_path, "--run-name", "kd7", "--distill-from", str(teacher),
                      "--distill-weight", "0.7").distill_weight == 0.7
    with pytest.raises(SystemExit, match="--distill-from: model file not found"):
        run_config(tmp_path, "--run-name", "none", "--distill-from", str(tmp_path / "nope"))
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit, match=r"--distill-weight must be in \(0, 1\]"):
            run_config(tmp_path, "--run-name", "bad", "--distill-from", str(teacher), "--distill-weight", bad)
    assert not (tmp_path / "runs" / "none").exists() and not (tmp_path / "runs" / "bad").exists()
    from training.config import resolve_inputs

    config = resolve_inputs(TrainConfig.from_options({"data": "d", "distill_from": teacher, "distill_weight": 0.3}))
    assert (config.distill_from, config.distill_weight) == ((teacher / "model.keras").resolve(), 0.3)


def test_an_ensemble_teacher_is_given_as_more_teachers_after_the_first(tmp_path: Path) -> None:
    first, second = tmp_path / "models" / "fer", tmp_path / "runs-b" / "best.keras"
    first.mkdir(parents=True)
    (first / "model.keras").write_bytes(b"")
    second.parent.mkdir()
    second.write_bytes(b"")
    config = run_config(tmp_path, "--run-name", "ens", "--distill-from", str(first), "--distill-also", str(second))
    assert config.distill_also == (second.resolve(),)
    assert config.distill_from == (first / "model.keras").resolve()
    assert TrainConfig.from_stored(config.stored()).distill_also == (second.resolve(),)  # config.json round trip
    assert run_config(tmp_path, "--run-name", "one").distill_also == ()  # old runs and the default: no extra teacher
    with pytest.raises(SystemExit, match="--distill-also needs --distill-from"):
        run_config(tmp_path, "--run-name", "nofirst", "--distill-also", str(second))
    with pytest.raises(SystemExit, match="--distill-also: model file not found"):
        run_config(tmp_path, "--run-name", "missing", "--distill-from", str(first), "--distill-also",
                   str(tmp_path / "nope"))
    assert not (tmp_path / "runs" / "nofirst").exists() and not (tmp_path / "runs" / "missing").exists()


def test_distillation_targets_mix_label_and_teacher_and_are_kept_for_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from training import inference
    from training.data import SplitData
    from training.distill import TeacherTargetsError, distillation_targets
    from training.runs import TEACHER_TARGETS_FILE

    labels = np.array([0, 3, 6], np.int32)
    split = SplitData(np.zeros((3, 48, 48), np.uint8), labels, ["angry", "happy", "surprise"])
    teacher = np.full((3, 7), 1 / 7, np.float32)
    calls: list[str] = []
    def load_predictor(path: str, backend: str, flip_average: bool) -> str:
        calls.append(f"{path} {backend} flip {flip_average}")
        return "teacher"

    monkeypatch.setattr(inference, "load_predictor", load_predictor)
    monkeypatch.setattr(inference, "predict", lambda predictor, images: teacher if predictor == "teacher" else None)
    config = TrainConfig(data=tmp_path, distill_from="/m/model.keras", distill_weight=0.25)

    targets = distillation_targets(tmp_path, config, split)
    assert calls == ["/m/model.keras keras flip True"]
    expected = 0.75 * np.eye(7)[labels] + 0.25 / 7
    np.testing.assert_allclose(targets, expected, rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / TEACHER_TARGETS_FILE), teacher)

    # A resume reads the kept predictions: the teacher is not asked again (it may have been replaced).
    np.testing.assert_allclose(distillation_targets(tmp_path, config, split), expected, rtol=1e-6)
    assert len(calls) == 1
    fewer = SplitData(split.images[:2], labels[:2], ["angry", "happy"])
    with pytest.raises(TeacherTargetsError, match=r"for 2 training faces; the data set has changed"):
        distillation_targets(tmp_path, config, fewer)


    # An ensemble teacher: the mean of the teachers' predictions.
    second = np.zeros((3, 7), np.float32)
    second[:, 3] = 1.0
    predictions = {"/m/model.keras": teacher, "/n/best.keras": second}
    monkeypatch.setattr(inference, "load_predictor", lambda path, backend, flip_average: str(path))
    monkeypatch.setattr(inference, "predict", lambda predictor, images: predictions[predictor])
    ensemble_dir = tmp_path / "ensemble"
    ensemble_dir.mkdir()
    config = TrainConfig(data=tmp_path, distill_from="/m/model.keras", distill_also=("/n/best.keras",),
                         distill_weight=0.5)
    targets = distillation_targets(ensemble_dir, config, split)
    np.testing.assert_allclose(targets, 0.5 * np.eye(7)[labels] + 0.5 * (teacher + second) / 2, rtol=1e-6)
