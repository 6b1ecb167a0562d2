"""fer_core.registry: which model is active, promotion by atomic swap, every earlier model kept and restorable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_core.registry import POINTER_FILE, PROMOTED_FILE, ModelRegistry, model_fingerprint
from fer_core.settings import Settings


def model_files(folder: Path, content: bytes) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.keras").write_bytes(b"keras " + content)
    (folder / "model_int8.tflite").write_bytes(b"tflite " + content)
    return [folder / "model.keras", folder / "model_int8.tflite"]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    model_files(tmp_path / "models" / "fer-inceptionv3", b"shipped")
    return ModelRegistry(tmp_path / "data", tmp_path / "models")


def test_the_shipped_model_is_active_until_something_is_promoted(registry: ModelRegistry, tmp_path: Path) -> None:
    assert registry.active() == registry.shipped
    assert registry.active().kind == "shipped" and registry.active().available
    assert registry.is_shipped(tmp_path / "models" / "fer-inceptionv3" / ".." / "fer-inceptionv3")
    assert registry.models() == [registry.shipped]


def test_settings_build_the_registry_and_an_explicit_model_path_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    registry = ModelRegistry.from_settings(settings)
    assert registry.active().path == tmp_path / "models" / "fer-inceptionv3"
    explicit = ModelRegistry.from_settings(settings.model_copy(update={"model_path": tmp_path / "mine"}))
    assert explicit.active().path == tmp_path / "mine" and explicit.active().kind == "configured"


def test_promote_copies_swaps_in_and_points_at_the_new_model(registry: ModelRegistry, tmp_path: Path) -> None:
    entry = registry.promote(model_files(tmp_path / "export", b"run-a"), "run-a", {"run": "run-a"})
    assert entry.path == registry.promoted_root / "run-a" and entry.kind == "promoted"
    assert (entry.path / "model.keras").read_bytes() == b"keras run-a"
    record = json.loads((entry.path / PROMOTED_FILE).read_text())
    assert record["run"] == "run-a" and record["fingerprint"] == model_fingerprint(entry.path)
    assert registry.active().path == entry.path
    assert (registry.data_dir / POINTER_FILE).read_text().strip() == str(entry.path.resolve())
    assert not [p for p in registry.promoted_root.iterdir() if p.name.startswith(".")]  # no staging left


def test_every_earlier_model_is_kept_and_one_call_restores_it(registry: ModelRegistry, tmp_path: Path) -> None:
    first = registry.promote(model_files(tmp_path / "a", b"first"), "run-a")
    second = registry.promote(model_files(tmp_path / "b", b"second"), "run-b")
    # The same run promoted again with other files (re-exported): a new folder, the first copy is kept.
    third = registry.promote(model_files(tmp_path / "a2", b"re-exported"), "run-a")
    assert third.path.name == "run-a.2" and (first.path / "model.keras").read_bytes() == b"keras first"
    assert [m.name for m in registry.models()] == ["run-a.2", "run-b", "run-a", "fer-inceptionv3"]
    assert registry.active().path == third.path

    registry.activate(next(m for m in registry.models() if m.name == "run-a"))
    assert registry.active().path == first.path
    registry.activate(registry.shipped)
    assert registry.active() == registry.shipped and not (registry.data_dir / POINTER_FILE).exists()
    registry.activate(second)
    assert registry.active().path == second.path

    # The same files promoted again reuse their folder.
    again = registry.promote(model_files(tmp_path / "b2", b"second"), "run-b")
    assert again.path == second.path and len(registry.models()) == 4


def test_a_pointer_to_a_removed_folder_falls_back_to_the_shipped_model(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.data_dir.mkdir(parents=True)
    (registry.data_dir / POINTER_FILE).write_text(str(tmp_path / "gone"))
    assert registry.active() == registry.shipped
    # A pointer written by an older ClassMood (a path to any model folder) still counts.
    legacy = tmp_path / "data" / "models" / "old-run"
    model_files(legacy, b"old")
    (registry.data_dir / POINTER_FILE).write_text(str(legacy) + "\n")
    assert registry.active().path == legacy


def test_a_missing_model_or_a_configured_one_cannot_be_activated(registry: ModelRegistry, tmp_path: Path) -> None:
    configured = ModelRegistry(registry.data_dir, registry.models_dir, tmp_path / "mine").active()
    with pytest.raises(ValueError, match="CLASSMOOD_MODEL_PATH"):
        registry.activate(configured)
    empty = ModelRegistry(tmp_path / "d", tmp_path / "nothing-shipped")
    with pytest.raises(ValueError, match="missing or empty"):
        empty.activate(empty.shipped)
