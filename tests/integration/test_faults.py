"""Faults with real processes: SIGKILL mid-session leaves an intact database missing at most ~2 s;
a PostgreSQL restart mid-session loses nothing; a session stopped while it is down is interrupted."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fer_core.detect import FaceBox
from fer_core.session import LiveSession
from fer_core.settings import Settings
from fer_core.store import Store
from tests.doubles import FakeClassifier, StubDetector

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# A live session fed real-time frames of real faces; it prints the wall second of every frame.
LIVE_PROCESS = textwrap.dedent(
    """
    import sys, time, cv2
    from fer_core.session import LiveSession
    from fer_core.settings import Settings
    from fer_core.store import Store
    from tests.doubles import FakeClassifier

    db, photo = sys.argv[1], sys.argv[2]
    settings = Settings(database_url=f"sqlite:///{db}")
    frame = cv2.resize(cv2.imread(photo), (640, 480))
    session = LiveSession(Store(settings.db_url), FakeClassifier("happy"), name="killed", settings=settings)
    print("session", session.session_id, flush=True)
    while True:
        now = time.time()
        session.process_frame(frame, now)
        print("frame", int(now), flush=True)
        time.sleep(0.1)
    """
)


def test_sigkill_mid_session_keeps_the_database_intact(group_photos: Path, tmp_path: Path) -> None:
    db = tmp_path / "classmood.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_PROCESS, str(db), str(group_photos / "2008_002506.jpg")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    seconds: set[int] = set()
    last_second = 0
    deadline = time.monotonic() + 120
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, value = line.split()
            if kind == "frame":
                last_second = int(value)
                seconds.add(last_second)
            if len(seconds) >= 7 or time.monotonic() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(seconds) >= 7, "the live process did not get going"

    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    store = Store(f"sqlite:///{db}")
    sessions = store.list_sessions()
    assert len(sessions) == 1
    buckets = store.session_buckets(int(sessions.iloc[0]["id"]))
    # Second `last_second` was still open; everything up to ~2 s before it must be stored.
    assert buckets["t"].max() >= last_second - 3
    assert buckets["faces"].min() >= 1

    # The dead process never closed its session: it shows as interrupted, ending at its last stored second.
    session_id = int(sessions.iloc[0]["id"])
    assert store.get_session(session_id)["status"] == "running"
    assert store.close_stale_sessions(idle_s=0) == 1
    row = store.get_session(session_id)
    assert row["status"] == "interrupted"
    assert row["ended_at"].timestamp() == buckets["t"].max() + 1
    assert store.close_stale_sessions(idle_s=0) == 0  # idempotent


# --- PostgreSQL going away under a live session ----------------------------------------------------


class Feeder:
    """Feeds a live session one frame every 0.1 s from its own thread, as the video thread does."""

    def __init__(self, session: LiveSession) -> None:
        self.session = session
        self.seconds: set[int] = set()  # wall seconds that had a frame analysed
        self.errors: set[str] = set()  # store errors the session reported meanwhile
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        frame = np.zeros((480, 640, 3), np.uint8)
        while not self._stop.is_set():
            now = time.time()
            self.session.process_frame(frame, now)
            self.seconds.add(int(now))
            if error := self.session.snapshot().writer_error:
                self.errors.add(error)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def live_session(url: str) -> LiveSession:
    session = LiveSession(Store(url), FakeClassifier("happy"), name="restart", settings=Settings(database_url=url))
    session.pipeline.detector = StubDetector([FaceBox(40, 40, 120, 120)])
    return session


def test_postgres_restart_mid_session_loses_nothing(postgres_server) -> None:
    """The writer keeps the seconds it could not write and writes them when the server is back."""
    session = live_session(postgres_server.new_database())
    feeder = Feeder(session)
    time.sleep(3)
    down_s = postgres_server.restart(down_s=3.0)
    time.sleep(4)
    feeder.stop()
    session.stop()
    assert session.last_error is None
    assert any("cannot be opened or reached" in e or "connection" in e for e in feeder.errors), feeder.errors

    stored = set(session.store.session_buckets(session.session_id)["t"])
    lost = feeder.seconds - stored
    print(f"\nPostgreSQL down {down_s:.1f} s mid-session: {len(feeder.seconds)} s analysed, {len(lost)} s lost")
    assert lost == set() and stored == feeder.seconds
    assert session.store.get_session(session.session_id)["status"] == "completed"
    session.store.dispose()


def test_session_stopped_while_postgres_is_down_is_marked_interrupted(postgres_server) -> None:
    """Stopped during the outage: the unwritten seconds are lost, the rest is kept and the session is interrupted."""
    session = live_session(postgres_server.new_database())
    feeder = Feeder(session)
    time.sleep(4)
    postgres_server.stop()
    went_down = time.time()
    try:
        time.sleep(2)
        feeder.stop()
        session.stop()  # cannot write its last seconds nor close the session: says so, does not raise
        assert "cannot be opened or reached" in (session.last_error or "")
    finally:
        postgres_server.start()

    store = session.store
    assert store.get_session(session.session_id)["status"] == "running"
    assert store.close_stale_sessions(idle_s=0) == 1  # as the History page does after 5 minutes
    row = store.get_session(session.session_id)
    stored = set(store.session_buckets(session.session_id)["t"])
    lost = feeder.seconds - stored
    print(f"\nsession stopped {time.time() - went_down:.1f} s into an outage: {len(stored)} s kept, "
          f"{len(lost)} s lost ({len([s for s in lost if s < went_down])} from before the outage)")
    assert row["status"] == "interrupted" and row["ended_at"].timestamp() == max(stored) + 1
    assert all(kept < gone for kept in stored for gone in lost)  # what is kept is everything before a point
    # Lost: the seconds of the outage, plus the open second and at most one flush interval before it.
    assert max(stored) >= int(went_down) - 3
    store.dispose()
