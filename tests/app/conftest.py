"""Fixtures for the AppTest page tests: an isolated data dir and database, fake and real runs.

Every test gets its own CLASSMOOD_DATA_DIR and database (a SQLite file; PostgreSQL where a module
overrides `app_backend`), so nothing touches data/ (where real training runs live) and pages never
see the developer's passwords.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

import training.runs as runs
from fer_core.emotions import EMOTIONS
from fer_core.settings import Settings, get_settings
from training import launch

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "pages"
APP_TIMEOUT = 60  # seconds per script run; the first run imports pandas, altair and pyarrow


def page_test(name: str) -> AppTest:
    """AppTest of one page file (pages/<name>.py), without the dashboard's navigation."""
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=APP_TIMEOUT)


def texts(elements: Any) -> str:
    """All values of a list of elements as one string, markdown escapes removed."""
    return " ".join(str(e.value) for e in elements).replace("\\", "")


def chart_specs(at: AppTest) -> list[str]:
    """The Vega-Lite JSON of every Altair chart on the page."""
    return [chart.proto.spec for chart in at.get("vega_lite_chart")]


@pytest.fixture
def app_backend() -> str:
    """The database the page tests run on; a test module that covers both overrides it with params."""
    return "sqlite"


@pytest.fixture
def app_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_backend: str, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Fresh settings over a temporary data dir and database (SQLite file, or a new PostgreSQL database)."""
    for var in list(os.environ):
        if var.startswith("CLASSMOOD_") or var == "DATABASE_URL":
            monkeypatch.delenv(var)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("CLASSMOOD_DATA_DIR", str(data_dir))
    if app_backend == "postgresql":
        database_url = request.getfixturevalue("postgres_server").new_database()
    else:
        database_url = f"sqlite:///{data_dir / 'classmood.db'}"
    monkeypatch.setenv("CLASSMOOD_DATABASE_URL", database_url)
    monkeypatch.setenv("CLASSMOOD_MODELS_DIR", str(tmp_path / "models"))  # no shipped model in tests
    get_settings.cache_clear()
    settings = get_settings()
    yield settings
    get_settings.cache_clear()
    # A failed slow test must not leave its detached training process running.
    for run in runs.list_runs(settings.runs_dir):
        if run.is_active:
            launch.stop_run(run)


@pytest.fixture
def server_address() -> Iterator[Callable[[str], None]]:
    """Set Streamlit's server.address for the test (the Training page's exposure rule reads it)."""
    previous = st_config.get_option("server.address")

    def set_address(address: str) -> None:
        st_config.set_option("server.address", address)

    set_address("127.0.0.1")
    yield set_address
    st_config.set_option("server.address", previous)


# --- training runs -------------------------------------------------------------------------------

FAKE_DATA = "/datasets/fake"


def progress_records(epochs: int, steps: int = 10, upto_epoch: int | None = None) -> list[dict[str, Any]]:
    """progress.jsonl lines as training.callbacks.ProgressWriter writes them."""
    records: list[dict[str, Any]] = []
    now = time.time()
    for epoch in range(1, (upto_epoch or epochs) + 1):
        loss = 2.0 / epoch
        for step in (steps // 2, steps):
            records.append({"kind": "batch", "epoch": epoch, "epochs": epochs, "step": step, "steps": steps,
                            "loss": loss, "accuracy": 0.2 * epoch, "lr": 1e-3, "elapsed_s": 1.0,
                            "eta_s": 30.0, "time": now})
        records.append({"kind": "epoch", "epoch": epoch, "epochs": epochs, "step": steps, "steps": steps,
                        "loss": loss, "accuracy": 0.2 * epoch, "val_loss": loss * 1.1,
                        "val_accuracy": 0.18 * epoch, "lr": 1e-3, "elapsed_s": 2.0, "eta_s": 10.0, "time": now})
    return records


def make_fake_run(
    runs_dir: Path,
    name: str,
    status: str,
    *,
    epochs: int = 2,
    evaluated: bool = False,
    exported: bool = False,
    created_at: float | None = None,
    log: str | None = None,
    **state: Any,
) -> Path:
    """A run directory in the layout training.runs documents, without training anything.

    `state`: more status.json fields (phase, pid, message, ...); `log`: the train.log text.
    """
    from fer_core.model_io import KERAS_FILE, TFLITE_FILE
    from training.metrics import score

    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    runs.write_json_atomic(run_dir / runs.CONFIG_FILE, {"data": FAKE_DATA, "epochs": epochs,
                                                        "batch_size": 8, "lr": 1e-3, "image_size": 75})
    upto = epochs if status == "finished" else 1
    lines = progress_records(epochs, upto_epoch=upto)
    (run_dir / runs.PROGRESS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    default_log = f"log line for {name}\nlast line of {name}\n"
    (run_dir / runs.LOG_FILE).write_text(default_log if log is None else log, encoding="utf-8")
    runs.update_status(run_dir, status, **{"created_at": created_at or time.time(), "started_at": time.time(),
                                           "epoch": upto, "val_accuracy": 0.36, "message": "", **state})
    if evaluated:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(6), 5)  # "surprise" absent: the page must show it as not scored
        probs = rng.dirichlet(np.ones(len(EMOTIONS)), len(labels))
        probs[np.arange(len(labels)), labels] += 0.5  # mostly right
        probs /= probs.sum(axis=1, keepdims=True)
        # As training.evaluate writes it: the scores and where they were measured.
        report = {**score(probs, labels), "data": FAKE_DATA, "split": "val"}
        runs.write_json_atomic(run_dir / runs.EVALUATION_FILE, report)
    if exported:
        export = run_dir / runs.EXPORT_DIR
        export.mkdir()
        (export / KERAS_FILE).write_bytes(f"not a real model: {name}".encode())
        (export / TFLITE_FILE).write_bytes(f"not a real model: {name}".encode())
        runs.write_json_atomic(export / "calibration.json", {"temperature": 0.8, "ece_after": 0.05})
    return run_dir


@pytest.fixture
def training_pid() -> Iterator[int]:
    """A live process that reads as a training run (its command line says training.train), ended afterwards."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "training.train"])
    deadline = time.monotonic() + 10
    while not runs.is_training_process(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def zip_folder(folder: Path, zip_path: Path, top: str | None = "fer-mini") -> bytes:
    """Zip `folder` (optionally under one top folder, as Kaggle downloads are) and return the bytes."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                archive.write(path, f"{top}/{rel}" if top else rel)
    return zip_path.read_bytes()


# --- stored sessions -------------------------------------------------------------------------------


def seed_session(
    store: Any,
    name: str,
    *,
    class_label: str = "Class A",
    source: str = "live",
    seconds: int = 40,
    faces: int = 3,
    emotion: str = "happy",
    started_at: Any = None,
    ended_at: Any = None,
    attention_from: int | None = None,
) -> int:
    """Store a session through the real Store API: `seconds` buckets, `faces` tracks, optional attention.

    Every face shows `emotion` except, from `attention_from` on, all faces look sad.
    """
    from datetime import UTC, datetime, timedelta

    from fer_core.aggregate import AttentionEvent, Bucket, TrackSample
    from fer_core.emotions import EMOTION_INDEX

    started = started_at or datetime.now(UTC)
    session_id = store.create_session(name, class_label, source, started_at=started)
    t0 = int(started.timestamp())
    buckets, samples = [], []
    for k in range(seconds):
        label = "sad" if attention_from is not None and k >= attention_from else emotion
        probs = np.full(len(EMOTIONS), 0.05)
        probs[EMOTION_INDEX[label]] = 0.7
        shares = np.zeros(len(EMOTIONS))
        shares[EMOTION_INDEX[label]] = 1.0
        flagged = attention_from is not None and k >= attention_from + 10
        buckets.append(Bucket(t0 + k, faces, 5, 5 * faces, tuple(probs), tuple(shares), flagged))
        samples += [TrackSample(t0 + k, track, tuple(probs), label, 0.7) for track in range(1, faces + 1)]
    events = []
    if attention_from is not None:
        events.append(AttentionEvent(float(t0 + attention_from + 10), float(t0 + seconds),
                                     "more than half of the faces look sad for 10 s"))
    store.add_batch(session_id, buckets, samples, events)
    sad_seconds = 0 if attention_from is None else max(0, seconds - attention_from)
    dominant = "sad" if sad_seconds > seconds - sad_seconds else emotion
    store.close_session(session_id, faces_seen=faces, dominant_emotion=dominant, frames_analysed=5 * seconds,
                        ended_at=ended_at or started + timedelta(seconds=seconds))
    return session_id


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Bytes behind every st.download_button, by file name (AppTest keeps no media server)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    captured: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self: Any, path_or_data: Any, mimetype: str, kind: Any, filename: str | None = None) -> str:
        if filename is not None and isinstance(path_or_data, bytes):
            captured[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return captured
