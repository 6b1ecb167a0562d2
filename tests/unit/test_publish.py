"""The model card and the 'only clearly better models' rule (no TensorFlow needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fer_core.emotions import EMOTIONS
from fer_core.registry import ModelRegistry
from fer_core.settings import get_settings
from training import publish as publish_module
from training import runs
from training.card import (
    PROJECT_README,
    RESULTS_END,
    RESULTS_START,
    build_metrics,
    init_record,
    model_card,
    readme_with_results,
    results_table,
    training_stages,
)
from training.publish import publish_refusal


def _report(accuracy: float) -> dict:
    per_class = {
        name: {"recall": 0.5 + i / 100, "f1": 0.4 + i / 100, "precision": 0.5} for i, name in enumerate(EMOTIONS)
    }
    return {
        "accuracy": accuracy, "macro_f1": 0.51, "balanced_accuracy": 0.5, "ece": 0.04, "per_class": per_class,
        "confusion_matrix": [[0] * 7 for _ in range(7)], "n_images": 3589,
    }


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run-a"
    run.mkdir()
    runs.write_json_atomic(run / runs.CONFIG_FILE, {"data": "/data/fer2013", "image_size": 75, "lr": 3e-4,
                                                    "batch_size": 64, "augment": "standard", "label_smoothing": 0.1,
                                                    "dropout": 0.4})
    runs.write_json_atomic(run / runs.STATUS_FILE, {"status": "running", "weights_used": "none"})
    (run / runs.HISTORY_FILE).write_text("epoch,accuracy,val_accuracy\n0,0.3,0.31\n1,0.5,0.55\n2,0.6,0.54\n")
    # Two process segments (a resume restarts elapsed_s): 100 s, then 30 s.
    segments = [50, 100, 30]
    (run / runs.PROGRESS_FILE).write_text("\n".join(json.dumps({"kind": "epoch", "elapsed_s": e}) for e in segments))
    return run


def test_metrics_and_card_carry_the_measured_figures(tmp_path: Path) -> None:
    run = _run(tmp_path)
    export = {"latency_ms": {"litert": {"32": {"ms_per_face": 0.9}}, "keras": {"32": {"ms_per_face": 4.1}}},
              "half_accuracy_difference": 0.000279, "files": {"model.keras": {"mb": 42.7}, "model.h5": {"mb": 84}},
              "load_average_1m": 2.5}
    metrics = build_metrics(run, _report(0.612), _report(0.611), export)
    assert metrics["val"]["accuracy"] == 0.612
    assert abs(metrics["litert_int8"]["accuracy_difference"] + 0.001) < 1e-9
    assert metrics["training"]["epochs_trained"] == 3 and metrics["training"]["best_epoch"] == 2
    assert metrics["weights_init"] == "from scratch"
    assert metrics["training"]["training_time_s"] == 130
    assert "model.h5" not in metrics["files_mb"]  # not shipped
    card = model_card(metrics)
    assert "**61.2%**" in card and "61.1% (-0.10 points)" in card
    assert "| disgust | 51.0% | 41.0% |" in card
    assert "batch 32: 0.90 ms" in card
    assert "(42.7 MiB);\n  loads as float32; accuracy difference from float32: +0.03 points." in card
    assert "PrivateTest split was never used" in card


def _calibration() -> dict:
    return {"temperature": 0.6986, "ece_before": 0.113, "ece_after": 0.041, "ece_after_cross_fitted": 0.043,
            "litert_ece_before": 0.112, "litert_ece_after": 0.040, "mean_confidence_before": 0.55,
            "mean_confidence_after": 0.687, "accuracy": 0.662, "n_images": 3589}


def test_the_card_and_the_readme_say_how_confidences_are_calibrated(tmp_path: Path) -> None:
    report = {**_report(0.662), "ece": 0.041}
    metrics = build_metrics(_run(tmp_path), report, _report(0.661), {}, _calibration())
    card = model_card(metrics)
    assert "| expected calibration error (15 bins) | 0.041 (temperature-scaled, T = 0.70) |" in card
    assert "temperature-scaled with T = 0.70 (`calibration.json`)" in card
    assert "0.113 raw, 0.041 calibrated; 0.043 cross-fitted" in card
    assert "int8 LiteRT, same temperature: ECE 0.112 raw, 0.040 calibrated." in card
    assert "Mean confidence 55.0% raw, 68.7% calibrated, against 66.2% accuracy." in card
    assert "| expected calibration error | 0.041 (temperature-scaled, T = 0.70) |" in results_table(metrics)

    (tmp_path / "raw").mkdir()
    raw = build_metrics(_run(tmp_path / "raw"), _report(0.612), _report(0.611), {})
    assert "raw softmax outputs: not calibrated" in model_card(raw)
    assert "| expected calibration error | 0.040 (not calibrated) |" in results_table(raw)


def test_a_flip_averaged_model_says_so_on_its_card_in_the_readme_and_in_its_speed(tmp_path: Path) -> None:
    export = {"latency_ms": {"litert": {"32": {"ms_per_face": 0.9}}, "keras": {"32": {"ms_per_face": 4.1}}}}
    flipped = build_metrics(_run(tmp_path), _report(0.668), _report(0.667), export,
                            {**_calibration(), "flip_average": True})
    card = model_card(flipped)
    assert "Flip averaging is on (`calibration.json`)" in card
    assert "the live cost per face is twice these figures" in card
    assert "| accuracy (Keras, float16-stored weights, flip-averaged) | **66.8%** |" in results_table(flipped)

    (tmp_path / "plain").mkdir()
    plain = build_metrics(_run(tmp_path / "plain"), _report(0.668), _report(0.667), export, _calibration())
    assert "Flip averaging" not in model_card(plain) and "twice these figures" not in model_card(plain)
    assert "| accuracy (Keras, float16-stored weights) | **66.8%** |" in results_table(plain)


def test_recalibrating_a_published_model_rewrites_its_figures_card_and_readme_table(tmp_path: Path) -> None:
    from training.calibrate import update_model_card

    folder = tmp_path / "published"
    folder.mkdir()
    runs.write_json_atomic(folder / "metrics.json", build_metrics(_run(tmp_path), _report(0.662), _report(0.661), {}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# ClassMood\n\n{RESULTS_START}\nold\n{RESULTS_END}\n")
    assert update_model_card(folder, _calibration(), readme)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val"]["ece"] == 0.041 and metrics["calibration"]["temperature"] == 0.6986
    assert metrics["val"]["accuracy"] == 0.662  # the rest is kept
    assert (folder / "README.md").read_text() == model_card(metrics)
    assert results_table(metrics) in readme.read_text()
    assert not update_model_card(tmp_path / "unpublished", _calibration(), None)  # no metrics.json: no card


def test_only_a_clearly_better_model_replaces_the_published_one() -> None:
    published = {"val": {"accuracy": 0.60}}
    assert publish_refusal(0.65, None, force=False) is None  # nothing published yet
    assert publish_refusal(0.61, published, force=False) is None  # +1 point
    refusal = publish_refusal(0.605, published, force=False)
    assert refusal is not None and "not at least 1 point better" in refusal
    assert publish_refusal(0.55, published, force=True) is None


def _published_metrics(run: str, epochs: int, seconds: float) -> dict:
    """metrics.json as publish wrote it before training stages were recorded."""
    return {
        "weights_init": "from scratch",
        "val": {"accuracy": 0.517},
        "training": {"run": run, "config": {"lr": 3e-4, "batch_size": 64, "augment": "standard", "init_from": None},
                     "epochs_trained": epochs, "best_epoch": epochs - 1, "training_time_s": seconds},
    }


def test_a_fine_tuned_model_card_tells_every_training_stage(tmp_path: Path) -> None:
    shipped = tmp_path / "models" / "fer"
    shipped.mkdir(parents=True)
    runs.write_json_atomic(shipped / "metrics.json", _published_metrics("scratch-b", 20, 5299.2))
    record = init_record(shipped)
    assert record["weights_init"] == "from scratch" and record["val_accuracy"] == 0.517
    assert [s["run"] for s in record["stages"]] == ["scratch-b"]
    assert init_record(shipped / "model.keras")["stages"] == record["stages"]  # a file in the folder: the same

    run = _run(tmp_path)  # 3 epochs, 130 s, status says no base weights were loaded
    config = runs.read_json(run / runs.CONFIG_FILE) | {"init_from": str(shipped), "lr": 1.5e-4}
    runs.write_json_atomic(run / runs.CONFIG_FILE, config)
    runs.write_json_atomic(run / runs.INIT_FROM_FILE, record)
    metrics = build_metrics(run, _report(0.6), _report(0.6), {})
    training = metrics["training"]
    assert [s["run"] for s in training["stages"]] == ["scratch-b", "run-a"]
    assert training["stages"][1]["options"]["lr"] == 1.5e-4
    assert training["stages"][1]["init_from"] == str(shipped)
    assert training["total_epochs"] == 23 and training["total_training_time_s"] == 5429.2
    assert training["epochs_trained"] == 3  # this run's own figures stay as they were
    assert metrics["weights_init"] == "from scratch"  # where the first stage began, not "none loaded"
    card = model_card(metrics)
    assert "23 epochs in 2 stages, 1.5 h" in card
    assert "1. run `scratch-b`, from scratch: 20 epochs (best: epoch 19)" in card
    assert "2. run `run-a`, from the stage above: 3 epochs (best: epoch 2)" in card
    assert "Adam epsilon" not in card  # neither stage changed Keras' default (the first predates the option)
    assert "moving average" not in card  # nor averaged weights
    assert "mixup" not in card  # nor blended faces
    assert "erasing" not in card  # nor noise patches
    assert "weight decay" not in card  # nor decayed weights
    assert "3 epochs (best: epoch 2), 0.0 h; input 75 px, learning rate 0.00015," in card
    training["stages"][1]["options"]["image_size"] = 96  # a stage that fine-tuned at a larger input
    assert "3 epochs (best: epoch 2), 0.0 h; input 96 px, learning rate 0.00015," in model_card(metrics)
    assert "Adam, ReduceLROnPlateau,\n" in card and "cosine" not in card
    training["stages"][1]["options"]["lr_schedule"] = "cosine"
    cosine_card = model_card(metrics)
    assert "input 96 px, learning rate 0.00015 with cosine decay to 1e-06, batch 64" in cosine_card
    assert "Adam, ReduceLROnPlateau or, where a stage says so, cosine decay," in cosine_card
    assert cosine_card.count("cosine decay to") == 1  # the first stage kept the plateau rule
    training["stages"][1]["options"]["adam_epsilon"] = 0.1
    training["stages"][1]["options"]["ema"] = 0.999
    training["stages"][1]["options"]["precise_bn"] = 8192
    assert ("dropout 0.4, Adam epsilon 0.1, weight moving average (momentum 0.999), "
            "BatchNorm statistics re-estimated on 8192 clean training faces") in model_card(metrics)
    training["stages"][1]["options"]["mixup"] = 0.2
    assert "dropout 0.4, mixup (alpha 0.2), Adam epsilon 0.1," in model_card(metrics)
    training["stages"][1]["options"]["erasing"] = 0.5
    training["stages"][1]["options"]["weight_decay"] = 0.05
    assert ("dropout 0.4, random erasing (p 0.5), mixup (alpha 0.2), Adam epsilon 0.1, weight decay 0.05,"
            in model_card(metrics))
    assert "distilled" not in model_card(metrics)
    training["stages"][1]["options"] |= {"distill_from": "/srv/classmood/models/fer-inceptionv3", "distill_weight": 0.5}
    assert ("class weights" not in model_card(metrics)
            and "dropout 0.4, random erasing (p 0.5), mixup (alpha 0.2), distilled from `models/fer-inceptionv3` "
            "(teacher share 0.5, flip-averaged), Adam epsilon 0.1," in model_card(metrics))
    training["stages"][1]["options"]["distill_from"] = "/srv/classmood/data/runs/kd-a/best.keras"
    assert "distilled from `runs/kd-a/best.keras` (teacher share 0.5" in model_card(metrics)
    training["stages"][1]["options"]["distill_also"] = ["/srv/classmood/models/fer-inceptionv3/model.keras"]
    assert ("distilled from an ensemble of `runs/kd-a/best.keras` and `models/fer-inceptionv3/model.keras` "
            "(teacher share 0.5" in model_card(metrics))
    # The next stage starts from this one's metrics and keeps the whole chain.
    assert [s["run"] for s in training_stages(training)] == ["scratch-b", "run-a"]


def test_a_run_started_from_another_runs_checkpoint_keeps_that_runs_stages(tmp_path: Path) -> None:
    shipped = tmp_path / "models" / "fer"
    shipped.mkdir(parents=True)
    runs.write_json_atomic(shipped / "metrics.json", _published_metrics("scratch-b", 20, 5299.2))
    earlier = _run(tmp_path)  # run-a: 3 epochs, best val 0.55 at epoch 2, 130 s
    runs.write_json_atomic(earlier / runs.CONFIG_FILE,
                           runs.read_json(earlier / runs.CONFIG_FILE) | {"init_from": str(shipped)})
    runs.write_json_atomic(earlier / runs.INIT_FROM_FILE, init_record(shipped))

    record = init_record(earlier / runs.BEST_MODEL_FILE)
    assert record["weights_init"] == "from scratch" and record["val_accuracy"] == 0.55
    assert [(s["run"], s["epochs_trained"], s["best_epoch"]) for s in record["stages"]] == [
        ("scratch-b", 20, 19), ("run-a", 3, 2)]

    later = tmp_path / "later" / "run-b"
    later.parent.mkdir()
    shutil.copytree(earlier, later)
    (later / runs.INIT_FROM_FILE).unlink()
    runs.write_json_atomic(later / runs.CONFIG_FILE, runs.read_json(later / runs.CONFIG_FILE)
                           | {"init_from": str(earlier / runs.BEST_MODEL_FILE), "augment": "strong"})
    runs.write_json_atomic(later / runs.INIT_FROM_FILE, record)
    metrics = build_metrics(later, _report(0.6), _report(0.6), {})
    assert [s["run"] for s in metrics["training"]["stages"]] == ["scratch-b", "run-a", "run-b"]
    assert metrics["training"]["stages"][2]["options"]["augment"] == "strong"
    assert metrics["weights_init"] == "from scratch"
    assert "26 epochs in 3 stages" in model_card(metrics)


def test_a_model_without_a_card_starts_an_unrecorded_chain(tmp_path: Path) -> None:
    loose = tmp_path / "best.keras"
    loose.write_bytes(b"")
    assert init_record(loose) == {"model": str(loose.resolve())}
    run = _run(tmp_path)
    config = runs.read_json(run / runs.CONFIG_FILE) | {"init_from": str(loose)}
    runs.write_json_atomic(run / runs.CONFIG_FILE, config)
    runs.write_json_atomic(run / runs.INIT_FROM_FILE, init_record(loose))
    metrics = build_metrics(run, _report(0.6), _report(0.6), {})
    assert metrics["weights_init"] == "fine-tuned from an unpublished model"
    assert "1. run `run-a`, from `best.keras` (its training is not recorded): 3 epochs" in model_card(metrics)


def test_the_readme_results_block_is_rewritten_and_nothing_else(tmp_path: Path) -> None:
    metrics = build_metrics(_run(tmp_path), _report(0.612), _report(0.611), {})
    readme = f"# Title\n\nBefore.\n\n{RESULTS_START}\n| old | 51.7% |\n{RESULTS_END}\n\nAfter.\n"
    updated = readme_with_results(readme, metrics)
    assert updated.startswith("# Title\n\nBefore.\n\n") and updated.endswith(f"{RESULTS_END}\n\nAfter.\n")
    assert "51.7%" not in updated
    table = results_table(metrics)
    assert f"{RESULTS_START}\n{table}{RESULTS_END}" in updated
    assert "| accuracy (Keras, float16-stored weights) | **61.2%** |" in table
    assert "| int8 LiteRT accuracy (the live path) | 61.1% (-0.10 points) |" in table
    assert "disgust 51%" in table and "3 epochs in 1 stage" in table
    assert readme_with_results(updated, metrics) == updated  # idempotent


def test_a_readme_without_the_markers_stops_publish_before_the_model_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path)
    (run / runs.BEST_MODEL_FILE).write_bytes(b"new model")
    out = tmp_path / "shipped"
    out.mkdir()
    (out / "model.keras").write_bytes(b"old model")
    readme = tmp_path / "README.md"
    readme.write_text("# No results block here\n")

    def fake_export(best: Path, staging: Path, **_: object) -> dict:
        for name in ("model.keras", "model_int8.tflite", runs.CONFUSION_FILE):
            (staging / name).write_bytes(b"new")
        return {}

    monkeypatch.setattr(publish_module, "export_model", fake_export)
    monkeypatch.setattr(publish_module, "evaluate_model_file", lambda *a, **k: _report(0.7))
    monkeypatch.setattr(publish_module, "calibrate_model", lambda *a, **k: _calibration())
    with pytest.raises(SystemExit, match="no <!-- model-results:start -->"):
        publish_module.publish(run, tmp_path, out, readme=readme)
    assert (out / "model.keras").read_bytes() == b"old model"
    assert not (out / "metrics.json").exists()


def test_the_shipped_model_card_and_the_readme_show_the_same_figures() -> None:
    shipped = ModelRegistry.from_settings(get_settings()).shipped.path
    metrics = json.loads((shipped / "metrics.json").read_text(encoding="utf-8"))
    assert (shipped / "README.md").read_text(encoding="utf-8") == model_card(metrics)
    readme = PROJECT_README.read_text(encoding="utf-8")
    assert f"{RESULTS_START}\n{results_table(metrics)}{RESULTS_END}" in readme
