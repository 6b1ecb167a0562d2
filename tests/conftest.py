"""Shared pytest fixtures. Sections are owned by different areas; append new ones at the end."""

from __future__ import annotations

import shutil as _shutil
from collections.abc import Callable as _Callable
from pathlib import Path as _Path

import numpy as _np
import pytest as _pytest

# --- training pipeline fixtures (tiny generated FER2013-style data sets) -----------------------


def fake_face(label: int, index: int, size: int = 48) -> _np.ndarray:
    """A deterministic 48x48 uint8 'face': a class-specific stripe pattern plus per-image noise."""
    rng = _np.random.default_rng(1000 * label + index)
    yy, xx = _np.mgrid[0:size, 0:size].astype(_np.float32)
    angle = label * _np.pi / 7.0
    stripes = _np.sin((xx * _np.cos(angle) + yy * _np.sin(angle)) * (0.15 + 0.05 * label))
    image = 128 + 90 * stripes + rng.normal(0, 12, (size, size))
    return _np.clip(image, 0, 255).astype(_np.uint8)


def write_folder_dataset(
    root: _Path, per_split: dict[str, int], classes: tuple[str, ...] | None = None, suffix: str = ".png"
) -> _Path:
    """<root>/<split>/<class>/<i>.png with `per_split[split]` images per class."""
    import cv2

    from fer_core.emotions import EMOTION_INDEX, EMOTIONS

    for split, n in per_split.items():
        for name in classes or EMOTIONS:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ok = cv2.imwrite(str(folder / f"{i:05d}{suffix}"), fake_face(EMOTION_INDEX[name], i))
                assert ok
    return root


def write_csv_dataset(path: _Path, per_split: dict[str, int], classes: tuple[str, ...] | None = None) -> _Path:
    """fer2013.csv (emotion,pixels,Usage) with the CSV's own label order; the same faces as the folders."""
    from fer_core.emotions import EMOTION_INDEX, EMOTIONS, FER2013_CSV_ORDER

    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    lines = ["emotion,pixels,Usage"]
    for split, n in per_split.items():
        for name in classes or EMOTIONS:
            for i in range(n):
                pixels = " ".join(str(v) for v in fake_face(EMOTION_INDEX[name], i).ravel())
                lines.append(f"{FER2013_CSV_ORDER.index(name)},{pixels},{usage[split]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@_pytest.fixture
def folder_dataset(tmp_path: _Path) -> _Callable[..., _Path]:
    """Factory: folder_dataset({"train": 4, "val": 2}, classes=None, name="fer") -> data-set root."""

    def make(per_split: dict[str, int] | None = None, classes: tuple[str, ...] | None = None, name: str = "fer"):
        return write_folder_dataset(tmp_path / name, per_split or {"train": 4, "val": 2}, classes)

    return make


@_pytest.fixture
def csv_dataset(tmp_path: _Path) -> _Callable[..., _Path]:
    """Factory: csv_dataset({"train": 4, "val": 2}, classes=None) -> path of fer2013.csv."""

    def make(per_split: dict[str, int] | None = None, classes: tuple[str, ...] | None = None, name: str = "csv"):
        return write_csv_dataset(tmp_path / name / "fer2013.csv", per_split or {"train": 4, "val": 2}, classes)

    return make


@_pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: _pytest.TempPathFactory) -> dict[str, _Path]:
    """One tiny data set per format for the slow training tests: 6 train / 3 val images per class."""
    root = tmp_path_factory.mktemp("tiny-data")
    per_split = {"train": 6, "val": 3}
    folder = write_folder_dataset(root / "folder", per_split)
    csv = write_csv_dataset(root / "csv" / "fer2013.csv", per_split)
    subset = root / "subset"
    _shutil.copytree(folder / "val", subset / "val", ignore=_shutil.ignore_patterns("disgust", "fear", "surprise"))
    return {"folder": folder, "csv": csv, "subset": subset}


# --- engine fixtures (fer_core detect/pipeline/session/analyze) --------------------------------

GROUP_PHOTOS = _Path(__file__).resolve().parents[2] / "shared" / "datasets" / "group-photos"


@_pytest.fixture(scope="session")
def group_photos() -> _Path:
    """The real group photos (read in place, never copied); skips when the shared data set is absent."""
    if not (GROUP_PHOTOS / "training.xml").is_file():
        _pytest.skip(f"group photos not found at {GROUP_PHOTOS} (shared data set not mounted)")
    return GROUP_PHOTOS


# --- the real model (shipped in models/, or CLASSMOOD_MODEL_PATH) ------------------------------


@_pytest.fixture(scope="session")
def real_model_dir() -> _Path:
    """The active model directory; in CI a missing model fails, locally it skips."""
    import os

    from fer_core.registry import ModelRegistry
    from fer_core.settings import Settings

    model_dir = ModelRegistry.from_settings(Settings()).active().path
    if not (model_dir / "model.keras").is_file():
        message = f"no trained model at {model_dir} (set CLASSMOOD_MODEL_PATH or ship models/fer-inceptionv3)"
        if os.environ.get("CI"):
            _pytest.fail(message)
        _pytest.skip(message)
    return model_dir


@_pytest.fixture(scope="session")
def real_classifier(real_model_dir: _Path):
    from fer_core.classify import load_classifier

    return load_classifier(real_model_dir, "auto")


# --- databases: SQLite files and a throw-away PostgreSQL cluster (tests/postgres.py) -----------

BACKENDS = ("sqlite", "postgresql")


@_pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL cluster for the whole test session; in CI a missing server fails, locally it skips."""
    import os

    from tests.postgres import PostgresServer, missing_reason

    reason = missing_reason()
    if reason:
        if os.environ.get("CI"):
            _pytest.fail(reason)
        _pytest.skip(reason)
    server = PostgresServer()
    try:
        server.init()
    except Exception as exc:
        server.destroy()
        log = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
        _pytest.fail(f"the test PostgreSQL cluster did not start: {exc}\n{log}")
    yield server
    server.destroy()


@_pytest.fixture
def database_url(request: _pytest.FixtureRequest, tmp_path: _Path) -> _Callable[[str], str]:
    """Factory: database_url(backend) -> the URL of a new empty database on that backend."""

    def make(backend: str) -> str:
        if backend == "sqlite":
            (tmp_path / "db").mkdir(exist_ok=True)
            return f"sqlite:///{tmp_path / 'db' / 'classmood.db'}"
        if backend == "postgresql":
            return request.getfixturevalue("postgres_server").new_database()
        raise ValueError(f"unknown backend {backend!r}")

    return make


@_pytest.fixture(params=BACKENDS)
def backend(request: _pytest.FixtureRequest) -> str:
    """Parametrises a test over every supported database backend."""
    return request.param
