"""The model registry: which emotion model is active, every model that has been, and how one becomes active.

- The shipped model: `<models_dir>/fer-inceptionv3` (in git; `training.publish` writes it).
- Promoted models: copies under `<data_dir>/models/<name>/`, each with a `promoted.json` record.
  They are never deleted, so the shipped model or any earlier one can be made active again.
- The active model: `model_path` when it is set (CLASSMOOD_MODEL_PATH), else the promoted model
  `<data_dir>/active_model.txt` names, else the shipped model.

Promoting copies the files into a staging folder, renames it into place, then replaces the pointer
file (`os.replace`): a reader sees the old model or the new one, never a half-copied folder or a
half-written pointer. Only entry points (pages, CLIs) build a registry from the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fer_core.calibration import CALIBRATION_FILE
from fer_core.classify import EmotionClassifier, load_classifier
from fer_core.model_io import KERAS_FILE, TFLITE_FILE
from fer_core.settings import Settings

SHIPPED_MODEL_NAME = "fer-inceptionv3"
POINTER_FILE = "active_model.txt"
PROMOTED_FILE = "promoted.json"
# The files that make a model's behaviour: its fingerprint covers them.
MODEL_FILES = (KERAS_FILE, TFLITE_FILE, CALIBRATION_FILE)

ModelKind = Literal["shipped", "promoted", "configured"]


@dataclass(frozen=True)
class ModelEntry:
    """One model the app can use."""

    path: Path
    name: str
    kind: ModelKind
    promoted_at: float | None = None
    record: dict[str, Any] = field(default_factory=dict, compare=False)  # promoted.json

    @property
    def available(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over a model folder's model and calibration files: equal fingerprints, equal behaviour."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry:
    def __init__(self, data_dir: Path, models_dir: Path, model_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.models_dir = Path(models_dir)
        self.model_path = Path(model_path) if model_path is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(settings.data_dir, settings.models_dir, settings.model_path)

    @property
    def shipped(self) -> ModelEntry:
        return ModelEntry(self.models_dir / SHIPPED_MODEL_NAME, SHIPPED_MODEL_NAME, "shipped")

    @property
    def promoted_root(self) -> Path:
        return self.data_dir / "models"

    @property
    def pointer(self) -> Path:
        return self.data_dir / POINTER_FILE

    def is_shipped(self, path: Path) -> bool:
        return Path(path).expanduser().resolve() == self.shipped.path.resolve()

    # --- which model -----------------------------------------------------------------------------

    def active(self) -> ModelEntry:
        """The explicitly configured model, else the promoted one the pointer names, else the shipped one."""
        if self.model_path is not None:
            return ModelEntry(self.model_path, self.model_path.name, "configured")
        promoted = self._pointed_at()
        if promoted is not None:
            return self._entry(promoted)
        return self.shipped

    def promoted_active(self) -> ModelEntry:
        """What promotion has made active (the pointer, else the shipped model), whatever model_path says."""
        promoted = self._pointed_at()
        return self._entry(promoted) if promoted is not None else self.shipped

    def models(self) -> list[ModelEntry]:
        """Every model that can be made active: promoted copies, newest first, then the shipped model."""
        entries = []
        if self.promoted_root.is_dir():
            entries = [self._entry(p) for p in self.promoted_root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / PROMOTED_FILE).is_file()]
        entries.sort(key=lambda e: e.promoted_at or 0.0, reverse=True)
        return [*entries, self.shipped]

    def _pointed_at(self) -> Path | None:
        try:
            text = self.pointer.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        path = Path(text)
        return path if text and path.is_dir() else None  # a removed folder: back to the shipped model

    def _entry(self, path: Path) -> ModelEntry:
        if self.is_shipped(path):
            return self.shipped
        record = _read_record(path / PROMOTED_FILE)
        return ModelEntry(path, path.name, "promoted", record.get("promoted_at"), record)

    # --- changing it --------------------------------------------------------------------------------

    def activate(self, entry: ModelEntry) -> None:
        """Make `entry` the active model (one atomic file replacement; the shipped model: no pointer)."""
        if entry.kind == "configured":
            raise ValueError("a model set by CLASSMOOD_MODEL_PATH is not activated here; change the setting")
        if not entry.available:
            raise ValueError(f"model folder {entry.path} is missing or empty")
        if entry.kind == "shipped":
            self.pointer.unlink(missing_ok=True)
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.pointer.with_name(f".{self.pointer.name}.{os.getpid()}.tmp")
        tmp.write_text(str(entry.path.resolve()) + "\n", encoding="utf-8")
        os.replace(tmp, self.pointer)

    def promote(self, files: Sequence[Path], name: str, record: dict[str, Any] | None = None,
                renamed: dict[str, str] | None = None) -> ModelEntry:
        """Copy `files` into a new model folder named after `name`, then make it the active model.

        A folder of that name with the same model files is reused; one with other files is kept and the
        copy gets the next free name (`name.2`, ...), so no model that was ever active is lost.
        `renamed` maps a source file name to the name it gets in the model folder.
        """
        renamed = renamed or {}
        self.promoted_root.mkdir(parents=True, exist_ok=True)
        staging = self.promoted_root / f".{name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for src in files:
                shutil.copy2(src, staging / renamed.get(src.name, src.name))
            fingerprint = model_fingerprint(staging)
            dest = self._free_folder(name, fingerprint)
            full_record = {**(record or {}), "name": dest.name, "promoted_at": time.time(), "fingerprint": fingerprint}
            (staging / PROMOTED_FILE).write_text(json.dumps(full_record, indent=2, default=str), encoding="utf-8")
            if dest.exists():  # the same model promoted again: swap the copy whole
                old = self.promoted_root / f".{dest.name}.old-{os.getpid()}"
                os.replace(dest, old)
                os.replace(staging, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        entry = self._entry(dest)
        self.activate(entry)
        return entry

    def _free_folder(self, name: str, fingerprint: str) -> Path:
        for n in range(1, 1000):
            candidate = self.promoted_root / (name if n == 1 else f"{name}.{n}")
            if not candidate.exists() or model_fingerprint(candidate) == fingerprint:
                return candidate
        raise ValueError(f"too many promoted copies named {name!r}")


def _read_record(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def classifier_for(settings: Settings) -> EmotionClassifier:
    """The classifier the settings ask for: the active model with the configured backend and flip choice."""
    model = ModelRegistry.from_settings(settings).active().path
    return load_classifier(model, settings.classifier_backend, settings.classifier_flip_average)
