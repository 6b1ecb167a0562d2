"""The model card and the 'only clearly better models' rule (no TensorFlow needed)."""

from __future__ import annotations

import json
from pathlib import Path

from fer_core.emotions import EMOTIONS
from training import runs
from training.publish import build_metrics, model_card, publish_refusal


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
    runs.write_json_atomic(run / runs.CONFIG_FILE, {"image_size": 75, "lr": 3e-4, "batch_size": 64,
                                                    "augment": "standard", "label_smoothing": 0.1, "dropout": 0.4})
    runs.write_json_atomic(run / runs.STATUS_FILE, {"status": "running", "weights_used": "none"})
    (run / runs.HISTORY_FILE).write_text("epoch,accuracy,val_accuracy\n0,0.3,0.31\n1,0.5,0.55\n2,0.6,0.54\n")
    # Two process segments (a resume restarts elapsed_s): 100 s, then 30 s.
    segments = [50, 100, 30]
    (run / runs.PROGRESS_FILE).write_text("\n".join(json.dumps({"kind": "epoch", "elapsed_s": e}) for e in segments))
    return run


def test_metrics_and_card_carry_the_measured_figures(tmp_path: Path) -> None:
    run = _run(tmp_path)
    export = {"latency_ms": {"litert": {"32": {"ms_per_face": 0.9}}, "keras": {"32": {"ms_per_face": 4.1}}},
              "half_accuracy_difference": 0.0, "files": {"model.keras": {"mb": 42.7}, "model.h5": {"mb": 84}},
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
    assert "PrivateTest split was never used" in card


def test_only_a_clearly_better_model_replaces_the_published_one() -> None:
    published = {"val": {"accuracy": 0.60}}
    assert publish_refusal(0.65, None, force=False) is None  # nothing published yet
    assert publish_refusal(0.61, published, force=False) is None  # +1 point
    refusal = publish_refusal(0.605, published, force=False)
    assert refusal is not None and "not at least 1 point better" in refusal
    assert publish_refusal(0.55, published, force=True) is None
