"""The online class on real pixels: students' real faces through the real per-student path, the shared batching
classifier and the database, in one server process and in two (slow: TensorFlow Lite, subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_core.batching import BatchingClassifier
from fer_core.class_bench import make_hub, run_students, student_faces
from fer_core.class_store import ClassStore
from fer_core.class_view import read_class_view
from fer_core.settings import Settings
from fer_core.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VIEW = {"window_s": 120, "negative_share": 0.5, "attention_seconds": 10, "member_timeout_s": 5.0}


@pytest.fixture
def classes(tmp_path: Path) -> ClassStore:
    return ClassStore(Store(f"sqlite:///{tmp_path / 'class.db'}"))


def test_three_students_real_faces_become_one_class_level_view_and_session(
    classes: ClassStore, real_classifier, group_photos: Path
) -> None:
    settings = Settings()
    info = classes.open_class("Real faces", "", min_students=3, max_students=10, code_ttl_s=600)
    batching = BatchingClassifier(real_classifier, window_ms=20)
    hub = make_hub(classes, info, batching, settings, analysis_fps=2.0)
    logs, _, _ = run_students(hub, student_faces(3, group_photos), seconds=6.0, camera_fps=5.0)
    hub.flush(time.time() + 10, final=True)
    view = read_class_view(classes, info.id, **VIEW)
    assert all(len(log.analysed_at) >= 10 for log in logs)  # about 2 analysed frames/s each
    assert view.buckets["students"].max() == 3
    assert view.buckets["faces"].max() >= 3  # each student's real face was found
    shown = view.buckets.dropna(subset=["p_happy"])
    assert len(shown) >= 2  # seconds where all three contributed clear the floor of 3
    stats = batching.stats()
    assert stats.requests >= 30 and stats.faces >= stats.requests
    classes.end_class(info.id)
    assert classes.save_class(info.id, negative_share=0.5, attention_seconds=10)
    stored = classes.store.session_buckets(info.session_id)
    assert stored["students"].max() == 3 and stored["faces"].max() >= 3
    batching.close()


def test_students_on_two_server_processes_meet_in_one_class(
    classes: ClassStore, real_model_dir: Path, group_photos: Path
) -> None:
    info = classes.open_class("Two servers", "", min_students=2, max_students=10, code_ttl_s=600)
    url = str(classes.store.url)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "fer_core.class_bench", "--join", info.code, "--database", url,
             "--students", "2", "--seconds", "12"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    seen_together = 0
    deadline = time.monotonic() + 90
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        view = read_class_view(classes, info.id, **VIEW)
        seen_together = max(seen_together, view.students_now)
        time.sleep(0.5)
    outputs = [w.communicate(timeout=60) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1])["seconds_written"] > 0
    assert seen_together == 4  # both processes' students counted in one class at once
    seconds = classes.class_seconds(info.id)
    assert max(s.students for s in seconds) == 4
    with classes.store.engine.connect() as conn:
        instances = conn.exec_driver_sql("SELECT count(DISTINCT instance) FROM class_partials").scalar_one()
    assert instances == 2
    classes.end_class(info.id)
    assert classes.save_class(info.id, negative_share=0.5, attention_seconds=10)
    assert classes.store.session_buckets(info.session_id)["students"].max() == 4


def test_a_server_process_killed_mid_class_loses_only_its_own_students(
    classes: ClassStore, real_model_dir: Path, group_photos: Path
) -> None:
    info = classes.open_class("One server dies", "", min_students=2, max_students=10, code_ttl_s=600)
    url = str(classes.store.url)

    def worker(seconds: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "fer_core.class_bench", "--join", info.code, "--database", url,
             "--students", "2", "--seconds", str(seconds)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    survivor, doomed = worker(30), worker(60)
    deadline = time.monotonic() + 90
    while read_class_view(classes, info.id, **VIEW).students_now < 4:
        assert time.monotonic() < deadline, "the four students never met in one class"
        time.sleep(0.5)
    time.sleep(3)
    doomed.kill()  # SIGKILL: no goodbye, no last flush
    doomed.wait(10)
    killed_at = time.time()
    stored_before = [s for s in classes.class_seconds(info.id) if s.t < killed_at - 3]
    while read_class_view(classes, info.id, **VIEW).students_now != 2:
        assert time.monotonic() < deadline, "the killed server's students were still counted"
        time.sleep(0.5)
    dropped_after = time.time() - killed_at
    _out, err = survivor.communicate(timeout=90)
    assert survivor.returncode == 0, err[-2000:]
    after = {s.t: s for s in classes.class_seconds(info.id)}
    assert all(after[s.t].students >= s.students for s in stored_before)  # what was stored survives
    assert max(s.t for s in after.values()) > killed_at + 5  # and the class went on with the others
    assert dropped_after < 10
    classes.end_class(info.id)
    assert classes.save_class(info.id, negative_share=0.5, attention_seconds=10)
    assert classes.store.get_session(info.session_id)["status"] == "completed"
