"""Faults with real processes: SIGKILL mid-session leaves an intact database missing at most ~2 s."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fer_core.store import Store

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
