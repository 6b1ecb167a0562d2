"""training.promotion: a candidate beside the active model on the same validation split, and which is worse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_core.registry import ModelRegistry
from training import promotion, runs

# Stands in for `python -m training.evaluate ... --json OUT`: writes a report measured on the asked data and split.
FAKE_EVALUATE = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in --data) data="$2";; --split) split="$2";; --json) out="$2";; esac; shift
done
printf '{"accuracy": 0.7, "macro_f1": 0.65, "ece": 0.03, "data": "%s", "split": "%s", "n_images": 21}' \
  "$data" "$split" > "$out"
"""


def finished_run(runs_dir: Path, data: str, accuracy: float = 0.6) -> runs.RunInfo:
    run_dir = runs_dir / "cand"
    (run_dir / runs.EXPORT_DIR).mkdir(parents=True)
    runs.write_json_atomic(run_dir / runs.CONFIG_FILE, {"data": data, "epochs": 1})
    runs.write_json_atomic(run_dir / runs.STATUS_FILE, {"status": "finished"})
    runs.write_json_atomic(run_dir / runs.EVALUATION_FILE, {"accuracy": accuracy, "macro_f1": 0.55, "ece": 0.2,
                                                            "data": data, "split": "val", "n_images": 21})
    runs.write_json_atomic(run_dir / runs.EXPORT_DIR / "calibration.json", {"temperature": 0.8, "ece_after": 0.04})
    info = runs.read_run(run_dir)
    assert info is not None
    return info


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    shipped = tmp_path / "models" / "fer-inceptionv3"
    shipped.mkdir(parents=True)
    (shipped / "model.keras").write_bytes(b"shipped")
    runs.write_json_atomic(shipped / "metrics.json", {
        "val": {"accuracy": 0.663, "macro_f1": 0.634, "ece": 0.041, "n_images": 3589},
        "calibration": {"data": "/data/fer2013", "fitted_on": "val", "ece_after": 0.041}})
    return ModelRegistry(tmp_path / "appdata", tmp_path / "models")


def test_figures_on_the_same_split_are_compared_and_the_worse_measures_named(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    comparison = promotion.compare_with_active(finished_run(tmp_path / "runs", "/data/fer2013"), registry)
    assert comparison.candidate == promotion.ValFigures(0.6, 0.55, 0.04, "/data/fer2013", "val", 21)
    assert comparison.active is None  # 3,589 faces against 21: not the same split
    assert comparison.worse == []

    (tmp_path / "runs" / "cand").rename(tmp_path / "old")
    candidate = finished_run(tmp_path / "runs", "/data/fer2013")
    runs.write_json_atomic(candidate.path / runs.EVALUATION_FILE,
                           {**runs.read_json(candidate.path / runs.EVALUATION_FILE), "n_images": 3589})
    comparison = promotion.compare_with_active(candidate, registry)
    assert comparison.active == promotion.ValFigures(0.663, 0.634, 0.041, "/data/fer2013", "val", 3589)
    assert comparison.worse == ["accuracy", "macro-F1"]  # its calibration (0.040 < 0.041) is better


def test_the_active_model_is_measured_on_the_runs_split_once_and_the_figures_kept(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    python = tmp_path / "fake-python"
    python.write_text(FAKE_EVALUATE)
    python.chmod(0o755)
    run = finished_run(tmp_path / "runs", str(tmp_path / "tiny-data"))
    figures = promotion.measure_active(run, registry, python=str(python))
    assert figures == promotion.ValFigures(0.7, 0.65, 0.03, str(tmp_path / "tiny-data"), "val", 21)
    comparison = promotion.compare_with_active(run, registry)  # read back from the run folder
    assert comparison.active == figures and comparison.worse == ["accuracy", "macro-F1", "calibration"]
    kept = list((run.path / promotion.COMPARISONS_DIR).glob("*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["accuracy"] == 0.7

    # Another active model (other files): the kept figures are not its.
    (registry.shipped.path / "model.keras").write_bytes(b"replaced")
    assert promotion.compare_with_active(run, registry).active is None


def test_a_failed_measurement_says_why(registry: ModelRegistry, tmp_path: Path) -> None:
    python = tmp_path / "broken-python"
    python.write_text("#!/bin/sh\necho 'error: model file not found: x' >&2\nexit 2\n")
    python.chmod(0o755)
    with pytest.raises(ValueError, match="could not evaluate fer-inceptionv3: error: model file not found"):
        promotion.measure_active(finished_run(tmp_path / "runs", "/d"), registry, python=str(python))
